//! The gate in front of the id endpoints (`/id`, `/ids`, `/ns/{name}/id`, `/ns/{name}/ids`):
//! an optional client credential, and an optional ids-per-second limit per client, so that
//! one runaway client cannot starve the others.
//!
//! Without a client credential the limit is per peer address (all clients behind one proxy
//! share it); with one (`SHARDFLAKE_CLIENT_TOKEN`, `--client-token-file`) it is per
//! credential name. A request costs the ids it asks for; over the limit it is
//! `429 rate_limited` with `Retry-After`. With neither configured the gate is not installed
//! at all, so the hot path pays nothing for it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shardflake_proto::node::IDS_COUNT_MAX;
use shardflake_proto::{ApiError, ErrorCode};
use shardflake_runtime::credentials::{AuthFailure, Credentials};
use shardflake_runtime::limit::{address_key, Decision, RateLimiter};

use crate::metrics::Route;
use crate::state::AppState;

/// The largest `--client-ids-per-second`.
pub const CLIENT_IDS_PER_S_LIMIT: u64 = 1_000_000_000;

/// Who may take ids, and how fast.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicy {
    /// The client credentials the id endpoints require (`None`: open).
    pub credentials: Option<Credentials>,
    /// Ids per second per client (`0`: no limit); a second's worth may come at once.
    pub ids_per_second: u64,
}

impl ClientPolicy {
    /// Whether the gate does anything.
    pub fn is_active(&self) -> bool {
        self.credentials.is_some() || self.ids_per_second > 0
    }
}

/// The gate's state: the policy and the buckets.
#[derive(Debug)]
pub(crate) struct Gate {
    credentials: Option<Credentials>,
    limiter: Option<RateLimiter<String>>,
}

impl Gate {
    pub(crate) fn new(policy: &ClientPolicy) -> Self {
        Self {
            credentials: policy.credentials.clone(),
            limiter: (policy.ids_per_second > 0)
                .then(|| RateLimiter::new(policy.ids_per_second, policy.ids_per_second)),
        }
    }
}

/// The peer of a connection as the node's listener reports it: its address and, with
/// mutual TLS, the name on its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The verified certificate's name, with mutual TLS.
    pub cert_name: Option<String>,
}

/// The ids a request asks for: a well-formed `count` of `/ids` and `/ns/{name}/ids`, else
/// one. A `count` that is not a number in `1..=IDS_COUNT_MAX` costs one: the handler refuses
/// it with the precise error and issues nothing, so it must not leave its caller (and
/// everyone sharing its address) in debt.
fn cost(req: &Request) -> u64 {
    if !req.uri().path().ends_with("/ids") {
        return 1;
    }
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("count="))
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u64>().ok())
        .filter(|n| (1..=IDS_COUNT_MAX).contains(n))
        .unwrap_or(1)
}

/// The middleware: authenticates the client (when credentials are configured) and takes
/// its ids from its bucket (when a limit is).
pub(crate) async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(gate) = state.shared.gate.as_ref() else {
        return next.run(req).await;
    };
    // Probes, metrics, the description and `/inspect` are never gated.
    if !matches!(
        Route::of(req.uri().path()),
        Route::Id | Route::Ids | Route::Namespace
    ) {
        return next.run(req).await;
    }
    let metrics = &state.shared.metrics;
    let key = match &gate.credentials {
        Some(creds) => {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match creds.authenticate(header) {
                Ok(c) => c.name,
                Err(failure) => {
                    metrics.count_client_auth_failure(failure.as_str());
                    let message = match failure {
                        AuthFailure::Missing => {
                            "this node's id endpoints need a client credential: `Authorization: Bearer <token>`"
                        }
                        AuthFailure::Unknown => "the bearer token is not a client credential of this node",
                    };
                    return ApiError::new(ErrorCode::Unauthorized, message).into_response();
                }
            }
        }
        None => peer_ip(&req).map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
    };
    if let Some(limiter) = &gate.limiter {
        if let Decision::Limited { retry_after_ms } =
            limiter.check(&key, cost(&req), tokio::time::Instant::now())
        {
            // Per credential name, or one series for all peer addresses: addresses are
            // chosen by the peers, a label per address would grow without bound.
            let label = if gate.credentials.is_some() {
                key.clone()
            } else {
                "per-address".to_string()
            };
            metrics.count_rate_limited(label);
            return ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "over this node's limit of ids per second per client (`{}`); retry later",
                    if gate.credentials.is_some() {
                        key.as_str()
                    } else {
                        "by address"
                    }
                ),
            )
            .retry_after_ms(Some(retry_after_ms))
            .into_response();
        }
    }
    next.run(req).await
}

/// The peer's address as the limit keys it (an IPv6 host by its /64).
fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| address_key(c.0.addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost_of(uri: &str) -> u64 {
        cost(&Request::get(uri).body(axum::body::Body::empty()).unwrap())
    }

    /// Regression (review): `count=99999999999` cost 1e11 ids, passed on a full bucket and left
    /// every client behind the same address locked out for years, though the handler then
    /// refused it and issued nothing.
    #[test]
    fn a_request_costs_the_ids_it_may_get_and_a_malformed_count_costs_one() {
        assert_eq!(cost_of("/id"), 1);
        assert_eq!(cost_of("/ids?count=500"), 500);
        assert_eq!(cost_of("/ns/orders/ids?count=70&hop=1"), 70);
        assert_eq!(cost_of("/ns/orders/id?hop=1"), 1);
        for bad in ["99999999999", "100001", "0", "+5", "-1", "", "1e3"] {
            assert_eq!(cost_of(&format!("/ids?count={bad}")), 1, "count={bad}");
        }
    }
}
