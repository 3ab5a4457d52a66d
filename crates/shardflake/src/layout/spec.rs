//! Layout specs: a preset with overrides (`temporal:granularity=5s`), and the fingerprint that
//! names every width, the unit and the epoch.

use super::presets::TEMPORAL_GRANULARITY_MS_MIN;
use super::{parse_time_ms, FieldKind, Layout, LayoutBuilder, LayoutKind, TemporalWidths};
use crate::error::LayoutError;

impl Layout {
    /// Parses a layout spec: a preset name, optionally followed by `:` and comma-separated
    /// overrides — a field's width by the field's name (`worker=21`), `epoch=` (a date, an
    /// RFC 3339 time or Unix ms), `unit_ms=`, and `granularity=` (a duration such as `5s`,
    /// `30m`, `1h`; the time unit, meant for `temporal`).
    ///
    /// Baidu UidGenerator's default 28 bits of seconds from 2016-05-20 ran out on
    /// 2024-11-20; its users move the epoch and widen the time field, and so can you:
    ///
    /// ```
    /// use shardflake::Layout;
    /// let l = Layout::from_spec("uidgenerator:timestamp=30,worker=20,epoch=2025-01-01").unwrap();
    /// assert_eq!(l.field("worker").unwrap().bits(), 20);
    /// assert_eq!(l.overflow_time(), "2059-01-10T13:37:04.000Z");
    /// let t = Layout::from_spec("temporal:granularity=5s").unwrap();
    /// assert_eq!(t.time_unit_ms(), 5_000);
    /// assert_eq!(t.field("shard").unwrap().bits(), 30); // sized to last 100 years
    /// assert_eq!(t.overflow_time(), "2195-02-16T20:05:20.000Z");
    /// assert!(Layout::from_spec("twitter:color=3").is_err());
    /// ```
    pub fn from_spec(spec: &str) -> Result<Layout, LayoutError> {
        let (name, overrides) = match spec.split_once(':') {
            Some((name, rest)) => (name.trim(), rest),
            None => return Layout::preset(spec.trim()),
        };
        let base = Layout::preset(name)?;
        let bad = |reason: String| LayoutError::Spec {
            spec: spec.to_string(),
            reason,
        };
        let mut fields: Vec<(String, u32, FieldKind)> = base
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.bits, f.kind))
            .collect();
        let mut epoch_ms = base.epoch_ms;
        let mut unit_ms = base.time_unit_ms;
        for item in overrides
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("`{item}` is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "epoch" => {
                    epoch_ms = match value.parse::<u64>() {
                        Ok(ms) => ms,
                        Err(_) => parse_time_ms(value).map_err(bad)?,
                    }
                }
                "unit_ms" => {
                    unit_ms = value
                        .parse()
                        .map_err(|_| bad(format!("unit_ms `{value}` is not a whole number")))?
                }
                "granularity" => {
                    let d = humantime::parse_duration(value)
                        .map_err(|e| bad(format!("granularity `{value}`: {e}")))?;
                    if d.subsec_nanos() % 1_000_000 != 0 {
                        return Err(bad(format!(
                            "granularity `{value}` is not a whole number of milliseconds"
                        )));
                    }
                    unit_ms = d.as_millis() as u64;
                }
                field => {
                    let slot = fields.iter_mut().find(|f| f.0 == field).ok_or_else(|| {
                        let names: Vec<&str> = base.fields.iter().map(|f| f.name()).collect();
                        bad(format!(
                            "unknown key `{field}`; keys are epoch, unit_ms, granularity and the field names {}",
                            names.join(", ")
                        ))
                    })?;
                    slot.1 = value.parse().map_err(|_| {
                        bad(format!("width of `{field}`: `{value}` is not a number"))
                    })?;
                }
            }
        }
        if base.kind == LayoutKind::Temporal && unit_ms != base.time_unit_ms {
            if unit_ms < TEMPORAL_GRANULARITY_MS_MIN {
                return Err(bad(format!(
                    "a shard granularity of {unit_ms} ms is below the minimum of \
                     {TEMPORAL_GRANULARITY_MS_MIN} ms"
                )));
            }
            // A different shard length needs different widths to last; fields given
            // explicitly in the spec keep their widths.
            let auto = TemporalWidths::for_granularity(unit_ms);
            let given = |name: &str| {
                overrides
                    .split(',')
                    .any(|i| i.split_once('=').is_some_and(|(k, _)| k.trim() == name))
            };
            // Shard and host take their given or sized widths; the counter, unless given,
            // takes what is left of 63 bits.
            let mut used = 0;
            for (name, bits, kind) in fields.iter_mut() {
                if *kind == FieldKind::Sequence || given(name) {
                    continue;
                }
                *bits = match kind {
                    FieldKind::Timestamp => auto.shard_bits,
                    _ => auto.host_bits,
                };
            }
            for (_, bits, kind) in fields.iter() {
                if *kind != FieldKind::Sequence {
                    used += *bits;
                }
            }
            for (name, bits, kind) in fields.iter_mut() {
                if *kind == FieldKind::Sequence && !given(name) {
                    *bits = 63u32.saturating_sub(used).clamp(1, 40);
                }
            }
        }
        let mut b = LayoutBuilder::new(base.name.clone())
            .kind(base.kind)
            .epoch_ms(epoch_ms)
            .time_unit_ms(unit_ms);
        b.fields = fields;
        if base.total_bits == 64 {
            b = b.allow_sign_bit();
        }
        b.build()
    }

    /// The layout's fingerprint: a spec naming every field width, the time unit and the
    /// epoch, so that two layouts with the same spec issue the same ids and
    /// [`Layout::from_spec`] rebuilds the layout from it exactly.
    ///
    /// Nodes and coordinators compare fingerprints, not names: `temporal` with 1 h shards and
    /// `temporal` with 5 s shards share a name but no ids.
    ///
    /// ```
    /// use shardflake::Layout;
    /// let t = Layout::from_spec("temporal:granularity=5s").unwrap();
    /// assert_eq!(t.spec(), "temporal:shard=30,host=10,counter=23,unit_ms=5000,epoch=1735689600000");
    /// assert_eq!(Layout::from_spec(&t.spec()).unwrap(), t);
    /// assert_ne!(t.spec(), Layout::preset("temporal").unwrap().spec());
    /// ```
    pub fn spec(&self) -> String {
        let mut s = format!("{}:", self.name);
        for f in &self.fields {
            s.push_str(&format!("{}={},", f.name, f.bits));
        }
        s.push_str(&format!(
            "unit_ms={},epoch={}",
            self.time_unit_ms, self.epoch_ms
        ));
        s
    }

    /// [`Layout::from_spec`], with a shard granularity given on its own (`--shard-granularity
    /// 5s`, as a duration): the same as adding `granularity=5s` to the spec. A granularity
    /// for a layout that is not temporal is an error.
    ///
    /// ```
    /// use shardflake::Layout;
    /// let a = Layout::from_spec_and_granularity("temporal", Some("5s")).unwrap();
    /// assert_eq!(a, Layout::from_spec("temporal:granularity=5s").unwrap());
    /// assert!(Layout::from_spec_and_granularity("twitter", Some("5s")).is_err());
    /// ```
    pub fn from_spec_and_granularity(
        spec: &str,
        granularity: Option<&str>,
    ) -> Result<Layout, LayoutError> {
        let Some(g) = granularity else {
            return Layout::from_spec(spec);
        };
        let preset = spec.split_once(':').map_or(spec, |(name, _)| name).trim();
        let base = Layout::preset(preset)?;
        if !base.is_temporal() {
            return Err(LayoutError::Spec {
                spec: spec.to_string(),
                reason: format!(
                    "a shard granularity ({g}) applies to temporal layouts only; `{}` is not one",
                    base.name
                ),
            });
        }
        let sep = if spec.contains(':') { "," } else { ":" };
        Layout::from_spec(&format!("{}{sep}granularity={}", spec.trim(), g.trim()))
    }
}
