//! Credentials: the bearer tokens a service accepts, each with a name and a [`Scope`], and
//! the one a client sends.
//!
//! A service reads its credentials from environment variables and files
//! ([`CredentialSource`]), never from flag values (flags show in `ps`). A file holds one
//! credential per line, `TOKEN` or `NAME TOKEN`; blank lines and lines starting with `#` are
//! skipped. While a credential is rotated, the file holds the old and the new one; the
//! service reloads its files on `SIGHUP` and when they change ([`crate::reload`]), so the old
//! one can be removed without a restart. A variable holds one token, or two separated by a
//! comma. A credential without a name is called after its scope and position (`node#1`):
//! names appear in logs, metrics and the audit trail; tokens never do.
//!
//! Checking a presented token hashes it (SHA-256) and compares the hash with every accepted
//! credential's hash in constant time, without stopping at a match, so the time taken says
//! nothing about which credential, or how much of one, was guessed.
//!
//! ```
//! use shardflake_proto::auth::Scope;
//! use shardflake_runtime::credentials::{AuthFailure, CredentialSource, Credentials};
//! let c = Credentials::load(vec![
//!     CredentialSource::value(Scope::Node, "SHARDFLAKE_NODE_TOKEN", "node-secret-0123456789"),
//!     CredentialSource::value(Scope::Read, "SHARDFLAKE_READ_TOKEN", "read-old-0123456789,read-new-0123456789"),
//! ])?;
//! assert_eq!(c.authenticate(Some("Bearer node-secret-0123456789")).unwrap().scope, Scope::Node);
//! assert_eq!(c.authenticate(Some("Bearer read-new-0123456789")).unwrap().name, "read#2");
//! assert_eq!(c.authenticate(Some("Bearer guess")), Err(AuthFailure::Unknown));
//! assert_eq!(c.authenticate(None), Err(AuthFailure::Missing));
//! # Ok::<(), shardflake_runtime::credentials::CredentialsError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::digest;
use shardflake_proto::auth::{
    Scope, TOKENS_PER_SCOPE_MAX, TOKEN_BYTES_MAX, TOKEN_BYTES_MIN, TOKEN_NAME_BYTES_MAX,
};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Who a request authenticated as: a credential's name and scope (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    /// The credential's name (`node#1`, or the name its file gives it).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token no credential has.
    Unknown,
}

impl AuthFailure {
    /// The reason as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Unknown => "unknown",
        }
    }
}

/// Why credentials could not be read. Messages name the variable or the file and line, never
/// the token.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A credential file could not be read.
    #[error("cannot read the credential file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A malformed credential.
    #[error("{origin}: {problem}")]
    Invalid {
        /// The variable, or the file and line.
        origin: String,
        /// What is wrong, without the token.
        problem: String,
    },
}

/// Where one scope's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSource {
    scope: Scope,
    origin: Origin,
}

#[derive(Clone, PartialEq, Eq)]
enum Origin {
    /// An environment variable's value (one token, or two separated by a comma).
    Value { var: String, value: String },
    /// A file, re-read on reload.
    File(PathBuf),
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The variable's name, never its value.
            Origin::Value { var, .. } => write!(f, "Value({var})"),
            Origin::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl CredentialSource {
    /// `scope`'s credentials from the value of variable `var`.
    pub fn value(scope: Scope, var: &str, value: &str) -> Self {
        Self {
            scope,
            origin: Origin::Value {
                var: var.to_string(),
                value: value.to_string(),
            },
        }
    }

    /// `scope`'s credentials from `path`, one per line.
    pub fn file(scope: Scope, path: impl Into<PathBuf>) -> Self {
        Self {
            scope,
            origin: Origin::File(path.into()),
        }
    }

    /// The scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The credentials this source holds now: `(name, token)` pairs.
    fn read(&self) -> Result<Vec<(String, String)>, CredentialsError> {
        match &self.origin {
            Origin::Value { var, value } => self.parse_value(var, value),
            Origin::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
                        path: path.clone(),
                        source,
                    })?;
                parse_file(self.scope.as_str(), path, &text)
            }
        }
    }

    fn parse_value(
        &self,
        var: &str,
        value: &str,
    ) -> Result<Vec<(String, String)>, CredentialsError> {
        let tokens: Vec<&str> = value.split(',').map(str::trim).collect();
        if tokens.len() > 2 {
            return Err(invalid(
                var.to_string(),
                format!(
                    "holds {} values; a variable holds one token, or two (old,new) while rotating; use {} for more",
                    tokens.len(),
                    self.scope.token_file_flag()
                ),
            ));
        }
        let mut out = Vec::new();
        for (i, token) in tokens.into_iter().enumerate() {
            check_token(token).map_err(|p| invalid(format!("{var} (value {})", i + 1), p))?;
            out.push((format!("{}#{}", self.scope, i + 1), token.to_string()));
        }
        Ok(out)
    }
}

fn invalid(origin: String, problem: String) -> CredentialsError {
    CredentialsError::Invalid { origin, problem }
}

/// A token must be long enough not to be guessed, and printable without spaces (it travels
/// in a header).
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < TOKEN_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
        return Err(format!(
            "a token is {TOKEN_BYTES_MIN}..={TOKEN_BYTES_MAX} bytes, this one has {}",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is printable ASCII without spaces".to_string());
    }
    Ok(())
}

/// A name must be short and plain. The error never repeats the name: a line written the
/// wrong way round (`TOKEN NAME`) would put the token there.
fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '#');
    if name.is_empty() || name.len() > TOKEN_NAME_BYTES_MAX || !name.chars().all(ok_char) {
        return Err(format!(
            "the line's first word is not a credential name (1..={TOKEN_NAME_BYTES_MAX} characters from [A-Za-z0-9._#-]); a line is `TOKEN` or `NAME TOKEN`"
        ));
    }
    Ok(())
}

/// The credentials a credential file's `text` holds, by name (what the services read from
/// `path`; public for the fuzz target). Errors name the file and line, never a token.
pub fn parse_text(prefix: &str, path: &Path, text: &str) -> Result<Vec<String>, CredentialsError> {
    Ok(parse_file(prefix, path, text)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Parses a credential file: `TOKEN` or `NAME TOKEN` per line; unnamed ones are called
/// `{prefix}#N`.
fn parse_file(
    prefix: &str,
    path: &Path,
    text: &str,
) -> Result<Vec<(String, String)>, CredentialsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = || format!("{} line {}", path.display(), i + 1);
        let mut words = line.split_whitespace();
        let (name, token) = match (words.next(), words.next(), words.next()) {
            (Some(token), None, _) => (format!("{prefix}#{}", out.len() + 1), token),
            (Some(name), Some(token), None) => (name.to_string(), token),
            _ => {
                return Err(invalid(
                    origin(),
                    "a line is `TOKEN` or `NAME TOKEN`".to_string(),
                ))
            }
        };
        check_name(&name).map_err(|p| invalid(origin(), p))?;
        check_token(token).map_err(|p| invalid(origin(), p))?;
        out.push((name, token.to_string()));
    }
    if out.is_empty() {
        return Err(invalid(
            path.display().to_string(),
            format!("holds no {prefix} credential"),
        ));
    }
    if out.len() > TOKENS_PER_SCOPE_MAX {
        return Err(invalid(
            path.display().to_string(),
            format!(
                "holds {} credentials; at most {TOKENS_PER_SCOPE_MAX}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// One accepted credential: its token's hash and who it is.
#[derive(Clone)]
struct Entry {
    hash: [u8; 32],
    credential: Credential,
}

fn hash(token: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Every credential a service accepts, by scope, reloadable from its sources.
#[derive(Clone)]
pub struct Credentials {
    sources: Arc<Vec<CredentialSource>>,
    entries: Arc<RwLock<Arc<Vec<Entry>>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and scopes only: not even the tokens' hashes.
        f.debug_struct("Credentials")
            .field("accepted", &self.names())
            .field("files", &self.files())
            .finish()
    }
}

impl Credentials {
    /// Reads every source. Fails naming the source on a malformed credential, a name used
    /// twice, or a token given to two credentials (which would make its scope ambiguous).
    pub fn load(sources: Vec<CredentialSource>) -> Result<Self, CredentialsError> {
        let entries = read_all(&sources)?;
        Ok(Self {
            sources: Arc::new(sources),
            entries: Arc::new(RwLock::new(Arc::new(entries))),
        })
    }

    /// Reads the sources again (files may have changed). On an error the credentials in use
    /// stay as they were.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        let entries = read_all(&self.sources)?;
        *self.entries.write().expect("credentials lock") = Arc::new(entries);
        Ok(())
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .filter_map(|s| match &s.origin {
                Origin::File(p) => Some(p.clone()),
                Origin::Value { .. } => None,
            })
            .collect()
    }

    /// Whether any credential of `scope` is accepted.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.current().iter().any(|e| e.credential.scope == scope)
    }

    /// Credentials accepted, by name and scope.
    pub fn names(&self) -> Vec<Credential> {
        self.current()
            .iter()
            .map(|e| e.credential.clone())
            .collect()
    }

    fn current(&self) -> Arc<Vec<Entry>> {
        self.entries.read().expect("credentials lock").clone()
    }

    /// Who the `Authorization` header value `header` authenticates as.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Credential, AuthFailure> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let given = hash(token.as_bytes());
        let entries = self.current();
        // Every entry is compared: no early exit on a match.
        let mut found: Option<&Entry> = None;
        for e in entries.iter() {
            if bool::from(e.hash.ct_eq(&given)) {
                found = Some(e);
            }
        }
        found
            .map(|e| e.credential.clone())
            .ok_or(AuthFailure::Unknown)
    }
}

fn read_all(sources: &[CredentialSource]) -> Result<Vec<Entry>, CredentialsError> {
    let mut entries: Vec<Entry> = Vec::new();
    for source in sources {
        for (name, token) in source.read()? {
            let h = hash(token.as_bytes());
            if let Some(other) = entries.iter().find(|e| e.hash == h) {
                return Err(invalid(
                    format!("{name} ({})", source.scope),
                    format!(
                        "has the same token as {} ({}); every credential needs its own token",
                        other.credential.name, other.credential.scope
                    ),
                ));
            }
            if entries.iter().any(|e| e.credential.name == name) {
                return Err(invalid(
                    format!("{name} ({})", source.scope),
                    "the name is used twice".to_string(),
                ));
            }
            entries.push(Entry {
                hash: h,
                credential: Credential {
                    name,
                    scope: source.scope,
                },
            });
        }
    }
    Ok(entries)
}

/// The token a client sends as `Authorization: Bearer ...`: a variable's value, or the first
/// credential of a file (re-read on [`BearerToken::reload`], so a rotated file is picked up
/// without a restart).
#[derive(Clone)]
pub struct BearerToken {
    file: Option<PathBuf>,
    header: Arc<RwLock<String>>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// A fixed token (from a variable, or given in code).
    pub fn fixed(token: &str) -> Self {
        Self {
            file: None,
            header: Arc::new(RwLock::new(format!("Bearer {}", token.trim()))),
        }
    }

    /// The first credential of `path`.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, CredentialsError> {
        let path = path.into();
        let token = first_token(&path)?;
        Ok(Self {
            file: Some(path),
            header: Arc::new(RwLock::new(format!("Bearer {token}"))),
        })
    }

    /// The token from `file` if given, else from variable `var` if set (its first value),
    /// else none. A file and a set variable at once is refused: which one wins would be a
    /// guess.
    pub fn from_env_or_file(
        var: &str,
        value: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, CredentialsError> {
        match (value.filter(|v| !v.trim().is_empty()), file) {
            (Some(_), Some(f)) => Err(invalid(
                var.to_string(),
                format!(
                    "is set and a token file ({}) is given; use one",
                    f.display()
                ),
            )),
            (None, Some(f)) => Self::from_file(f).map(Some),
            (Some(v), None) => {
                let first = v.split(',').next().unwrap_or_default().trim();
                check_token(first).map_err(|p| invalid(var.to_string(), p))?;
                Ok(Some(Self::fixed(first)))
            }
            (None, None) => Ok(None),
        }
    }

    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        self.header.read().expect("token lock").clone()
    }

    /// The file the token comes from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the file again; a fixed token stays as it is.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        if let Some(path) = &self.file {
            let token = first_token(path)?;
            *self.header.write().expect("token lock") = format!("Bearer {token}");
        }
        Ok(())
    }
}

fn first_token(path: &Path) -> Result<String, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let entries = parse_file("token", path, &text)?;
    Ok(entries
        .into_iter()
        .next()
        .map(|(_, t)| t)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "node-token-0123456789";

    #[test]
    fn files_hold_named_and_unnamed_credentials_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.tokens");
        std::fs::write(
            &path,
            "# dashboards\nold-read-token-0123456789\n\nteam-a new-read-token-0123456789\n",
        )
        .unwrap();
        let c = Credentials::load(vec![
            CredentialSource::file(Scope::Read, &path),
            CredentialSource::value(Scope::Node, "V", NODE),
        ])
        .unwrap();
        let who = |t: &str| c.authenticate(Some(&format!("Bearer {t}")));
        assert_eq!(who("old-read-token-0123456789").unwrap().name, "read#1");
        assert_eq!(who("new-read-token-0123456789").unwrap().name, "team-a");
        assert_eq!(who(NODE).unwrap().scope, Scope::Node);
        // Rotation: the old token is removed from the file; after a reload it is refused.
        std::fs::write(&path, "team-a new-read-token-0123456789\n").unwrap();
        c.reload().unwrap();
        assert_eq!(who("old-read-token-0123456789"), Err(AuthFailure::Unknown));
        assert!(who("new-read-token-0123456789").is_ok());
        // A broken file keeps what was accepted, and the error names the line.
        std::fs::write(&path, "a b c\n").unwrap();
        let e = c.reload().unwrap_err().to_string();
        assert!(e.contains("read.tokens line 1"), "{e}");
        assert!(who("new-read-token-0123456789").is_ok());
    }

    #[test]
    fn malformed_credentials_are_named_without_the_token() {
        let e = Credentials::load(vec![CredentialSource::value(
            Scope::Node,
            "SHARDFLAKE_NODE_TOKEN",
            "short",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SHARDFLAKE_NODE_TOKEN") && e.contains("16..=512"),
            "{e}"
        );
        assert!(!e.contains("short"), "{e}");
        let e = Credentials::load(vec![
            CredentialSource::value(Scope::Node, "A", NODE),
            CredentialSource::value(Scope::Admin, "B", NODE),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("same token as node#1"), "{e}");
        assert!(!e.contains(NODE), "{e}");
        let three = format!("{NODE}1,{NODE}2,{NODE}3");
        assert!(
            Credentials::load(vec![CredentialSource::value(Scope::Node, "A", &three)]).is_err()
        );
        let with_space = "token with spaces 0123456789";
        assert!(
            Credentials::load(vec![CredentialSource::value(Scope::Node, "A", with_space)]).is_err()
        );
    }

    #[test]
    fn a_line_the_wrong_way_round_is_refused_without_echoing_the_token() {
        let e = parse_text(
            "read",
            Path::new("r.tokens"),
            "a-secret-token-0123456789 dashboards!",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("r.tokens line 1"), "{e}");
        assert!(!e.contains("a-secret-token"), "{e}");
    }

    #[test]
    fn debug_forms_show_names_never_tokens() {
        let source = CredentialSource::value(Scope::Node, "SHARDFLAKE_NODE_TOKEN", NODE);
        let c = Credentials::load(vec![source.clone()]).unwrap();
        let shown = format!("{source:?} {c:?}");
        assert!(
            shown.contains("SHARDFLAKE_NODE_TOKEN") && shown.contains("node#1"),
            "{shown}"
        );
        assert!(!shown.contains(NODE), "{shown}");
    }

    #[test]
    fn only_a_bearer_header_with_a_known_token_authenticates() {
        let c = Credentials::load(vec![CredentialSource::value(Scope::Admin, "A", NODE)]).unwrap();
        assert_eq!(c.authenticate(Some(NODE)), Err(AuthFailure::Missing));
        assert_eq!(c.authenticate(Some("Bearer ")), Err(AuthFailure::Missing));
        assert_eq!(
            c.authenticate(Some(&format!("Bearer {NODE}x"))),
            Err(AuthFailure::Unknown)
        );
        assert!(c.has_scope(Scope::Admin) && !c.has_scope(Scope::Read));
    }

    #[test]
    fn a_client_token_comes_from_one_place_and_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.token");
        std::fs::write(&path, "a-first-token-0123456789\n").unwrap();
        assert!(BearerToken::from_env_or_file("V", Some(NODE), Some(&path)).is_err());
        let t = BearerToken::from_env_or_file("V", None, Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(t.header(), "Bearer a-first-token-0123456789");
        std::fs::write(&path, "rotated-token-0123456789\n").unwrap();
        t.reload().unwrap();
        assert_eq!(t.header(), "Bearer rotated-token-0123456789");
        let v = BearerToken::from_env_or_file(
            "V",
            Some(&format!("{NODE},other-token-0123456789")),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(v.header(), format!("Bearer {NODE}"));
        assert!(BearerToken::from_env_or_file("V", None, None)
            .unwrap()
            .is_none());
        assert!(!format!("{v:?}").contains(NODE));
    }
}
