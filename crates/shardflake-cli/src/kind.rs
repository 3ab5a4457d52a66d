//! Which kind of id a `--layout` name means, and the node-id flags (mapped onto node fields
//! by the layout itself, as for `serve`).

use anyhow::{anyhow, bail, Result};
use shardflake::encode::Encoding;
use shardflake::{Layout, LayoutError, PRESETS};

/// How a 64-bit id is written (see `shardflake::encode` for alphabets and widths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Decimal, no padding.
    Dec,
    /// Lowercase hexadecimal, 16 digits (`0x` accepted when reading).
    Hex,
    /// Crockford base32, 13 characters.
    Base32,
    /// Base62 (`0-9A-Za-z`), 11 characters.
    Base62,
}

impl Format {
    /// The library's encoding.
    pub fn encoding(self) -> Encoding {
        match self {
            Format::Dec => Encoding::Dec,
            Format::Hex => Encoding::Hex,
            Format::Base32 => Encoding::Base32,
            Format::Base62 => Encoding::Base62,
        }
    }
}

/// The 128-bit formats `--layout` accepts besides the 64-bit presets.
const FORMATS_128: [&str; 2] = ["uuidv7", "ulid"];

/// Every name `--layout` accepts: the 64-bit presets, then the 128-bit formats.
pub fn layout_names() -> Vec<&'static str> {
    PRESETS.iter().copied().chain(FORMATS_128).collect()
}

/// The help text shared by every `--layout` flag.
pub const LAYOUT_HELP: &str = "Id layout: a 64-bit preset (default, twitter, discord, \
instagram, sonyflake, sonyflake-v2, uidgenerator, temporal, js-safe) or a 128-bit format (uuidv7, ulid). \
A 64-bit preset takes overrides after a colon: field widths by name, epoch=DATE|MS, unit_ms=N, \
granularity=DURATION, e.g. `uidgenerator:timestamp=30,worker=20,epoch=2025-01-01` or \
`temporal:granularity=5s`";

/// What a layout name stands for.
#[derive(Debug, Clone)]
pub enum IdKind {
    /// A 64-bit layout.
    Bits64(Layout),
    /// RFC 9562 UUID version 7.
    Uuidv7,
    /// ULID.
    Ulid,
}

impl IdKind {
    /// Resolves a `--layout` name.
    pub fn parse(name: &str) -> Result<IdKind> {
        match name {
            "uuidv7" => Ok(IdKind::Uuidv7),
            "ulid" => Ok(IdKind::Ulid),
            _ => match Layout::from_spec(name) {
                Ok(layout) => Ok(IdKind::Bits64(layout)),
                Err(shardflake::LayoutError::UnknownPreset { .. }) => bail!(
                    "unknown layout `{name}`; known layouts: {}",
                    layout_names().join(", ")
                ),
                Err(e) => bail!("{e}"),
            },
        }
    }

    /// The layout's name as given on the command line.
    pub fn name(&self) -> &str {
        match self {
            IdKind::Bits64(layout) => layout.name(),
            IdKind::Uuidv7 => "uuidv7",
            IdKind::Ulid => "ulid",
        }
    }
}

/// The help text of `--machine-id`, naming the field it sets in each preset.
pub const MACHINE_ID_HELP: &str = "Node id of this generator: sets the layout's least \
significant node field (`shardflake::Layout::node_values_from_ids`, the mapping `serve` uses \
for MACHINE_ID too): twitter `worker` (0..=31), discord `process` (0..=31), instagram `shard` \
(0..=8191), sonyflake and sonyflake-v2 `machine` (0..=65535), uidgenerator `worker` \
(0..=4194303), default `node` (0..=1023), temporal `host` (0..=1023), js-safe `node` (0..=63). \
[default: 0]";

/// The help text of `--datacenter-id`.
pub const DATACENTER_ID_HELP: &str = "Second node id, for layouts with two node fields: sets \
the field above the machine id's (the mapping `serve` uses for DATACENTER_ID too): twitter \
`datacenter` (0..=31), discord `worker` (0..=31). Other layouts reject a non-zero value. \
[default: 0]";

/// Checks the node flags against `layout` with the layout's own mapping and returns
/// `(field, value)` pairs for the builder. Errors name the flag, the field it sets and the
/// allowed range.
pub fn node_values(
    layout: &Layout,
    machine_id: Option<u64>,
    datacenter_id: Option<u64>,
) -> Result<Vec<(String, u64)>> {
    layout
        .node_values_from_ids(machine_id, datacenter_id)
        .map_err(|e| match e {
            LayoutError::NodeIdOutOfRange {
                id,
                value,
                max,
                field,
                ..
            } => anyhow!(
                "{} {value} is out of range for layout `{}`: it sets field `{field}`, \
                 which holds 0..={max}",
                id.flag(),
                layout.name()
            ),
            LayoutError::NodeIdUnused { id, field, .. } => anyhow!(
                "{} does not apply to layout `{}`: its only node field is `{field}`, set \
                 with --machine-id",
                id.flag(),
                layout.name()
            ),
            e => anyhow!("{e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_cover_every_preset() {
        for name in PRESETS {
            assert!(layout_names().contains(name), "{name}");
        }
        assert!(IdKind::parse("snowflak").is_err());
    }

    #[test]
    fn out_of_range_names_flag_field_and_range() {
        let layout = Layout::preset("twitter").unwrap();
        let e = node_values(&layout, Some(32), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--machine-id 32 is out of range for layout `twitter`: it sets field `worker`, \
             which holds 0..=31"
        );
        let layout = Layout::preset("sonyflake").unwrap();
        let e = node_values(&layout, Some(1), Some(1))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--datacenter-id does not apply"), "{e}");
        assert_eq!(
            node_values(&layout, Some(65535), None).unwrap(),
            vec![("machine".to_string(), 65535)]
        );
    }
}
