//! The coordinator's rules checked over any store: leases, fencing tokens, reservations and
//! counter blocks. [`crate::store::conformance::run_all`] runs these after the key-value
//! checks, so a backend that passes can run a coordinator.

use std::sync::Arc;

use shardflake::Layout;
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, BlockRequest, ReleaseRequest, RenewRequest, ReservationRequest,
    ShardUsage,
};

use super::{acquire_req as req, manual_coordinator, T0};
use crate::store::KvStore;
use crate::{CoordError, Coordinator, CoordinatorConfig, ManualTime, TimeSource};

/// A coordinator on `store` with a pool of at most 4 host ids, so that the suite can fill it.
async fn coordinator(store: Arc<dyn KvStore>, layout: Layout) -> (Coordinator, ManualTime) {
    let mut config = CoordinatorConfig::new(layout);
    config.pool_size = config.pool_size.min(4);
    manual_coordinator(store, config).await
}

/// Grant, renew, stale token, expiry, takeover above the bound, pool exhaustion.
pub async fn grant_renew_expire_takeover(store: Arc<dyn KvStore>) {
    let (c, time) = coordinator(store, Layout::preset("default").unwrap()).await;
    let a = c.acquire(&req("a", 1_000)).await.unwrap();
    assert_eq!((a.host_id, a.start_above_ms), (0, 0));
    let b = c.acquire(&req("b", 1_000)).await.unwrap();
    assert_eq!(b.host_id, 1);
    assert!(b.token > a.token, "tokens increase");
    let r = c
        .renew(
            0,
            &RenewRequest {
                secret: super::secret(),
                token: a.token,
                reserve_until_ms: Some(T0 + 5_000),
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.reserved_until_ms, T0 + 5_000);
    // B goes silent; A keeps renewing.
    time.advance_ms(600);
    c.renew(
        0,
        &RenewRequest {
            secret: super::secret(),
            token: a.token,
            reserve_until_ms: None,
            usage: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let busy = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            host_id: Some(1),
            ..req("s", 1_000)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(busy, CoordError::HostBusy { host_id: 1, .. }),
        "{busy}"
    );
    time.advance_ms(500);
    let exp = c
        .renew(
            1,
            &RenewRequest {
                secret: super::secret(),
                token: b.token,
                reserve_until_ms: None,
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(exp, CoordError::LeaseExpired { .. }), "{exp}");
    let ext = c
        .extend_reservation(
            1,
            &ReservationRequest {
                secret: super::secret(),
                token: b.token,
                until_ms: T0 + 9_000,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(ext.code().as_str(), "lease_expired");
    // A standby takes over B's id, strictly above B's bound.
    let b2 = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            host_id: Some(1),
            ..req("s", 10_000)
        })
        .await
        .unwrap();
    assert!(b2.token > b.token);
    assert_eq!(b2.start_above_ms, b.reserved_until_ms);
    // B comes back: its token is stale for renewals, reservations and blocks.
    let stale = c
        .renew(
            1,
            &RenewRequest {
                secret: super::secret(),
                token: b.token,
                reserve_until_ms: None,
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, CoordError::StaleToken { current, .. } if current == b2.token));
    // A reserved up to T0 + 5 s; after A expires the next holder starts above that.
    time.advance_ms(2_000);
    let a2 = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            prefer_host_id: Some(0),
            ..req("a2", 1_000)
        })
        .await
        .unwrap();
    assert_eq!((a2.host_id, a2.start_above_ms), (0, T0 + 5_000));
    // Reservations reach at most the stated limit ahead of the coordinator's clock: a
    // request beyond it is clamped, and the answer says how far it got.
    let ahead_max = a2.limits.reservation_ahead_ms_max;
    assert_eq!(ahead_max, c.config().reservation_ahead_ms_max);
    let far = c
        .extend_reservation(
            0,
            &ReservationRequest {
                secret: super::secret(),
                token: a2.token,
                until_ms: time.wall_ms() + ahead_max + 1_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(far.reserved_until_ms, time.wall_ms() + ahead_max);
    let renewed = c
        .renew(
            0,
            &RenewRequest {
                secret: super::secret(),
                token: a2.token,
                reserve_until_ms: Some(time.wall_ms() + 10 * ahead_max),
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renewed.reserved_until_ms, time.wall_ms() + ahead_max);
    // Fill the pool of 4.
    c.acquire(&req("c", 1_000)).await.unwrap();
    c.acquire(&req("d", 1_000)).await.unwrap();
    let full = c.acquire(&req("e", 1_000)).await.unwrap_err();
    assert!(
        matches!(full, CoordError::PoolExhausted { pool_size: 4 }),
        "{full}"
    );
    // A release frees an id at once; the reservation carries over.
    let held = c.hosts().await.unwrap();
    let h3 = held.hosts.iter().find(|h| h.host_id == 3).unwrap();
    c.release(
        3,
        &ReleaseRequest {
            token: h3.token,
            secret: super::secret(),
        },
    )
    .await
    .unwrap();
    let e = c.acquire(&req("e", 1_000)).await.unwrap();
    assert_eq!(e.host_id, 3);
}

/// Regression: a grant whose answer was lost left a ghost lease that blocked its host
/// id (and standbys) for a TTL. A retry with the same request id gets the same grant,
/// renewed from the retry on.
pub async fn repeated_acquire_answers_the_same_grant(store: Arc<dyn KvStore>) {
    let (c, time) = coordinator(store, Layout::preset("default").unwrap()).await;
    let first = AcquireRequest {
        secret: super::secret(),
        request_id: Some("node-a-1".into()),
        ..req("a", 1_000)
    };
    let a = c.acquire(&first).await.unwrap();
    time.advance_ms(800);
    let again = c.acquire(&first).await.unwrap();
    assert_eq!(again, a, "the same host id, token and bounds");
    // One lease, not two: the next caller gets the next host id.
    let b = c.acquire(&req("b", 1_000)).await.unwrap();
    assert_eq!(b.host_id, a.host_id + 1);
    // The repeated answer renewed the lease: it runs a full TTL from the repeat.
    time.advance_ms(900);
    let take = AcquireRequest {
        secret: super::secret(),
        host_id: Some(a.host_id),
        ..req("standby", 1_000)
    };
    assert_eq!(
        c.acquire(&take).await.unwrap_err().code().as_str(),
        "host_busy"
    );
    // Another holder's request id does not match; an empty or long one is refused.
    let other = AcquireRequest {
        secret: super::secret(),
        request_id: Some("node-a-1".into()),
        ..req("someone-else", 1_000)
    };
    assert_ne!(c.acquire(&other).await.unwrap().host_id, a.host_id);
    for bad in [String::new(), "x".repeat(65)] {
        let e = c
            .acquire(&AcquireRequest {
                secret: super::secret(),
                request_id: Some(bad),
                ..req("a", 1_000)
            })
            .await
            .unwrap_err();
        assert_eq!(e.code().as_str(), "bad_request");
    }
    // After a release, the same request id starts a new lease.
    c.release(
        a.host_id,
        &ReleaseRequest {
            token: a.token,
            secret: super::secret(),
        },
    )
    .await
    .unwrap();
    let fresh = c.acquire(&first).await.unwrap();
    assert!(fresh.token > a.token);
}

/// Blocks for one (shard, host) pair only move upwards, across holders and restarts.
pub async fn blocks_only_move_upwards(store: Arc<dyn KvStore>) {
    let layout = Layout::from_spec("temporal:granularity=5s").unwrap();
    let (c, time) = coordinator(store.clone(), layout.clone()).await;
    let shard = layout.tick_of(T0).unwrap();
    let a = c.acquire(&req("a", 1_000)).await.unwrap();
    let mut seen: Vec<BlockGrant> = Vec::new();
    let mut after = 0;
    for _ in 0..4 {
        let g = c
            .grant_block(&BlockRequest {
                secret: super::secret(),
                host_id: a.host_id,
                token: a.token,
                shard,
                after_counter: after,
            })
            .await
            .unwrap();
        // Asking again with the same high-water mark returns the same block.
        let again = c
            .grant_block(&BlockRequest {
                secret: super::secret(),
                host_id: a.host_id,
                token: a.token,
                shard,
                after_counter: after,
            })
            .await
            .unwrap();
        assert_eq!(g, again);
        seen.push(g);
        after = g.end;
    }
    // A takeover continues above everything granted to the previous holder.
    time.advance_ms(1_500);
    let b = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            host_id: Some(a.host_id),
            ..req("b", 10_000)
        })
        .await
        .unwrap();
    let stale = c
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: a.host_id,
            token: a.token,
            shard,
            after_counter: after,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code().as_str(), "stale_token");
    let g = c
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: b.host_id,
            token: b.token,
            shard,
            after_counter: 0,
        })
        .await
        .unwrap();
    seen.push(g);
    // A coordinator restarted over the same store continues above too.
    let (c2, time2) = coordinator(store, layout.clone()).await;
    time2.advance_ms(1_500);
    let last = *seen.last().unwrap();
    let same = c2
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: b.host_id,
            token: b.token,
            shard,
            after_counter: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        same, last,
        "a repeated request (lost answer) gets the same block"
    );
    // The restarted coordinator still sees B's lease as live (restart rule) and B's
    // token as current, so once B has used its block it grants above the high-water mark.
    let g = c2
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: b.host_id,
            token: b.token,
            shard,
            after_counter: last.end,
        })
        .await
        .unwrap();
    seen.push(g);
    for w in seen.windows(2) {
        assert!(
            w[1].start >= w[0].end,
            "block {:?} is not above {:?}",
            w[1],
            w[0]
        );
    }
    for g in &seen {
        assert!(g.end > g.start && g.shard == shard);
    }
    // Renewals near the end of the shard prepare the next shard's block, once per token.
    let next_start = layout.ms_of_tick(shard + 1);
    let now = time2.wall_ms();
    time2.advance_ms(next_start.saturating_sub(now).saturating_sub(400));
    let usage = ShardUsage {
        shard,
        used_in_shard: 50_000,
        predicted_next: None,
    };
    let r = c2
        .renew(
            b.host_id,
            &RenewRequest {
                secret: super::secret(),
                token: b.token,
                reserve_until_ms: None,
                usage: Some(usage),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let nb = r.next_block.expect("next shard's block is prepared");
    assert_eq!(nb.shard, shard + 1);
    assert!(
        nb.end - nb.start >= 50_000,
        "sized from the forecast: {nb:?}"
    );
    let r2 = c2
        .renew(
            b.host_id,
            &RenewRequest {
                secret: super::secret(),
                token: b.token,
                reserve_until_ms: None,
                usage: Some(usage),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r2.next_block, Some(nb));
    // A shard the layout cannot hold gets no block: its lifetime is over there.
    let beyond = c2
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: b.host_id,
            token: b.token,
            shard: layout.timestamp_field().max() + 1,
            after_counter: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(beyond.code().as_str(), "bad_request");
    assert!(
        beyond.to_string().contains(&layout.overflow_time()),
        "{beyond}"
    );
    // Not a temporal coordinator: blocks are refused.
    let (plain, _) = coordinator(
        Arc::new(crate::store::MemStore::new()),
        Layout::preset("default").unwrap(),
    )
    .await;
    let err = plain
        .grant_block(&BlockRequest {
            secret: super::secret(),
            host_id: 0,
            token: 1,
            shard: 0,
            after_counter: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "not_temporal");
}

/// Two coordinators on one store (two processes sharing an etcd prefix): they report one
/// store identity, and when both are asked for the same free host id at once, exactly one
/// grants it; the other answers `host_busy` or conflicts and grants nothing twice. `a` and
/// `b` are two handles on the same state (for etcd, two clients on one prefix).
pub async fn two_coordinators_grant_a_host_id_once(a: Arc<dyn KvStore>, b: Arc<dyn KvStore>) {
    let check = "two_coordinators_grant_a_host_id_once";
    let layout = Layout::preset("default").unwrap();
    let (ca, _) = coordinator(a, layout.clone()).await;
    let (cb, _) = coordinator(b, layout).await;
    assert_eq!(ca.store_id(), cb.store_id(), "{check}: one store, one id");
    let (ca, cb) = (Arc::new(ca), Arc::new(cb));
    for round in 0..4u32 {
        let ask = |c: Arc<Coordinator>, who: &str| {
            let r = AcquireRequest {
                secret: super::secret(),
                host_id: Some(round),
                ..req(&format!("{who}-{round}"), 60_000)
            };
            tokio::spawn(async move { c.acquire(&r).await })
        };
        let (ra, rb) = (ask(ca.clone(), "a"), ask(cb.clone(), "b"));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        let granted = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(granted, 1, "{check}: round {round}: {ra:?} / {rb:?}");
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(
                    matches!(e, CoordError::HostBusy { host_id, .. } if host_id == round),
                    "{check}: round {round}: the loser is told the id is busy, got {e}"
                );
            }
        }
    }
    let status = cb.hosts().await.unwrap();
    assert_eq!(status.hosts.len(), 4, "{check}: {status:?}");
}

/// A standby long-polling coordinator `b` takes over a host id granted through coordinator
/// `a` whose holder went silent: `b` decides expiry on its own clock (a full TTL of seeing
/// the record unchanged), and grants strictly above the holder's reservation. When the
/// store has a change feed, the standby learns of `a`'s grant from it, not from a timer.
pub async fn standby_on_one_coordinator_takes_over_from_another(
    a: Arc<dyn KvStore>,
    b: Arc<dyn KvStore>,
) {
    let check = "standby_on_one_coordinator_takes_over_from_another";
    let layout = Layout::preset("default").unwrap();
    let feed = b.changes().is_some();
    let (ca, _) = coordinator(a, layout.clone()).await;
    let (cb, time_b) = coordinator(b, layout).await;
    let cb = Arc::new(cb);
    // The standby waits before the holder exists: only a write through `a` can tell `b`.
    let waiter = {
        let cb = cb.clone();
        tokio::spawn(async move { cb.standby_wait("standby", 30_000).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let held = ca.acquire(&req("holder", 1_000)).await.unwrap();
    let renewed = ca
        .renew(
            held.host_id,
            &RenewRequest {
                secret: super::secret(),
                token: held.token,
                reserve_until_ms: Some(T0 + 7_000),
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Let `b` see the renewed record, then let its own clock run past one TTL.
    for _ in 0..100 {
        if cb.metrics().standby_feed_wakes.get() > 0 || !feed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if feed {
        assert!(
            cb.metrics().standby_feed_wakes.get() > 0,
            "{check}: a write through `a` wakes the standby waiting on `b`"
        );
    }
    assert!(!waiter.is_finished(), "{check}: the lease is live");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    time_b.advance_ms(1_000);
    let offered = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the standby is answered")
        .unwrap()
        .unwrap();
    assert_eq!(offered, Some(held.host_id), "{check}");
    let took = cb
        .acquire(&AcquireRequest {
            secret: super::secret(),
            host_id: Some(held.host_id),
            ..req("standby", 10_000)
        })
        .await
        .unwrap();
    assert!(took.token > held.token, "{check}: a newer token");
    assert_eq!(
        took.start_above_ms, renewed.reserved_until_ms,
        "{check}: the standby starts above the holder's reservation"
    );
}

/// A coordinator on `store` for `layout`, with the whole pool and a manual clock.
async fn with_time(store: Arc<dyn KvStore>, layout: Layout) -> (Coordinator, ManualTime) {
    manual_coordinator(store, CoordinatorConfig::new(layout)).await
}
/// A coordinator that starts on a store with leases in it (a restart, or another coordinator
/// joining) counts every lease as live for one full TTL on its own clock, whatever its wall
/// clock says.
pub async fn restarted_coordinator_treats_every_lease_as_live_for_one_ttl(store: Arc<dyn KvStore>) {
    let (c, _) = with_time(store.clone(), Layout::preset("default").unwrap()).await;
    let a = c.acquire(&req("a", 1_000)).await.unwrap();
    drop(c);
    // The restarted process reads a wall clock far past the persisted expiry.
    let (c2, time) = with_time(store, Layout::preset("default").unwrap()).await;
    time.step_wall_forward_ms(3_600_000);
    let take = AcquireRequest {
        secret: super::secret(),
        host_id: Some(a.host_id),
        ..req("b", 1_000)
    };
    let busy = c2.acquire(&take).await.unwrap_err();
    assert!(matches!(busy, CoordError::HostBusy { token, .. } if token == a.token));
    time.advance_ms(999);
    assert_eq!(
        c2.acquire(&take).await.unwrap_err().code().as_str(),
        "host_busy"
    );
    time.advance_ms(1);
    let b = c2.acquire(&take).await.unwrap();
    assert!(b.token > a.token, "tokens increase across restarts");
}

/// Steps of the wall clock, forward or back, neither expire nor extend a lease: expiry is
/// measured on the monotonic clock.
pub async fn wall_clock_steps_neither_expire_nor_extend_a_lease(store: Arc<dyn KvStore>) {
    let (c, time) = with_time(store, Layout::preset("default").unwrap()).await;
    let a = c.acquire(&req("a", 1_000)).await.unwrap();
    let take = AcquireRequest {
        secret: super::secret(),
        host_id: Some(a.host_id),
        ..req("b", 1_000)
    };
    time.step_wall_forward_ms(10_000_000);
    assert_eq!(
        c.acquire(&take).await.unwrap_err().code().as_str(),
        "host_busy"
    );
    time.step_wall_back_ms(20_000_000);
    time.advance_ms(1_000);
    assert!(c.acquire(&take).await.is_ok());
}

/// Out-of-range TTLs and host ids, unknown hosts and temporal usage on a non-temporal layout
/// are refused with their own errors.
pub async fn ttl_and_host_limits_are_enforced(store: Arc<dyn KvStore>) {
    let (c, _) = with_time(store, Layout::preset("twitter").unwrap()).await;
    let e = c.acquire(&req("a", 10)).await.unwrap_err();
    assert!(
        matches!(e, CoordError::TtlOutOfRange { ttl_ms: 10, .. }),
        "{e}"
    );
    let e = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            host_id: Some(1024),
            ..req("a", 1_000)
        })
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        CoordError::HostOutOfRange {
            host_id: 1024,
            pool_size: 1024
        }
    ));
    let e = c
        .renew(
            5,
            &RenewRequest {
                secret: super::secret(),
                token: 1,
                reserve_until_ms: None,
                usage: None,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CoordError::UnknownHost { host_id: 5 }));
    let usage = ShardUsage {
        shard: 1,
        used_in_shard: 1,
        predicted_next: None,
    };
    let a = c.acquire(&req("a", 1_000)).await.unwrap();
    let e = c
        .renew(
            a.host_id,
            &RenewRequest {
                secret: super::secret(),
                token: a.token,
                reserve_until_ms: None,
                usage: Some(usage),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "not_temporal");
}

/// Prepared blocks grow with a temporal host's usage, and the history records each
/// forecast against the actual use.
pub async fn forecasts_follow_usage_and_history_records_predicted_against_actual(
    store: Arc<dyn KvStore>,
) {
    let granularity = 10_000;
    let layout = Layout::from_spec("temporal:granularity=10s").unwrap();
    assert_eq!(layout.time_unit_ms(), granularity);
    let (c, time) = manual_coordinator(store, CoordinatorConfig::new(layout.clone())).await;
    let a = c.acquire(&req("a", 2_000)).await.unwrap();
    let first = layout.tick_of(T0).unwrap();
    let mut sizes = Vec::new();
    // Usage grows by 100k per shard; renew every second with a running count.
    for k in 0..6u64 {
        let shard = first + k;
        let total = 100_000 * (k + 1);
        for step in 1..=10u64 {
            let usage = ShardUsage {
                shard,
                used_in_shard: total * step / 10,
                predicted_next: None,
            };
            let r = c
                .renew(
                    a.host_id,
                    &RenewRequest {
                        secret: super::secret(),
                        token: a.token,
                        reserve_until_ms: None,
                        usage: Some(usage),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if let Some(b) = r.next_block {
                assert_eq!(b.shard, shard + 1);
                if step == 10 {
                    sizes.push(b.end - b.start);
                }
            }
            time.advance_ms(1_000);
        }
    }
    // Blocks grow with the demand and cover the next shard's use with headroom.
    for (k, w) in sizes.windows(2).enumerate() {
        assert!(w[1] > w[0], "block sizes {sizes:?} at {k}");
    }
    let hosts = c.hosts().await.unwrap();
    let t = hosts.hosts[0].temporal.clone().unwrap();
    assert!(t.history.len() >= 4, "{t:?}");
    for h in &t.history[1..] {
        assert!(h.predicted > 0, "{h:?}");
        let err = (h.predicted as f64 - h.actual as f64).abs() / h.actual as f64;
        assert!(err < 0.5, "forecast {h:?} is off by {err}");
    }
}

/// Only the holder can use a lease: every call under it with another secret is refused
/// (`SecretMismatch`) and changes nothing, a repeated acquire with another secret gets no
/// grant, and the store keeps the secret's hash, never the secret.
pub async fn every_call_under_a_lease_needs_its_secret(store: Arc<dyn KvStore>) {
    let check = "every_call_under_a_lease_needs_its_secret";
    let (c, _) = coordinator(store.clone(), Layout::preset("default").unwrap()).await;
    let mine = shardflake_proto::coord::LeaseSecret::from_bytes([0x3c; 16]);
    let other = shardflake_proto::coord::LeaseSecret::from_bytes([0xc3; 16]);
    let first = AcquireRequest {
        secret: mine.clone(),
        request_id: Some("holder-1".into()),
        reserve_ahead_ms: Some(1_000),
        ..req("holder", 10_000)
    };
    let g = c.acquire(&first).await.unwrap();
    let mismatch = |e: CoordError| matches!(e, CoordError::SecretMismatch { .. });
    let retry_by_another = AcquireRequest {
        secret: other.clone(),
        ..first.clone()
    };
    let e = c.acquire(&retry_by_another).await.unwrap_err();
    assert!(
        mismatch(e),
        "{check}: a repeated acquire with another secret"
    );
    assert_eq!(
        c.acquire(&first).await.unwrap(),
        g,
        "{check}: the holder's retry"
    );
    let renew = RenewRequest {
        token: g.token,
        secret: other.clone(),
        reserve_until_ms: Some(T0 + 5_000),
        ..Default::default()
    };
    assert!(
        mismatch(c.renew(g.host_id, &renew).await.unwrap_err()),
        "{check}: renew"
    );
    let extend = ReservationRequest {
        token: g.token,
        secret: other.clone(),
        until_ms: T0 + 5_000,
    };
    let e = c.extend_reservation(g.host_id, &extend).await.unwrap_err();
    assert!(mismatch(e), "{check}: reservation");
    let release = ReleaseRequest {
        token: g.token,
        secret: other,
    };
    assert!(
        mismatch(c.release(g.host_id, &release).await.unwrap_err()),
        "{check}: release"
    );
    let hosts = c.hosts().await.unwrap();
    assert_eq!(
        hosts.hosts[0].reserved_until_ms, g.reserved_until_ms,
        "{check}: nothing changed"
    );
    assert_eq!(
        hosts.hosts[0].state,
        shardflake_proto::coord::LeaseState::Live,
        "{check}"
    );
    // The holder's own calls go through.
    let ok = ReservationRequest {
        secret: mine.clone(),
        ..extend
    };
    assert!(
        c.extend_reservation(g.host_id, &ok).await.is_ok(),
        "{check}"
    );
    // The store holds a hash of the secret, not the secret.
    for (key, v) in store.scan("").await.unwrap() {
        let text = String::from_utf8_lossy(&v.value);
        assert!(
            !text.contains(mine.expose()),
            "{check}: the secret is stored under {key}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[tokio::test]
    async fn domain_rules_hold_on_the_memory_store() {
        grant_renew_expire_takeover(Arc::new(MemStore::new())).await;
        repeated_acquire_answers_the_same_grant(Arc::new(MemStore::new())).await;
        blocks_only_move_upwards(Arc::new(MemStore::new())).await;
    }
}
