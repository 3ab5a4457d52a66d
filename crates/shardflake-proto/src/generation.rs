//! The store's generation: a number every write to a coordinator store raises, sent back and
//! forth in the [`GENERATION_HEADER`] header so that a store restored from a backup is
//! noticed instead of granting, a second time, values it already granted.
//!
//! Every coordinator response carries the store's current generation with a proof (an
//! HMAC under a key kept in the store, so only the store's own coordinators can mint one).
//! Nodes and SDK clients remember the highest stamp they have seen (a node keeps it in its
//! state file across restarts) and send it with every request. A coordinator whose store is
//! behind a stamp it can verify has been restored to an earlier state: it refuses to grant
//! until an operator repairs the store (`POST /v1/repair`), and a client refuses an answer
//! whose generation is below what it has seen.
//!
//! ```
//! use shardflake_proto::generation::GenerationStamp;
//! let s = GenerationStamp::parse(&format!("42.{}", "ab".repeat(32))).unwrap();
//! assert_eq!(s.generation, 42);
//! assert_eq!(GenerationStamp::parse(&s.to_string()).unwrap(), s);
//! assert!(GenerationStamp::parse("42").is_err());
//! assert!(GenerationStamp::parse("x.ab").is_err());
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The header of every coordinator request and response that carries a [`GenerationStamp`].
pub const GENERATION_HEADER: &str = "shardflake-generation";

/// Hex digits of a proof (an HMAC-SHA256).
pub const PROOF_HEX_LEN: usize = 64;

/// A store generation and its proof: `<generation>.<proof>` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationStamp {
    /// The generation: raised by every write to the store.
    pub generation: u64,
    /// HMAC-SHA256 of the store id and the generation under the store's key, lowercase hex.
    pub proof: String,
}

impl GenerationStamp {
    /// Parses `<generation>.<64 lowercase hex digits>`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (g, proof) = text
            .trim()
            .split_once('.')
            .ok_or_else(|| format!("{GENERATION_HEADER} `{text}` is not <generation>.<proof>"))?;
        let generation = g.parse::<u64>().map_err(|_| {
            format!("{GENERATION_HEADER}: generation `{g}` is not a decimal number")
        })?;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if proof.len() != PROOF_HEX_LEN || !proof.chars().all(hex) {
            return Err(format!(
                "{GENERATION_HEADER}: the proof must be {PROOF_HEX_LEN} lowercase hexadecimal digits"
            ));
        }
        Ok(Self {
            generation,
            proof: proof.to_string(),
        })
    }
}

impl fmt::Display for GenerationStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.proof)
    }
}

impl Serialize for GenerationStamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GenerationStamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GenerationStamp::parse(&text).map_err(serde::de::Error::custom)
    }
}
