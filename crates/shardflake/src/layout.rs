//! 64-bit id layouts: an ordered list of fields, a time unit and an epoch.
//!
//! Fields are listed from the most significant bit down. Bit 63 (the sign bit of an `i64`)
//! stays zero, so ids survive databases and languages that store them signed. The timestamp
//! field comes first so that ids sort by time; the sequence field may sit anywhere below it
//! (Sonyflake puts the machine id in the lowest bits).

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use crate::error::{DecodeError, LayoutError};

mod nodes;
mod presets;
mod spec;

pub use nodes::NodeId;
pub use presets::{
    TemporalWidths, JS_MAX_SAFE_INTEGER, PRESETS, SHARDFLAKE_EPOCH_MS,
    TEMPORAL_GRANULARITY_MS_DEFAULT, TEMPORAL_GRANULARITY_MS_MIN, TEMPORAL_LIFETIME_MS_MIN,
};

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Time since the epoch, in the layout's time unit (for temporal layouts: the shard index).
    Timestamp,
    /// A fixed value per generator: datacenter, worker, shard, host...
    Node,
    /// The per-tick sequence (or, in temporal layouts, the per-shard counter).
    Sequence,
}

/// Which generator issues a layout's ids, and what its timestamp and sequence fields mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LayoutKind {
    /// Snowflake family: the timestamp field holds time units since the epoch and the
    /// sequence restarts every tick ([`crate::SnowflakeGenerator`]).
    #[default]
    Snowflake,
    /// Temporal shards: the timestamp field holds the shard index and the sequence is a
    /// per-shard counter handed out in blocks ([`crate::TemporalGenerator`]).
    Temporal,
}

/// One field of a layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    name: String,
    bits: u32,
    kind: FieldKind,
    shift: u32,
}

impl Field {
    /// The field's name, as shown by `inspect`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }
    /// What the field holds.
    pub fn kind(&self) -> FieldKind {
        self.kind
    }
    /// Position of the field's lowest bit.
    pub fn shift(&self) -> u32 {
        self.shift
    }
    /// Largest value the field holds.
    pub fn max(&self) -> u64 {
        mask(self.bits)
    }
    /// Extracts this field from an id.
    #[inline]
    pub fn get(&self, id: u64) -> u64 {
        (id >> self.shift) & mask(self.bits)
    }
}

#[inline]
pub(crate) const fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The largest time unit a layout accepts: one week.
pub const TIME_UNIT_MS_MAX: u64 = 7 * 24 * 3_600_000;

/// A validated 64-bit layout.
///
/// ```
/// use shardflake::Layout;
/// let twitter = Layout::preset("twitter").unwrap();
/// // Twitter's epoch: 2010-11-04T01:42:54.657Z (twitter-archive/snowflake, IdWorker.scala).
/// assert_eq!(twitter.epoch_ms(), 1_288_834_974_657);
/// assert_eq!(twitter.field("sequence").unwrap().bits(), 12);
/// assert_eq!(twitter.overflow_time(), "2080-07-10T17:30:30.209Z");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    name: String,
    kind: LayoutKind,
    fields: Vec<Field>,
    time_unit_ms: u64,
    epoch_ms: u64,
    total_bits: u32,
    ts: usize,
    seq: usize,
}

/// Builds a custom [`Layout`]. Fields are added from the most significant bit down.
///
/// ```
/// use shardflake::LayoutBuilder;
/// let layout = LayoutBuilder::new("mine")
///     .timestamp("time", 40)
///     .node("region", 3)
///     .node("node", 7)
///     .sequence("seq", 13)
///     .epoch_ms(1_735_689_600_000)
///     .build()
///     .unwrap();
/// assert_eq!(layout.total_bits(), 63);
///
/// let err = LayoutBuilder::new("bad").timestamp("time", 41).node("node", 10).sequence("seq", 13)
///     .build().unwrap_err();
/// assert_eq!(err.to_string(), "fields use 64 bits in total; at most 63 are allowed (the sign bit stays 0)");
/// ```
#[derive(Debug, Clone)]
pub struct LayoutBuilder {
    name: String,
    kind: LayoutKind,
    fields: Vec<(String, u32, FieldKind)>,
    time_unit_ms: u64,
    epoch_ms: u64,
    max_total_bits: u32,
}

impl LayoutBuilder {
    /// Starts a layout called `name`, with a 1 ms unit and the Unix epoch.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: LayoutKind::Snowflake,
            fields: Vec::new(),
            time_unit_ms: 1,
            epoch_ms: 0,
            max_total_bits: 63,
        }
    }
    /// Adds the timestamp field (must be the first field).
    pub fn timestamp(mut self, name: impl Into<String>, bits: u32) -> Self {
        self.fields.push((name.into(), bits, FieldKind::Timestamp));
        self
    }
    /// Adds a node field.
    pub fn node(mut self, name: impl Into<String>, bits: u32) -> Self {
        self.fields.push((name.into(), bits, FieldKind::Node));
        self
    }
    /// Adds the sequence field.
    pub fn sequence(mut self, name: impl Into<String>, bits: u32) -> Self {
        self.fields.push((name.into(), bits, FieldKind::Sequence));
        self
    }
    /// Sets the time unit in milliseconds (1 by default; Sonyflake uses 10).
    pub fn time_unit_ms(mut self, unit_ms: u64) -> Self {
        self.time_unit_ms = unit_ms;
        self
    }
    /// Sets the epoch, Unix milliseconds.
    pub fn epoch_ms(mut self, epoch_ms: u64) -> Self {
        self.epoch_ms = epoch_ms;
        self
    }
    /// Sets which generator the layout is for ([`LayoutKind::Snowflake`] by default).
    pub fn kind(mut self, kind: LayoutKind) -> Self {
        self.kind = kind;
        self
    }
    /// Lets the fields use all 64 bits. Only for compatibility presets whose original
    /// scheme does so (Instagram): such ids exceed `i64::MAX` once the top timestamp bit is set.
    fn allow_sign_bit(mut self) -> Self {
        self.max_total_bits = 64;
        self
    }

    /// Validates and builds the layout.
    pub fn build(self) -> Result<Layout, LayoutError> {
        if self.time_unit_ms == 0 || self.time_unit_ms > TIME_UNIT_MS_MAX {
            return Err(LayoutError::TimeUnit {
                unit_ms: self.time_unit_ms,
                max_ms: TIME_UNIT_MS_MAX,
            });
        }
        let count = |k| self.fields.iter().filter(|f| f.2 == k).count();
        if count(FieldKind::Timestamp) != 1 {
            return Err(LayoutError::Structure(format!(
                "a layout needs exactly one timestamp field, found {}",
                count(FieldKind::Timestamp)
            )));
        }
        if count(FieldKind::Sequence) != 1 {
            return Err(LayoutError::Structure(format!(
                "a layout needs exactly one sequence field, found {}",
                count(FieldKind::Sequence)
            )));
        }
        if self.fields[0].2 != FieldKind::Timestamp {
            return Err(LayoutError::Structure(format!(
                "the timestamp field must come first (most significant), found `{}` first",
                self.fields[0].0
            )));
        }
        for (i, (name, bits, kind)) in self.fields.iter().enumerate() {
            if name.is_empty() {
                return Err(LayoutError::Structure("a field has an empty name".into()));
            }
            if self.fields[..i].iter().any(|f| &f.0 == name) {
                return Err(LayoutError::DuplicateField(name.clone()));
            }
            let (min, max) = match kind {
                // Below 20 bits a timestamp overflows within days even at 1 s units.
                FieldKind::Timestamp => (8, 48),
                FieldKind::Sequence => (1, 40),
                FieldKind::Node => (1, 32),
            };
            if *bits < min || *bits > max {
                return Err(LayoutError::FieldWidth {
                    field: name.clone(),
                    bits: *bits,
                    min,
                    max,
                });
            }
        }
        let total_bits: u32 = self.fields.iter().map(|f| f.1).sum();
        if total_bits > self.max_total_bits {
            return Err(LayoutError::TooWide {
                bits: total_bits,
                max: self.max_total_bits,
            });
        }
        let mut shift = total_bits;
        let fields: Vec<Field> = self
            .fields
            .into_iter()
            .map(|(name, bits, kind)| {
                shift -= bits;
                Field {
                    name,
                    bits,
                    kind,
                    shift,
                }
            })
            .collect();
        let ts = fields
            .iter()
            .position(|f| f.kind == FieldKind::Timestamp)
            .expect("checked above");
        let seq = fields
            .iter()
            .position(|f| f.kind == FieldKind::Sequence)
            .expect("checked above");
        Ok(Layout {
            name: self.name,
            kind: self.kind,
            fields,
            time_unit_ms: self.time_unit_ms,
            epoch_ms: self.epoch_ms,
            total_bits,
            ts,
            seq,
        })
    }
}

impl Layout {
    /// The layout's name (a preset name or the builder's name).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Which generator issues this layout's ids.
    pub fn kind(&self) -> LayoutKind {
        self.kind
    }
    /// True for temporal-shard layouts (`[shard][host][counter]`, counters from blocks).
    pub fn is_temporal(&self) -> bool {
        self.kind == LayoutKind::Temporal
    }

    /// Checks that the layout can issue ids at `now_ms` (Unix ms): its epoch has passed and
    /// its timestamp (or shard) field can still hold the current time.
    ///
    /// ```
    /// use shardflake::{Layout, LayoutError};
    /// let u = Layout::preset("uidgenerator").unwrap();
    /// let e = u.check_time(1_800_000_000_000).unwrap_err();
    /// assert_eq!(e.to_string(), "layout `uidgenerator` overflowed on 2024-11-20T21:24:16.000Z: \
    /// its timestamp field cannot hold the current time");
    /// assert!(Layout::preset("twitter").unwrap().check_time(1_800_000_000_000).is_ok());
    /// ```
    pub fn check_time(&self, now_ms: u64) -> Result<(), LayoutError> {
        if self.epoch_ms > now_ms {
            return Err(LayoutError::EpochInFuture {
                epoch_ms: self.epoch_ms,
                now_ms,
            });
        }
        if now_ms >= self.overflow_ms() {
            return Err(LayoutError::Expired {
                layout: self.name.clone(),
                overflow_at: self.overflow_time(),
            });
        }
        Ok(())
    }

    /// All fields, most significant first.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// The node fields, most significant first.
    pub fn node_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.kind == FieldKind::Node)
    }
    /// The timestamp field.
    pub fn timestamp_field(&self) -> &Field {
        &self.fields[self.ts]
    }
    /// The sequence field.
    pub fn sequence_field(&self) -> &Field {
        &self.fields[self.seq]
    }
    /// Time unit in milliseconds.
    pub fn time_unit_ms(&self) -> u64 {
        self.time_unit_ms
    }
    /// Epoch, Unix milliseconds.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }
    /// Sum of the field widths.
    pub fn total_bits(&self) -> u32 {
        self.total_bits
    }
    /// Ids per tick per generator: the sequence field's range.
    pub fn ids_per_tick(&self) -> u64 {
        self.sequence_field().max() + 1
    }

    /// Unix ms at which the timestamp field overflows (the first instant it cannot encode).
    pub fn overflow_ms(&self) -> u64 {
        let ticks = self.timestamp_field().max() as u128 + 1;
        (self.epoch_ms as u128 + ticks * self.time_unit_ms as u128).min(u64::MAX as u128) as u64
    }

    /// [`Layout::overflow_ms`] as RFC 3339 UTC.
    pub fn overflow_time(&self) -> String {
        format_rfc3339_ms(self.overflow_ms())
    }

    /// The tick (timestamp field value) of a Unix ms time, or `None` before the epoch.
    #[inline]
    pub fn tick_of(&self, unix_ms: u64) -> Option<u64> {
        unix_ms
            .checked_sub(self.epoch_ms)
            .map(|d| d / self.time_unit_ms)
    }

    /// The Unix ms at which a tick starts.
    #[inline]
    pub fn ms_of_tick(&self, tick: u64) -> u64 {
        self.epoch_ms
            .saturating_add(tick.saturating_mul(self.time_unit_ms))
    }

    /// Packs node field values into their bit positions.
    ///
    /// Every node field must be given exactly once; values are range-checked.
    ///
    /// ```
    /// use shardflake::Layout;
    /// let l = Layout::preset("twitter").unwrap();
    /// assert_eq!(l.node_bits(&[("datacenter", 1), ("worker", 2)]).unwrap(), (1 << 17) | (2 << 12));
    /// let err = l.node_bits(&[("datacenter", 32), ("worker", 0)]).unwrap_err();
    /// assert_eq!(err.to_string(), "field `datacenter`: value 32 is out of range 0..=31");
    /// ```
    pub fn node_bits(&self, values: &[(&str, u64)]) -> Result<u64, LayoutError> {
        for (name, _) in values {
            match self.field(name) {
                Some(f) if f.kind == FieldKind::Node => {}
                _ => {
                    let known: Vec<&str> = self.node_fields().map(|f| f.name()).collect();
                    return Err(LayoutError::UnknownField(format!(
                        "layout `{}` has no node field `{name}`; its node fields are: {}",
                        self.name,
                        known.join(", ")
                    )));
                }
            }
        }
        let mut bits = 0;
        for f in self.node_fields() {
            let given: Vec<u64> = values
                .iter()
                .filter(|(n, _)| *n == f.name)
                .map(|v| v.1)
                .collect();
            let value = match given.as_slice() {
                [v] => *v,
                [] => {
                    return Err(LayoutError::UnknownField(format!(
                        "layout `{}` needs a value for node field `{}` (0..={})",
                        self.name,
                        f.name,
                        f.max()
                    )))
                }
                _ => {
                    return Err(LayoutError::UnknownField(format!(
                        "node field `{}` is given more than once",
                        f.name
                    )))
                }
            };
            if value > f.max() {
                return Err(LayoutError::FieldValue {
                    field: f.name.clone(),
                    value,
                    max: f.max(),
                });
            }
            bits |= value << f.shift;
        }
        Ok(bits)
    }

    /// Composes an id from a tick, a sequence value and packed node bits.
    #[inline]
    pub fn compose(&self, tick: u64, sequence: u64, node_bits: u64) -> u64 {
        (tick << self.fields[self.ts].shift) | (sequence << self.fields[self.seq].shift) | node_bits
    }

    /// Splits an id into its fields.
    ///
    /// Discord's documented example snowflake (Discord API reference, "Snowflakes"):
    ///
    /// ```
    /// use shardflake::Layout;
    /// let d = Layout::preset("discord").unwrap().decode(175928847299117063).unwrap();
    /// assert_eq!(d.timestamp_ms, 1462015105796);
    /// assert_eq!(d.time, "2016-04-30T11:18:25.796Z");
    /// assert_eq!(d.field("worker"), Some(1));
    /// assert_eq!(d.field("process"), Some(0));
    /// assert_eq!(d.field("increment"), Some(7));
    /// ```
    pub fn decode(&self, id: u64) -> Result<Decoded, DecodeError> {
        if self.total_bits < 64 && id >> self.total_bits != 0 {
            return Err(DecodeError::TooWide {
                id,
                layout: self.name.clone(),
                bits: self.total_bits,
            });
        }
        let tick = self.timestamp_field().get(id);
        let timestamp_ms = self.ms_of_tick(tick);
        Ok(Decoded {
            id,
            fields: self
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.get(id)))
                .collect(),
            timestamp_ms,
            time: format_rfc3339_ms(timestamp_ms),
        })
    }
}

impl fmt::Display for Layout {
    /// `name: timestamp 41 | datacenter 5 | ... (unit 1 ms, epoch ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name)?;
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                write!(f, " | ")?;
            }
            write!(f, "{} {}", field.name, field.bits)?;
        }
        write!(
            f,
            " (unit {} ms, epoch {}, overflows {})",
            self.time_unit_ms,
            format_rfc3339_ms(self.epoch_ms),
            self.overflow_time()
        )
    }
}

/// An id split into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The id itself.
    pub id: u64,
    /// Every field by name, most significant first (the timestamp field holds ticks).
    pub fields: Vec<(String, u64)>,
    /// The timestamp as Unix milliseconds (start of the tick).
    pub timestamp_ms: u64,
    /// The timestamp as RFC 3339 UTC with milliseconds.
    pub time: String,
}

impl Decoded {
    /// The value of the field called `name`.
    pub fn field(&self, name: &str) -> Option<u64> {
        self.fields.iter().find(|f| f.0 == name).map(|f| f.1)
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision,
/// e.g. `2016-04-30T11:18:25.796Z`.
pub fn format_rfc3339_ms(unix_ms: u64) -> String {
    // humantime formats any SystemTime; beyond its range (year 9999) we print a marker.
    match UNIX_EPOCH.checked_add(Duration::from_millis(unix_ms)) {
        Some(t) if unix_ms < 253_402_300_800_000 => humantime::format_rfc3339_millis(t).to_string(),
        _ => format!("+{unix_ms}ms-after-1970"),
    }
}

/// Parses an RFC 3339 UTC time (`2025-01-01T00:00:00Z`) or a bare date (`2025-01-01`) into
/// Unix milliseconds.
pub fn parse_time_ms(s: &str) -> Result<u64, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map_err(|e| format!("`{s}` is not an RFC 3339 UTC time: {e}"))?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("`{s}` is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_and_names_its_fields() {
        type Expected<'a> = (&'a str, &'a [(&'a str, u32)], u64, u64);
        let expect: &[Expected] = &[
            (
                "twitter",
                &[
                    ("timestamp", 41),
                    ("datacenter", 5),
                    ("worker", 5),
                    ("sequence", 12),
                ],
                1,
                1_288_834_974_657,
            ),
            (
                "discord",
                &[
                    ("timestamp", 41),
                    ("worker", 5),
                    ("process", 5),
                    ("increment", 12),
                ],
                1,
                1_420_070_400_000,
            ),
            (
                "instagram",
                &[("timestamp", 41), ("shard", 13), ("sequence", 10)],
                1,
                1_314_220_021_721,
            ),
            (
                "sonyflake",
                &[("timestamp", 39), ("sequence", 8), ("machine", 16)],
                10,
                parse_time_ms("2014-09-01T00:00:00Z").unwrap(),
            ),
            (
                "sonyflake-v2",
                &[("timestamp", 39), ("sequence", 8), ("machine", 16)],
                10,
                parse_time_ms("2025-01-01").unwrap(),
            ),
            (
                "uidgenerator",
                &[("timestamp", 28), ("worker", 22), ("sequence", 13)],
                1000,
                parse_time_ms("2016-05-20").unwrap(),
            ),
            (
                "temporal",
                &[("shard", 20), ("host", 10), ("counter", 33)],
                3_600_000,
                parse_time_ms("2025-01-01").unwrap(),
            ),
            (
                "js-safe",
                &[("timestamp", 41), ("node", 6), ("sequence", 6)],
                1,
                parse_time_ms("2025-01-01").unwrap(),
            ),
        ];
        for (name, fields, unit, epoch) in expect {
            let l = Layout::preset(name).unwrap();
            let got: Vec<(&str, u32)> = l.fields().iter().map(|f| (f.name(), f.bits())).collect();
            assert_eq!(&got, fields, "{name}");
            assert_eq!(l.time_unit_ms(), *unit, "{name}");
            assert_eq!(l.epoch_ms(), *epoch, "{name}");
        }
    }

    #[test]
    fn twitter_epoch_is_the_published_one() {
        // twitter-archive/snowflake IdWorker.scala: `val twepoch = 1288834974657L`.
        let l = Layout::preset("twitter").unwrap();
        assert_eq!(format_rfc3339_ms(l.epoch_ms()), "2010-11-04T01:42:54.657Z");
        // The example in Twitter's developer docs ("Twitter IDs"): tweet 1050118621198921728
        // has `created_at` "Wed Oct 10 20:19:24 +0000 2018" (second precision).
        let d = l.decode(1_050_118_621_198_921_728).unwrap();
        assert!(d.time.starts_with("2018-10-10T20:19:24."), "{}", d.time);
    }

    #[test]
    fn overflow_dates() {
        assert_eq!(
            Layout::preset("default").unwrap().overflow_time(),
            "2094-09-07T15:47:35.552Z"
        );
        // Sonyflake documents a lifetime of 174 years from its start time.
        let s = Layout::preset("sonyflake").unwrap();
        let years = (s.overflow_ms() - s.epoch_ms()) as f64 / (365.25 * 86_400_000.0);
        assert!((174.0..175.0).contains(&years), "{years}");
        // UidGenerator documents about 8.7 years for 28 bits of seconds.
        let u = Layout::preset("uidgenerator").unwrap();
        let years = (u.overflow_ms() - u.epoch_ms()) as f64 / (365.25 * 86_400_000.0);
        assert!((8.5..8.6).contains(&years), "{years}");
    }

    #[test]
    fn validation_names_the_field_and_range() {
        let e = LayoutBuilder::new("x")
            .timestamp("t", 41)
            .node("n", 0)
            .sequence("s", 12)
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            LayoutError::FieldWidth {
                field: "n".into(),
                bits: 0,
                min: 1,
                max: 32
            }
        );
        let e = LayoutBuilder::new("x")
            .node("n", 10)
            .timestamp("t", 41)
            .sequence("s", 12)
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("timestamp field must come first"),
            "{e}"
        );
        let e = LayoutBuilder::new("x")
            .timestamp("t", 41)
            .sequence("t", 12)
            .build()
            .unwrap_err();
        assert_eq!(e, LayoutError::DuplicateField("t".into()));
        let e = LayoutBuilder::new("x")
            .timestamp("t", 41)
            .sequence("s", 12)
            .time_unit_ms(0)
            .build()
            .unwrap_err();
        assert!(matches!(e, LayoutError::TimeUnit { unit_ms: 0, .. }));
        let e = Layout::preset("snowflak").unwrap_err();
        assert!(
            e.to_string().contains("known layouts: default, twitter"),
            "{e}"
        );
    }

    #[test]
    fn decode_rejects_bits_above_the_layout() {
        let l = Layout::preset("twitter").unwrap();
        assert!(matches!(
            l.decode(1 << 63),
            Err(DecodeError::TooWide { .. })
        ));
        // Instagram uses all 64 bits, so nothing is too wide for it.
        assert!(Layout::preset("instagram")
            .unwrap()
            .decode(u64::MAX)
            .is_ok());
    }

    #[test]
    fn node_bits_require_every_field_once() {
        let l = Layout::preset("twitter").unwrap();
        assert!(l.node_bits(&[("worker", 1)]).is_err());
        assert!(l
            .node_bits(&[("worker", 1), ("datacenter", 1), ("worker", 2)])
            .is_err());
        assert!(l.node_bits(&[("machine", 1)]).is_err());
    }

    #[test]
    fn the_spec_is_a_fingerprint_that_rebuilds_the_layout() {
        let specs = PRESETS.iter().map(|p| p.to_string()).chain(
            [
                "uidgenerator:timestamp=30,worker=20,epoch=2025-01-01",
                "temporal:granularity=5s",
                "temporal:granularity=30m,host=12",
                "twitter:epoch=2020-01-01",
            ]
            .map(String::from),
        );
        let mut seen = std::collections::HashSet::new();
        for spec in specs {
            let l = Layout::from_spec(&spec).unwrap();
            let again = Layout::from_spec(&l.spec()).unwrap();
            assert_eq!(again, l, "{spec}");
            assert_eq!(again.spec(), l.spec(), "{spec}");
            assert_eq!(again.is_temporal(), spec.starts_with("temporal"), "{spec}");
            assert!(
                seen.insert(l.spec()),
                "two layouts share the fingerprint {}",
                l.spec()
            );
        }
    }

    #[test]
    fn node_ids_and_host_ids_are_one_mapping() {
        for name in PRESETS {
            let l = Layout::preset(name).unwrap();
            let machine = l.machine_field().unwrap();
            let machine_bits = machine.bits();
            for (m, dc) in [(0, 0), (1, 0), (machine.max(), 0), (3, 1)] {
                let dc = if l.datacenter_field().is_some() {
                    dc
                } else {
                    0
                };
                let m = m.min(machine.max());
                let from_ids = l.node_values_from_ids(Some(m), Some(dc)).unwrap();
                let host = (dc << machine_bits) | m;
                assert_eq!(from_ids, l.node_values_of_host(host).unwrap(), "{name}");
                assert_eq!(
                    from_ids.last().unwrap(),
                    &(machine.name().to_string(), m),
                    "{name}: the machine id sets the lowest node field"
                );
            }
        }
        let twitter = Layout::preset("twitter").unwrap();
        assert_eq!(twitter.datacenter_field().unwrap().name(), "datacenter");
        let e = twitter
            .node_values_from_ids(None, Some(32))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "datacenter id 32 is out of range 0..=31 for layout `twitter` (field `datacenter`)"
        );
        let sony = Layout::preset("sonyflake").unwrap();
        assert!(sony.node_values_from_ids(Some(1), Some(0)).is_ok());
        let e = sony
            .node_values_from_ids(Some(1), Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("datacenter id 2 is not used by layout `sonyflake`"),
            "{e}"
        );
    }

    #[test]
    fn granularity_flag_is_a_spec_override_for_temporal_layouts_only() {
        let a = Layout::from_spec_and_granularity("temporal:host=12", Some("30m")).unwrap();
        assert_eq!(
            a,
            Layout::from_spec("temporal:host=12,granularity=30m").unwrap()
        );
        assert_eq!(a.field("host").unwrap().bits(), 12);
        let e = Layout::from_spec_and_granularity("temporal", Some("10ms")).unwrap_err();
        assert!(
            e.to_string().contains("below the minimum of 1000 ms"),
            "{e}"
        );
        let e = Layout::from_spec_and_granularity("default", Some("1h")).unwrap_err();
        assert!(e.to_string().contains("temporal layouts only"), "{e}");
    }

    #[test]
    fn parse_time_accepts_dates_and_times() {
        assert_eq!(parse_time_ms("2025-01-01").unwrap(), SHARDFLAKE_EPOCH_MS);
        assert_eq!(
            parse_time_ms("2010-11-04T01:42:54.657Z").unwrap(),
            1_288_834_974_657
        );
        assert!(parse_time_ms("yesterday").is_err());
    }
}
