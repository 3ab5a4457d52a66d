//! Failover within one call's time limit: a coordinator that takes connections and never
//! answers (a partition that drops packets, a stuck connection) costs a share of the limit,
//! not all of it.

use std::time::Duration;

use shardflake_client::CoordinatorClient;
use shardflake_proto::coord::{AcquireRequest, RenewRequest};
use tokio::net::TcpListener;

use crate::support::{TestCoordinator, TOKEN};

/// Accepts connections and never answers; `forward_after` connections later, passes them to
/// `upstream` instead (a stuck connection, then working ones).
async fn black_hole(upstream: Option<String>, forward_after: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut accepted = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            accepted += 1;
            match &upstream {
                Some(up) if accepted > forward_after => {
                    let addr = up.trim_start_matches("http://").to_string();
                    tokio::spawn(async move {
                        let mut server = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut server).await;
                    });
                }
                _ => held.push(conn),
            }
        }
    });
    url
}

#[tokio::test]
async fn a_silent_coordinator_costs_a_share_of_the_time_limit_not_all_of_it() {
    let c = TestCoordinator::start().await;
    let silent = black_hole(None, 0).await;
    let limit = Duration::from_millis(1_000);
    let client = CoordinatorClient::new([silent.clone(), c.url.clone()], Some(TOKEN.into()))
        .unwrap()
        .with_timeout(limit);
    // The call's own limit is the promise: the answer must come within it, or a renewal's
    // answer arrives after the lease deadline it was meant to move.
    let grant = tokio::time::timeout(
        limit,
        client.acquire(&AcquireRequest {
            secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
            name: "n".into(),
            ttl_ms: Some(5_000),
            ..AcquireRequest::default()
        }),
    )
    .await
    .expect("answered within the call's limit")
    .expect("the second coordinator answers");
    // A renewal starts at the silent coordinator again in a new client, with the time left
    // until the lease deadline as its limit.
    let client = CoordinatorClient::new([silent, c.url.clone()], Some(TOKEN.into())).unwrap();
    let request = RenewRequest {
        secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
        token: grant.token,
        reserve_until_ms: None,
        usage: None,
        ..Default::default()
    };
    let renewal = client.renew(grant.host_id, &request, limit);
    tokio::time::timeout(limit, renewal)
        .await
        .expect("answered within the call's limit")
        .expect("renewed through the second coordinator");
}

#[tokio::test]
async fn a_stuck_connection_to_the_only_coordinator_is_retried_on_a_new_one() {
    let c = TestCoordinator::start().await;
    let front = black_hole(Some(c.url.clone()), 1).await;
    let limit = Duration::from_millis(1_000);
    let client = CoordinatorClient::new([front], Some(TOKEN.into()))
        .unwrap()
        .with_timeout(limit);
    let info = tokio::time::timeout(limit, client.cluster())
        .await
        .expect("answered within the call's limit")
        .expect("a second attempt on a fresh connection answers");
    assert_eq!(info.store_id, c.coordinator.store_id());
}
