//! Who is calling and what they may do: every protected request is authenticated against
//! the scoped credentials ([`Auth`]), counted against its credential's rate limit, and
//! checked against the scope its route needs ([`require`]). The [`Caller`] it resolves to
//! rides in the request's extensions, for the handlers' audit lines.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shardflake_proto::auth::Scope;
use shardflake_proto::{ApiError, ErrorCode};
use shardflake_runtime::credentials::{Credential, Credentials};
use shardflake_runtime::limit::{Decision, RateLimiter};
use shardflake_runtime::tls::Peer;

use super::AppState;
use crate::audit;

/// How the coordinator authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request is served (`--insecure-no-auth`, a trusted network only).
    Off,
    /// Requests need one of these credentials, and their scope decides what they may do.
    Credentials(Credentials),
}

impl Auth {
    /// Credentials from `(scope, token)` pairs given in code (tests, embedding); a token
    /// that is malformed or given twice is refused as the service's own sources are.
    pub fn tokens(
        tokens: &[(Scope, &str)],
    ) -> Result<Self, shardflake_runtime::credentials::CredentialsError> {
        let sources = tokens
            .iter()
            .map(|(scope, token)| {
                shardflake_runtime::credentials::CredentialSource::value(
                    *scope,
                    scope.token_env(),
                    token,
                )
            })
            .collect();
        Ok(Auth::Credentials(Credentials::load(sources)?))
    }
}

/// Requests per second allowed per credential, by scope (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Per read credential.
    pub read_per_s: u64,
    /// Per node credential (all nodes sharing one credential share its limit).
    pub node_per_s: u64,
    /// Per admin credential.
    pub admin_per_s: u64,
    /// Failed authentications per address (IPv6: per /64).
    pub auth_failures_per_s: u64,
}

/// Requests per second of one read credential by default.
pub const READ_PER_S_DEFAULT: u64 = 2_000;
/// Requests per second of one node credential by default: renewals, extensions and blocks
/// of a thousand nodes, with room for the burst after a failover.
pub const NODE_PER_S_DEFAULT: u64 = 50_000;
/// Requests per second of one admin credential by default.
pub const ADMIN_PER_S_DEFAULT: u64 = 200;

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            read_per_s: READ_PER_S_DEFAULT,
            node_per_s: NODE_PER_S_DEFAULT,
            admin_per_s: ADMIN_PER_S_DEFAULT,
            auth_failures_per_s: AUTH_FAILURES_PER_S_DEFAULT,
        }
    }
}

impl RateLimits {
    fn of(&self, scope: Scope) -> u64 {
        match scope {
            Scope::Read => self.read_per_s,
            Scope::Node => self.node_per_s,
            Scope::Admin => self.admin_per_s,
            // No coordinator accepts a client credential.
            Scope::Client => 0,
        }
    }
}

/// Failed authentications allowed per second per address (IPv6: per /64) by default before
/// the address is told to wait (`429`); a burst of as many may come at once.
pub const AUTH_FAILURES_PER_S_DEFAULT: u64 = 20;

/// One token bucket per credential name and scope (a second's worth of requests may come at
/// once), and one per address for failed authentications.
#[derive(Debug)]
pub(crate) struct Limiters {
    by_scope: Vec<(Scope, RateLimiter<String>)>,
    failures: Option<RateLimiter<Option<std::net::IpAddr>>>,
}

impl Limiters {
    pub(crate) fn new(limits: RateLimits) -> Self {
        let by_scope = Scope::COORDINATOR
            .into_iter()
            .filter(|s| limits.of(*s) > 0)
            .map(|s| (s, RateLimiter::new(limits.of(s), limits.of(s))))
            .collect();
        Self {
            by_scope,
            failures: (limits.auth_failures_per_s > 0)
                .then(|| RateLimiter::new(limits.auth_failures_per_s, limits.auth_failures_per_s)),
        }
    }

    /// Counts a failed authentication from `caller`'s address: the `429` to answer instead
    /// of the `401` once the address is over its failure rate.
    fn failed_from(&self, caller: &Caller) -> Option<Response> {
        let failures = self.failures.as_ref()?;
        let key = caller
            .peer
            .map(|a| shardflake_runtime::limit::address_key(a.ip()));
        match failures.check(&key, 1, tokio::time::Instant::now()) {
            Decision::Allowed => None,
            Decision::Limited { retry_after_ms } => Some(
                ApiError::new(
                    ErrorCode::RateLimited,
                    "too many requests without a valid credential from this address; retry later",
                )
                .retry_after_ms(Some(retry_after_ms))
                .into_response(),
            ),
        }
    }

    fn check(&self, c: &Credential) -> Decision {
        match self.by_scope.iter().find(|(s, _)| *s == c.scope) {
            Some((_, l)) => l.check(&c.name, 1, tokio::time::Instant::now()),
            None => Decision::Allowed,
        }
    }
}

/// Who made a request: the credential's name and scope (none with authentication off), the
/// peer's address and, with mutual TLS, the name on its certificate.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) credential: String,
    pub(crate) scope: Option<Scope>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) cert_name: Option<String>,
}

impl Caller {
    fn of(req: &Request, credential: Option<&Credential>) -> Self {
        let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
        Self {
            credential: credential
                .map_or_else(|| "insecure-no-auth".to_string(), |c| c.name.clone()),
            scope: credential.map(|c| c.scope),
            peer: peer.map(|p| p.addr),
            cert_name: peer.and_then(|p| p.cert_name.clone()),
        }
    }

    /// The peer's address for a log line, `-` when unknown (in-process tests).
    pub(crate) fn peer_text(&self) -> String {
        self.peer.map_or_else(|| "-".to_string(), |a| a.to_string())
    }

    /// The certificate name for a log line, `-` without mutual TLS.
    pub(crate) fn cert_text(&self) -> &str {
        self.cert_name.as_deref().unwrap_or("-")
    }
}

/// Authenticates a protected request and applies its credential's rate limit.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let credential = match &state.auth {
        Auth::Off => None,
        Auth::Credentials(creds) => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match creds.authenticate(header) {
                Ok(c) => Some(c),
                Err(failure) => {
                    let caller = Caller::of(&req, None);
                    let metrics = state.coordinator.metrics();
                    metrics
                        .auth_failures
                        .get_or_create(&[("reason", failure.as_str())])
                        .inc();
                    // Guessing costs: an address over its failure rate is told to wait,
                    // and its failures stop filling the audit trail.
                    if let Some(wait) = state.limiters.failed_from(&caller) {
                        return wait;
                    }
                    audit::auth_failed(&caller, failure.as_str(), req.method(), req.uri().path());
                    let message = match failure {
                        shardflake_runtime::credentials::AuthFailure::Missing => {
                            "missing `Authorization: Bearer <token>` header"
                        }
                        shardflake_runtime::credentials::AuthFailure::Unknown => {
                            "the bearer token is not a credential of this cluster"
                        }
                    };
                    return ApiError::new(ErrorCode::Unauthorized, message).into_response();
                }
            }
        }
    };
    if let Some(c) = &credential {
        let metrics = state.coordinator.metrics();
        let label = [("credential", c.name.clone())];
        metrics.requests.get_or_create(&label).inc();
        if let Decision::Limited { retry_after_ms } = state.limiters.check(c) {
            metrics.rate_limited.get_or_create(&label).inc();
            return ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "credential `{}` is over its limit of requests per second ({} scope); retry later",
                    c.name, c.scope
                ),
            )
            .retry_after_ms(Some(retry_after_ms))
            .into_response();
        }
    }
    let caller = Caller::of(&req, credential.as_ref());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    // Refusals that point at a caller acting for a lease it does not hold, or a holder
    // misreporting its block, go to the audit trail.
    if let Some(code) = resp.extensions().get::<ErrorCode>() {
        if matches!(
            code,
            ErrorCode::LeaseSecretMismatch | ErrorCode::StaleToken | ErrorCode::ReturnRefused
        ) {
            audit::refused(&caller, *code, &method, &path);
        }
    }
    resp
}

/// Refuses callers whose scope does not allow `needed` (`403 forbidden`); installed per
/// route group with `from_fn_with_state((state, scope), require)`.
pub(super) async fn require(
    State((state, needed)): State<(AppState, Scope)>,
    req: Request,
    next: Next,
) -> Response {
    let caller = req.extensions().get::<Caller>();
    if let Some(
        c @ Caller {
            scope: Some(scope), ..
        },
    ) = caller
    {
        if !scope.allows(needed) {
            audit::forbidden(c, needed, req.method(), req.uri().path());
            let metrics = state.coordinator.metrics();
            metrics
                .auth_failures
                .get_or_create(&[("reason", "scope")])
                .inc();
            return ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "credential `{}` has the {scope} scope; {} {} needs the {needed} scope",
                    c.credential,
                    req.method(),
                    req.uri().path()
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}
