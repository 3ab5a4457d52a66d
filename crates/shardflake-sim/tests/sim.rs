//! The simulation itself under test: a seed replays exactly, a run is checked, and the
//! checker finds what it is meant to find.

use shardflake::Layout;
use shardflake_proto::coord::{HostStatus, HostsResponse, LeaseState, Role};
use shardflake_sim::check::{Checker, IdDecoder, NsRule, StoreNow};
use shardflake_sim::{run_seed, Options};

fn short() -> Options {
    Options {
        duration_ms: 40_000,
        heal_ms: 15_000,
        ..Options::default()
    }
}

#[test]
fn a_seed_replays_exactly_and_passes_its_checks() {
    let o = short();
    // One seed twice here, in one process (`run_seed` starts tokio's task numbering at the
    // same place each time) and in the tests' debug build (overflow checks on); CI runs a
    // sample of seeds twice in release, each run in a process of its own
    // (`--check-determinism`).
    let seed = 1;
    let a = run_seed(seed, &o, true);
    let b = run_seed(seed, &o, false);
    assert_eq!(a.report.violations, Vec::<String>::new(), "seed {seed}");
    assert!(
        a.report.ids > 10_000,
        "seed {seed}: only {} ids",
        a.report.ids
    );
    assert!(
        a.report.ns_values > 1_000,
        "seed {seed}: only {} namespace values",
        a.report.ns_values
    );
    assert!(
        a.faults.values().sum::<u64>() >= 5,
        "seed {seed}: too few faults: {:?}",
        a.faults
    );
    assert!(
        a.report.tallies.keys().any(|k| k.starts_with("lie_")),
        "the lying client lied: {:?}",
        a.report.tallies
    );
    assert_eq!(
        (a.digest, a.report.ids, a.report.acks, &a.faults),
        (b.digest, b.report.ids, b.report.acks, &b.faults),
        "two runs of seed {seed} differ"
    );
    assert!(
        a.trace.iter().any(|l| l.contains("FAULT")),
        "the trace shows the faults"
    );
    let c = run_seed(2, &o, false);
    assert_ne!(a.digest, c.digest, "another seed, another run");
}

fn now(hosts: &HostsResponse) -> StoreNow<'_> {
    StoreNow {
        hosts,
        grants: None,
    }
}

fn store(host_id: u32, reserved_until_ms: u64) -> HostsResponse {
    HostsResponse {
        store_id: "s".into(),
        layout_spec: String::new(),
        pool_size: 4,
        hosts: vec![HostStatus {
            host_id,
            token: 1,
            holder: "n".into(),
            role: Role::Primary,
            state: LeaseState::Live,
            lease_age_ms: 0,
            ttl_ms: 1_000,
            reserved_until_ms,
            last_heartbeat_ms: 0,
            last_heartbeat_age_ms: 0,
            renewals: 0,
            temporal: None,
        }],
        standbys: vec![],
    }
}

#[test]
fn the_checker_finds_namespace_values_repeated_off_grid_or_out_of_order() {
    let layout = Layout::preset("twitter").unwrap();
    let d = IdDecoder::new(&layout, 4).unwrap();
    let rule = NsRule {
        start: 7,
        step: 3,
        offset: 1,
    };
    let mut ok = Checker::new(d.clone(), 0).namespace("users", rule);
    ok.ack_ns("n1", "users", vec![7, 10, 13]);
    ok.ack_ns_unordered("sdk", "users", vec![19, 22, 16]);
    assert_eq!(ok.finish(&[], 100, 200).violation_count, 0);

    let mut c = Checker::new(d, 0).namespace("users", rule);
    c.ack_ns("n1", "users", vec![7, 10]);
    c.ack_ns("n2", "users", vec![10, 13]); // 10 twice
    c.ack_ns("n1", "users", vec![16, 17]); // 17 is off the grid
    c.ack_ns("n1", "users", vec![4]); // below the start
    c.ack_ns("n1", "users", vec![25, 22]); // not increasing
    c.ack_ns("n1", "orders", vec![1]); // never created
    let all = c.finish(&[], 100, 200).violations.join("\n");
    for needle in [
        "1 duplicate values of namespace users (e.g. 10×2; 10 served by n1@0 and n2@0)",
        "value 17 of users is off its grid",
        "value 4 of users is off its grid",
        "a batch of users is not increasing",
        "never created: orders",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn the_checker_finds_duplicates_bound_violations_disorder_and_silence() {
    let layout = Layout::preset("twitter").unwrap();
    let d = IdDecoder::new(&layout, 4).unwrap();
    let bits = |h: u64| {
        let v = layout.node_values_of_host(h).unwrap();
        let p: Vec<(&str, u64)> = v.iter().map(|(k, x)| (k.as_str(), *x)).collect();
        layout.node_bits(&p).unwrap()
    };
    let at = |ms: u64, seq: u64, h: u64| layout.compose(layout.tick_of(ms).unwrap(), seq, bits(h));
    let t = 1_900_000_000_000;
    let (a, b) = (at(t, 0, 1), at(t, 1, 1));
    assert_eq!(d.decode(a), Some((1, t)));

    let mut ok = Checker::new(d.clone(), 0);
    ok.ack("n1", 1, vec![a, b], 10, Some("n"), now(&store(1, t)));
    assert_eq!(ok.finish(&["n1".into()], 100, 200).violation_count, 0);

    let mut c = Checker::new(d, 0);
    c.ack("n1", 1, vec![a, b], 10, Some("other"), now(&store(1, t))); // another holder
    c.ack("n2", 1, vec![b], 11, None, now(&store(1, t))); // a duplicate
    c.ack("n1", 1, vec![a], 12, None, now(&store(1, t))); // not increasing in the process
    c.ack("n1", 2, vec![at(t + 5, 0, 1)], 13, None, now(&store(1, t))); // above the durable bound
    c.ack(
        "n1",
        2,
        vec![at(t + 9, 0, 1), at(t + 9, 0, 2)],
        14,
        None,
        now(&store(1, t + 9)),
    ); // two hosts
    let r = c.finish(&["n1".into(), "n3".into()], 100, 200);
    let all = r.violations.join("\n");
    for needle in [
        "not increasing",
        "above the durable reservation",
        "mixes host ids",
        "never leased",
        "duplicate ids",
        "n3 served nothing",
        "did not fence itself",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn the_checker_finds_a_holder_that_issues_after_its_lease_ran_out() {
    let layout = Layout::preset("twitter").unwrap();
    let d = IdDecoder::new(&layout, 4).unwrap();
    let bits = |h: u64| {
        let v = layout.node_values_of_host(h).unwrap();
        let p: Vec<(&str, u64)> = v.iter().map(|(k, x)| (k.as_str(), *x)).collect();
        layout.node_bits(&p).unwrap()
    };
    let t = 1_900_000_000_000;
    let id = |ms: u64| layout.compose(layout.tick_of(t + ms).unwrap(), 0, bits(1));
    let renewed = |renewals: u64| {
        let mut s = store(1, t + 10_000);
        s.hosts[0].renewals = renewals;
        s
    };
    // The TTL is 1000 ms: a heartbeat first seen at 100 ms covers issuing until 1100 ms, and
    // each renewal seen moves that on.
    let mut ok = Checker::new(d.clone(), 0);
    ok.ack("n1", 1, vec![id(1)], 100, Some("n"), now(&renewed(0)));
    ok.ack("n1", 1, vec![id(2)], 1_100, Some("n"), now(&renewed(0)));
    ok.ack("n1", 1, vec![id(3)], 1_900, Some("n"), now(&renewed(1)));
    ok.ack("n1", 1, vec![id(4)], 2_900, Some("n"), now(&renewed(1)));
    // A process resumed from a pause is judged by the durable bound alone.
    ok.ack("n1", 1, vec![id(5)], 9_000, None, now(&renewed(1)));
    assert_eq!(
        ok.finish(&["n1".into()], 100, 200).violations,
        Vec::<String>::new()
    );

    let mut late = Checker::new(d, 0);
    late.ack("n1", 1, vec![id(1)], 100, Some("n"), now(&renewed(0)));
    late.ack("n1", 1, vec![id(2)], 1_101, Some("n"), now(&renewed(0)));
    let r = late.finish(&["n1".into()], 100, 200);
    assert_eq!(r.violation_count, 1, "{:?}", r.violations);
    assert!(
        r.violations[0].contains("1 ms after its lease (token 1) ran out"),
        "{:?}",
        r.violations
    );
}
