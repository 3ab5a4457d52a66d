//! Property: whatever the interleaving of honest nodes' grants, issues and returns with
//! returns by callers that are not the holder (a guessed secret with the token `GET
//! /v1/hosts` shows, a stale lease, a replay) and by holders that misreport their own block,
//! no value is granted to two holders and none is issued twice; every foreign return and
//! every lie but "I issued less than I did not" is refused, and that one only wastes values.
//! Random sequences on the in-memory store here; the same body runs seeded sequences on
//! every backend (`store::conformance::run_all`).

use std::sync::Arc;

use proptest::prelude::*;
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::testing::adversary::{
    no_value_is_granted_twice, Foreign, Lie, Op, NODES,
};

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let foreign = prop_oneof![
        Just(Foreign::GuessedSecret),
        Just(Foreign::StaleLease),
        Just(Foreign::Replay)
    ];
    let lie = prop_oneof![
        Just(Lie::OlderBlockEnd),
        Just(Lie::BelowBlock),
        Just(Lie::PastBlock),
        (0u8..5).prop_map(Lie::Waste)
    ];
    prop_oneof![
        4 => node.clone().prop_map(Op::Grant),
        4 => (node.clone(), 0u8..14).prop_map(|(n, k)| Op::Issue(n, k)),
        1 => node.clone().prop_map(Op::Stop),
        1 => node.clone().prop_map(Op::GiveBack),
        1 => node.clone().prop_map(Op::Crash),
        2 => (node.clone(), foreign).prop_map(|(n, f)| Op::Foreign(n, f)),
        2 => (node, lie).prop_map(|(n, l)| Op::Lie(n, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_caller_makes_the_coordinator_grant_a_value_twice(ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(no_value_is_granted_twice(Arc::new(MemStore::new()), &ops));
    }
}
