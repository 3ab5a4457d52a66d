//! Credentials and what each may do: the scopes of the coordinator's API, and where every
//! shardflake program reads its credentials from.
//!
//! | scope | held by | may |
//! |---|---|---|
//! | [`Scope::Read`] | SDK clients, `shardflake fetch`/`audit`, dashboards, Prometheus | read: `/v1/cluster`, `/v1/routing`, `/v1/hosts`, `/v1/namespaces`, `/v1/audit`, `/metrics` |
//! | [`Scope::Node`] | generator nodes | read, and lease, renew, extend, release, take counter and namespace blocks, return |
//! | [`Scope::Admin`] | operators | read, and create or change namespaces |
//! | [`Scope::Client`] | applications (SDK, `fetch`), on nodes that require one | take ids from a node; nothing on a coordinator |
//!
//! A credential comes from an environment variable or a file, never from a flag's value (a
//! flag shows in `ps`). A file holds one credential per line (`TOKEN`, or `NAME TOKEN` to
//! give it a name for logs and metrics), so that while a credential is rotated the old and
//! the new one are both accepted; the services reload their files on `SIGHUP` and when they
//! change. An environment variable holds one value, or two separated by a comma.
//!
//! ```
//! use shardflake_proto::auth::Scope;
//! assert!(Scope::Node.allows(Scope::Read));
//! assert!(!Scope::Read.allows(Scope::Node));
//! assert!(!Scope::Node.allows(Scope::Admin));
//! assert!(!Scope::Client.allows(Scope::Read));
//! assert_eq!(Scope::Admin.token_env(), "SHARDFLAKE_ADMIN_TOKEN");
//! ```

use serde::{Deserialize, Serialize};

/// What a coordinator credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read the cluster's state.
    Read,
    /// Act as a generator node: leases, reservations, blocks, returns.
    Node,
    /// Administer: namespaces (and every read).
    Admin,
    /// Take ids from a node whose id endpoints require a client credential; no coordinator
    /// accepts it.
    Client,
}

impl Scope {
    /// The scopes a coordinator accepts, weakest first.
    pub const COORDINATOR: [Scope; 3] = [Scope::Read, Scope::Node, Scope::Admin];

    /// Whether a credential of this scope may make a request that needs `needed`: every
    /// coordinator scope reads; writing needs exactly the writing scope (an operator's
    /// credential takes no lease, a node's creates no namespace).
    pub fn allows(self, needed: Scope) -> bool {
        self == needed || (needed == Scope::Read && self != Scope::Client)
    }

    /// The scope's name as operators write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Node => "node",
            Scope::Admin => "admin",
            Scope::Client => "client",
        }
    }

    /// The environment variable that holds this scope's credential(s).
    pub fn token_env(self) -> &'static str {
        match self {
            Scope::Read => READ_TOKEN_ENV,
            Scope::Node => NODE_TOKEN_ENV,
            Scope::Admin => ADMIN_TOKEN_ENV,
            Scope::Client => CLIENT_TOKEN_ENV,
        }
    }

    /// The flag naming a file with this scope's credential(s).
    pub fn token_file_flag(self) -> &'static str {
        match self {
            Scope::Read => "--read-token-file",
            Scope::Node => "--node-token-file",
            Scope::Admin => "--admin-token-file",
            Scope::Client => "--client-token-file",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node credential: coordinators accept it, nodes send it.
pub const NODE_TOKEN_ENV: &str = "SHARDFLAKE_NODE_TOKEN";
/// The read credential: coordinators accept it, SDK clients, `fetch` and `audit` send it.
pub const READ_TOKEN_ENV: &str = "SHARDFLAKE_READ_TOKEN";
/// The admin credential: coordinators accept it, operators send it.
pub const ADMIN_TOKEN_ENV: &str = "SHARDFLAKE_ADMIN_TOKEN";
/// The optional client credential of a node's id endpoints: nodes accept it when set,
/// clients send it.
pub const CLIENT_TOKEN_ENV: &str = "SHARDFLAKE_CLIENT_TOKEN";
/// The single shared token of earlier versions, refused with a message naming its
/// replacements: one token that could both read and lease let every SDK user act as a node.
pub const LEGACY_CLUSTER_TOKEN_ENV: &str = "SHARDFLAKE_CLUSTER_TOKEN";

/// The shortest credential accepted, in bytes: shorter ones are guessable.
pub const TOKEN_BYTES_MIN: usize = 16;
/// The longest credential accepted, in bytes.
pub const TOKEN_BYTES_MAX: usize = 512;
/// Most credentials of one scope accepted at once (rotation needs two; names give teams
/// their own).
pub const TOKENS_PER_SCOPE_MAX: usize = 64;
/// The longest credential name, in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;
