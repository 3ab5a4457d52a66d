//! [`LeaseSecret`]: what authorises every fenced call of a lease.
//!
//! A fencing token orders grants (every grant's token is larger than every earlier one) and
//! is shown to operators in `GET /v1/hosts`; it says nothing about who may use a grant. The
//! lease secret does: the holder draws 128 random bits, sends them with its acquire (or
//! standby takeover), and presents them with every later call made under the lease —
//! renewals, reservation extensions, the release, counter blocks, namespace blocks and
//! returns. The coordinator keeps only a hash of it and compares in constant time, so
//! knowing a host id and its token is not enough to act for its holder.
//!
//! The secret never appears in a response, a log line, a metric or a status route: its
//! `Debug` form is redacted, and it has no `Display`.
//!
//! ```
//! use shardflake_proto::secret::LeaseSecret;
//! let s = LeaseSecret::from_bytes([0xab; 16]);
//! assert_eq!(s.expose().len(), 32);
//! assert_eq!(format!("{s:?}"), "LeaseSecret(<redacted>)");
//! let wire = serde_json::to_string(&s).unwrap();
//! let back: LeaseSecret = serde_json::from_str(&wire).unwrap();
//! assert_eq!(back, s);
//! assert!(serde_json::from_str::<LeaseSecret>(r#""too-short""#).is_err());
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of randomness in a secret.
pub const LEASE_SECRET_BYTES: usize = 16;
/// Characters of a secret on the wire: lowercase hexadecimal.
pub const LEASE_SECRET_HEX_LEN: usize = 2 * LEASE_SECRET_BYTES;

/// A lease's secret: 128 random bits as 32 lowercase hexadecimal digits.
///
/// `Default` is the empty secret, which no coordinator accepts: it exists so that request
/// types keep `..Default::default()` in tests, not as a usable value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LeaseSecret(String);

impl LeaseSecret {
    /// The secret made of `bytes` (drawn from a cryptographic random source by the holder).
    pub fn from_bytes(bytes: [u8; LEASE_SECRET_BYTES]) -> Self {
        let mut s = String::with_capacity(LEASE_SECRET_HEX_LEN);
        for b in bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Self(s)
    }

    /// Parses the wire form: exactly [`LEASE_SECRET_HEX_LEN`] lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        if Self::is_well_formed(text) {
            Ok(Self(text.to_string()))
        } else {
            Err(format!(
                "a lease secret is {LEASE_SECRET_HEX_LEN} lowercase hexadecimal digits ({} bits); got {} characters",
                LEASE_SECRET_BYTES * 8,
                text.len()
            ))
        }
    }

    /// Whether `text` is a secret's wire form.
    pub fn is_well_formed(text: &str) -> bool {
        text.len() == LEASE_SECRET_HEX_LEN && text.bytes().all(|b| HEX.contains(&b))
    }

    /// Whether this is a usable secret (not the empty `Default`).
    pub fn is_valid(&self) -> bool {
        Self::is_well_formed(&self.0)
    }

    /// The secret's text, for hashing by the coordinator. Never log or return it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl std::fmt::Debug for LeaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseSecret(<redacted>)")
    }
}

impl Serialize for LeaseSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LeaseSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for LeaseSecret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(format!("^[0-9a-f]{{{LEASE_SECRET_HEX_LEN}}}$")))
            .min_length(Some(LEASE_SECRET_HEX_LEN))
            .max_length(Some(LEASE_SECRET_HEX_LEN))
            .description(Some(
                "The lease's secret: 128 random bits drawn by the holder, as 32 lowercase hex digits. Sent with the acquire and every call under the lease; never shown by the coordinator.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for LeaseSecret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_32_lowercase_hex_digits_parse() {
        assert!(LeaseSecret::parse(&"0".repeat(32)).is_ok());
        assert!(LeaseSecret::parse(&"a".repeat(31)).is_err());
        assert!(LeaseSecret::parse(&"a".repeat(33)).is_err());
        assert!(LeaseSecret::parse(&"A".repeat(32)).is_err());
        assert!(LeaseSecret::parse(&"g".repeat(32)).is_err());
        assert!(!LeaseSecret::default().is_valid());
        assert!(LeaseSecret::from_bytes([7; 16]).is_valid());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = LeaseSecret::from_bytes([0x5a; 16]);
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("5a5a"), "{shown}");
    }
}
