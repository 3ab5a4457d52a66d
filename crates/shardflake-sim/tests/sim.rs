//! The simulation itself under test: a seed replays exactly, a run is checked, and the
//! checker finds what it is meant to find.

use shardflake::Layout;
use shardflake_proto::coord::{HostStatus, HostsResponse, LeaseState, Role};
use shardflake_sim::check::{Checker, IdDecoder};
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
    // Seed 1 runs a narrow-sequence layout (the load outruns the clock), seed 11 the twitter
    // layout.
    for seed in [1, 11] {
        let a = run_seed(seed, &o, true);
        let b = run_seed(seed, &o, false);
        assert_eq!(a.report.violations, Vec::<String>::new(), "seed {seed}");
        assert!(
            a.report.ids > 10_000,
            "seed {seed}: only {} ids",
            a.report.ids
        );
        assert!(
            a.faults.values().sum::<u64>() >= 5,
            "seed {seed}: too few faults: {:?}",
            a.faults
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
    }
    let c = run_seed(12, &o, false);
    assert_ne!(
        run_seed(11, &o, false).digest,
        c.digest,
        "another seed, another run"
    );
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
            temporal: None,
        }],
        standbys: vec![],
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
    ok.ack("n1", 1, &[a, b], 10, Some("n"), &store(1, t));
    assert_eq!(ok.finish(&["n1".into()], 100, 200).violation_count, 0);

    let mut c = Checker::new(d, 0);
    c.ack("n1", 1, &[a, b], 10, Some("other"), &store(1, t)); // another holder
    c.ack("n2", 1, &[b], 11, None, &store(1, t)); // a duplicate
    c.ack("n1", 1, &[a], 12, None, &store(1, t)); // not increasing in the process
    c.ack("n1", 2, &[at(t + 5, 0, 1)], 13, None, &store(1, t)); // above the durable bound
    c.ack(
        "n1",
        2,
        &[at(t + 9, 0, 1), at(t + 9, 0, 2)],
        14,
        None,
        &store(1, t + 9),
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
