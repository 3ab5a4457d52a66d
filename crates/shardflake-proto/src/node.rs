//! What a generator node (`shardflake serve`) answers.
//!
//! | request | success |
//! |---|---|
//! | `GET /id` | `200` [`IdResponse`]: `{"id": 1, "id_str": "1"}` |
//! | `GET /ids?count=N` | `200` [`IdsResponse`] (JSON), or packed 8-byte big-endian ids (`Accept: application/octet-stream`), or one decimal id per line (`Accept: text/plain`) |
//! | `GET /inspect/{id}` | `200` the object of [`inspect_json`] |
//! | `GET /healthz` | `200` [`HealthResponse`] while the process runs |
//! | `GET /readyz` | `200` or `503` [`ReadyResponse`]: may the node issue ids now, and if not, why |
//! | `GET /metrics` | `200` OpenMetrics text format 1.0.0 (Prometheus scrapes it natively) |
//!
//! Every JSON id is also given as a decimal string (`id_str`, `ids_str`): JSON numbers above
//! 2^53 lose precision in JavaScript, as Twitter's API documents for its own ids.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shardflake::{Decoded, Layout};

use crate::error::ErrorDetail;

/// Path of the single-id endpoint.
pub const PATH_ID: &str = "/id";
/// Path of the batch endpoint.
pub const PATH_IDS: &str = "/ids";
/// Path prefix of the decode endpoint (`/inspect/{id}`).
pub const PATH_INSPECT: &str = "/inspect";
/// Path of the liveness probe.
pub const PATH_HEALTHZ: &str = "/healthz";
/// Path of the readiness probe.
pub const PATH_READYZ: &str = "/readyz";
/// Path of the Prometheus metrics.
pub const PATH_METRICS: &str = "/metrics";

/// The largest `count` `GET /ids` accepts.
pub const IDS_COUNT_MAX: u64 = 100_000;

/// Media type of JSON bodies.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Media type of packed binary ids: 8 bytes per id, big-endian, no header.
pub const CONTENT_TYPE_BINARY: &str = "application/octet-stream";
/// Media type of text ids: one decimal id per line, each line ending in `\n`.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Media type of the metrics.
pub const CONTENT_TYPE_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bytes per id in the binary representation.
pub const BINARY_ID_BYTES: usize = 8;

/// `GET /id`.
///
/// ```
/// use shardflake_proto::node::IdResponse;
/// let r = IdResponse::new(1_050_118_621_198_921_728);
/// assert_eq!(
///     serde_json::to_string(&r).unwrap(),
///     r#"{"id":1050118621198921728,"id_str":"1050118621198921728"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdResponse {
    /// The id as a JSON number.
    pub id: u64,
    /// The same id as a decimal string.
    pub id_str: String,
}

impl IdResponse {
    /// The response for `id`.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            id_str: id.to_string(),
        }
    }
}

/// `GET /ids` as JSON: the same ids twice, as numbers and as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdsResponse {
    /// The ids, increasing.
    pub ids: Vec<u64>,
    /// The same ids as decimal strings.
    pub ids_str: Vec<String>,
}

impl IdsResponse {
    /// The response for `ids`.
    pub fn new(ids: Vec<u64>) -> Self {
        let ids_str = ids.iter().map(u64::to_string).collect();
        Self { ids, ids_str }
    }
}

/// Appends `{"id":ID,"id_str":"ID"}` to `out`: the exact bytes serde would write for
/// [`IdResponse`], without building the string field.
///
/// ```
/// let mut out = Vec::new();
/// shardflake_proto::node::write_id_json(&mut out, 42);
/// assert_eq!(out, br#"{"id":42,"id_str":"42"}"#);
/// ```
pub fn write_id_json(out: &mut Vec<u8>, id: u64) {
    let mut b = itoa::Buffer::new();
    let digits = b.format(id).as_bytes();
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(digits);
    out.extend_from_slice(b",\"id_str\":\"");
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\"}");
}

/// Appends the [`IdsResponse`] JSON for `ids` to `out`, byte for byte what serde would write.
///
/// ```
/// let mut out = Vec::new();
/// shardflake_proto::node::write_ids_json(&mut out, &[7, 8]);
/// assert_eq!(out, br#"{"ids":[7,8],"ids_str":["7","8"]}"#);
/// ```
pub fn write_ids_json(out: &mut Vec<u8>, ids: &[u64]) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b"{\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b.format(*id).as_bytes());
    }
    out.extend_from_slice(b"],\"ids_str\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(b.format(*id).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
}

/// Upper bound of the bytes [`write_ids_json`] writes for `count` ids (20 digits each).
pub fn ids_json_len_max(count: usize) -> usize {
    // Per id: 20 digits and a comma as a number, 20 digits, two quotes and a comma as a string.
    32 + count * (21 + 23)
}

/// Appends one decimal id per line to `out` (the `text/plain` representation).
///
/// ```
/// let mut out = Vec::new();
/// shardflake_proto::node::write_ids_text(&mut out, &[7, 8]);
/// assert_eq!(out, b"7\n8\n");
/// ```
pub fn write_ids_text(out: &mut Vec<u8>, ids: &[u64]) {
    let mut b = itoa::Buffer::new();
    for id in ids {
        out.extend_from_slice(b.format(*id).as_bytes());
        out.push(b'\n');
    }
}

/// Parses the binary representation: packed 8-byte big-endian ids.
///
/// ```
/// let ids = shardflake_proto::node::parse_ids_binary(&[0, 0, 0, 0, 0, 0, 1, 2]).unwrap();
/// assert_eq!(ids, [258]);
/// assert!(shardflake_proto::node::parse_ids_binary(&[1, 2, 3]).is_err());
/// ```
pub fn parse_ids_binary(body: &[u8]) -> Result<Vec<u64>, String> {
    if !body.len().is_multiple_of(BINARY_ID_BYTES) {
        return Err(format!(
            "binary id body has {} bytes, not a multiple of {BINARY_ID_BYTES}",
            body.len()
        ));
    }
    Ok(body
        .chunks_exact(BINARY_ID_BYTES)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunk of 8")))
        .collect())
}

/// Parses the text representation: one decimal id per line.
pub fn parse_ids_text(body: &str) -> Result<Vec<u64>, String> {
    body.lines()
        .map(|l| {
            l.parse::<u64>()
                .map_err(|e| format!("`{l}` is not a decimal u64: {e}"))
        })
        .collect()
}

/// The `GET /inspect/{id}` body, one JSON object with the keys in this order: `id`, `id_str`,
/// `layout`, `timestamp_ms` (Unix ms), `time` (RFC 3339 UTC, ms), then every field under its
/// layout name, most significant first. Byte for byte what `shardflake inspect --json` prints
/// for the same id (without the newline).
///
/// ```
/// use shardflake::Layout;
/// let layout = Layout::preset("discord").unwrap();
/// let json = shardflake_proto::node::inspect_json(&layout, &layout.decode(175928847299117063).unwrap());
/// assert_eq!(
///     json,
///     r#"{"id":175928847299117063,"id_str":"175928847299117063","layout":"discord","timestamp_ms":1462015105796,"time":"2016-04-30T11:18:25.796Z","timestamp":41944705796,"worker":1,"process":0,"increment":7}"#
/// );
/// ```
pub fn inspect_json(layout: &Layout, decoded: &Decoded) -> String {
    fn key(out: &mut String, k: &str) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("a str serializes"));
        out.push(':');
    }
    let mut b = itoa::Buffer::new();
    let mut out = String::with_capacity(256);
    out.push('{');
    key(&mut out, "id");
    out.push_str(b.format(decoded.id));
    key(&mut out, "id_str");
    out.push('"');
    out.push_str(b.format(decoded.id));
    out.push('"');
    key(&mut out, "layout");
    out.push_str(&serde_json::to_string(layout.name()).expect("a str serializes"));
    key(&mut out, "timestamp_ms");
    out.push_str(b.format(decoded.timestamp_ms));
    key(&mut out, "time");
    out.push_str(&serde_json::to_string(&decoded.time).expect("a str serializes"));
    for (name, value) in &decoded.fields {
        key(&mut out, name);
        out.push_str(b.format(*value));
    }
    out.push('}');
    out
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// Always `"ok"`: an answer at all means the process is alive.
    pub status: String,
}

/// How the node holds its node id and reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeMode {
    /// Static node id from flags or the environment; reservation in a local state file.
    Standalone,
    /// Node id leased from the coordinator, which persists the reservation.
    Cluster,
}

/// `GET /readyz`: `200` with `ready: true` while the node may issue ids, else `503` with an
/// `error` object (the same `{code, message}` as every error body) saying why.
///
/// ```
/// use shardflake_proto::{node::ReadyResponse, ErrorCode};
/// let r: ReadyResponse = serde_json::from_str(r#"{
///     "ready": false,
///     "error": {"code": "clock_behind", "message": "clock is 3600000 ms behind"},
///     "mode": "standalone", "layout": "twitter", "node": {"datacenter": 0, "worker": 1},
///     "clock_behind_ms": 3600000
/// }"#).unwrap();
/// assert_eq!(r.error.unwrap().code, ErrorCode::ClockBehind);
/// assert_eq!(r.clock_behind_ms, Some(3_600_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyResponse {
    /// May the node issue ids now?
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// Standalone or cluster.
    pub mode: NodeMode,
    /// The layout's name.
    pub layout: String,
    /// The node field values, by field name.
    pub node: Map<String, Value>,
    /// The durable reservation bound, Unix ms (timestamp layouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until_ms: Option<u64>,
    /// Reserved time left above the later of the wall clock and the last issued timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom_ms: Option<u64>,
    /// The tick of the last issued id (or the start bound before the first), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued_ms: Option<u64>,
    /// How far the wall clock is behind the bound the node must stay above, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_behind_ms: Option<u64>,
    /// How far issued timestamps run ahead of the wall clock (borrowing), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowed_ahead_ms: Option<u64>,
    /// Temporal layout: the shard ids are issued in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u64>,
    /// Temporal layout: counter values left in the current block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_remaining: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_json_matches_serde() {
        for id in [0, 1, 9, 10, u64::MAX, 1_050_118_621_198_921_728] {
            let mut out = Vec::new();
            write_id_json(&mut out, id);
            assert_eq!(out, serde_json::to_vec(&IdResponse::new(id)).unwrap());
        }
        for ids in [vec![], vec![5], vec![1, u64::MAX, 300]] {
            let mut out = Vec::new();
            write_ids_json(&mut out, &ids);
            assert!(out.len() <= ids_json_len_max(ids.len()));
            assert_eq!(out, serde_json::to_vec(&IdsResponse::new(ids)).unwrap());
        }
    }

    #[test]
    fn text_and_binary_round_trip() {
        let ids = [0, 1, 255, 256, u64::MAX];
        let mut text = Vec::new();
        write_ids_text(&mut text, &ids);
        assert_eq!(
            parse_ids_text(std::str::from_utf8(&text).unwrap()).unwrap(),
            ids
        );
        let bin: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(parse_ids_binary(&bin).unwrap(), ids);
        assert!(parse_ids_text("12\nx\n").is_err());
    }
}
