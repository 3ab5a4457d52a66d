//! The namespace rules' pure parts: values, block bounds, the assignment policy.
use super::*;

#[test]
fn first_values_follow_start_step_and_offset() {
    assert_eq!(first_value(1, 1, 0), Some(1));
    assert_eq!(first_value(10, 3, 2), Some(11));
    assert_eq!(first_value(11, 3, 2), Some(11));
    assert_eq!(first_value(12, 3, 2), Some(14));
    assert_eq!(first_value(u64::MAX, 2, 0), None);
    assert_eq!(values_left(u64::MAX - 3, 2), 2); // MAX-3, MAX-1
    assert_eq!(block_end(u64::MAX - 3, 2, 2), u64::MAX);
    assert_eq!(block_end(5, 3, 10), 35);
}

#[test]
fn a_namespace_is_created_checked_and_only_its_bounds_change() {
    let spec = NamespaceSpec {
        start: Some(1_000),
        step: Some(2),
        ..Default::default()
    };
    let rec = create("orders", &spec, 7).unwrap();
    assert_eq!(
        (rec.start, rec.step, rec.offset, rec.next),
        (1_000, 2, 0, 1_000)
    );
    assert_eq!(
        (rec.block_min, rec.block_max),
        (NS_BLOCK_MIN_DEFAULT, NS_BLOCK_MAX_DEFAULT)
    );
    let bigger = update(
        &rec,
        &NamespaceSpec {
            block_max: Some(50_000),
            start: Some(1_000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(bigger.block_max, 50_000);
    let e = update(
        &rec,
        &NamespaceSpec {
            step: Some(3),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CoordError::NamespaceConflict {
                field: "step",
                stored: 2,
                given: 3,
                ..
            }
        ),
        "{e}"
    );
    for bad_spec in [
        NamespaceSpec {
            step: Some(0),
            ..Default::default()
        },
        NamespaceSpec {
            step: Some(4),
            offset: Some(4),
            ..Default::default()
        },
        NamespaceSpec {
            block_min: Some(10),
            block_max: Some(5),
            ..Default::default()
        },
        NamespaceSpec {
            block_min: Some(0),
            ..Default::default()
        },
        NamespaceSpec {
            block_max: Some(NS_BLOCK_LIMIT + 1),
            ..Default::default()
        },
        NamespaceSpec {
            start: Some(u64::MAX),
            ..Default::default()
        },
    ] {
        let e = create("x", &bad_spec, 0).unwrap_err();
        assert!(matches!(e, CoordError::BadRequest(_)), "{bad_spec:?}: {e}");
    }
}

#[test]
fn assignment_grows_at_once_and_shrinks_only_when_quiet_and_well_below() {
    let live = [0, 1, 2, 3];
    let cap = 1_000.0;
    // One node to start with: the rendezvous primary.
    let first = assign("orders", &[], &live, 0.0, cap, 0).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        u64::from(first[0]),
        rendezvous_order("orders", &[0, 1, 2, 3])[0]
    );
    // Past 80 % of one node: two at once, the first kept.
    let two = assign("orders", &first, &live, 900.0, cap, 0).unwrap();
    assert_eq!((two.len(), two[0]), (2, first[0]));
    // Back to 700/s: still above half of one node; no change.
    assert_eq!(assign("orders", &two, &live, 700.0, cap, 600_000), None);
    // 400/s, but the set just changed: no change yet.
    assert_eq!(assign("orders", &two, &live, 400.0, cap, 1_000), None);
    // 400/s after a quiet minute: the node added last goes.
    assert_eq!(
        assign("orders", &two, &live, 400.0, cap, SHRINK_AFTER_MS),
        Some(first.clone())
    );
    // A serving node that is gone is replaced at once, whatever the quiet period.
    let others: Vec<u32> = live.iter().copied().filter(|&h| h != first[0]).collect();
    let moved = assign("orders", &first, &others, 0.0, cap, 0).unwrap();
    assert_eq!(moved.len(), 1);
    assert_ne!(moved[0], first[0]);
    // Never more nodes than are live.
    assert_eq!(assign("orders", &[], &[5], 1e9, cap, 0), Some(vec![5]));
    assert_eq!(assign("orders", &[], &[], 1e9, cap, 0), None);
}

#[test]
fn a_steady_noisy_trace_near_the_threshold_does_not_flap() {
    // Demand around 800/s, ±15 %, evaluated every second for an hour: one change (the
    // growth to two nodes), then none, although it keeps crossing the growth threshold.
    let live = [0, 1, 2];
    let mut serving = Vec::new();
    let mut changes = 0;
    let mut stable_ms = 0;
    let mut x: u64 = 42;
    for _ in 0..3_600 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.3;
        let forecast = 800.0 * (1.0 + noise);
        match assign("feed", &serving, &live, forecast, 1_000.0, stable_ms) {
            Some(next) => {
                serving = next;
                changes += 1;
                stable_ms = 0;
            }
            None => stable_ms += 1_000,
        }
    }
    assert_eq!(serving.len(), 2, "{serving:?}");
    // One node, then the second (or both at once if the first evaluation was above the
    // threshold): no flapping.
    assert!((1..=2).contains(&changes), "{changes} changes");
}
