//! `shardflake inspect`: decode ids into their fields, or describe a layout.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use shardflake::encode::decode_u64;
use shardflake::{format_rfc3339_ms, FieldKind, Layout, Ulid, Uuid7};

use crate::kind::{self, Format, IdKind};

/// Arguments of `shardflake inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(long, value_name = "NAME",
          help = kind::LAYOUT_HELP)]
    layout: Option<String>,
    /// Print one JSON object per line per id (or per layout when no id is given).
    #[arg(long)]
    json: bool,
    /// How 64-bit ids are written [default: dec, or hex when an id starts with `0x`].
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// Ids to decode: decimal, or hexadecimal with a `0x` prefix, for 64-bit layouts; the
    /// canonical text for uuidv7 and ulid. Without ids, describes the layout (every layout
    /// when --layout is not given either).
    #[arg(value_name = "ID")]
    ids: Vec<String>,
}

/// Runs `shardflake inspect`.
pub fn run(args: InspectArgs) -> Result<ExitCode> {
    if args.ids.is_empty() {
        let names: Vec<&str> = match &args.layout {
            Some(name) => vec![name.as_str()],
            None => kind::layout_names(),
        };
        let mut out = String::new();
        for name in names {
            describe(&IdKind::parse(name)?, args.json, &mut out);
        }
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let id_kind = IdKind::parse(args.layout.as_deref().unwrap_or("default"))?;
    if args.format.is_some() && !matches!(id_kind, IdKind::Bits64(_)) {
        anyhow::bail!(
            "--format applies to 64-bit layouts only; `{}` ids are read in their canonical text",
            id_kind.name()
        );
    }
    let mut failed = false;
    for id in &args.ids {
        let mut out = String::new();
        match decode(&id_kind, id, args.format, args.json, &mut out) {
            Ok(()) => print!("{out}"),
            Err(why) => {
                eprintln!(
                    "error: `{id}` is not a valid `{}` id: {why}",
                    id_kind.name()
                );
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Parses a 64-bit id given on the command line: in `format`, or else decimal, or
/// hexadecimal after `0x`.
fn parse_u64(s: &str, format: Option<Format>) -> Result<u64, String> {
    let format = format.unwrap_or(if s.starts_with("0x") || s.starts_with("0X") {
        Format::Hex
    } else {
        Format::Dec
    });
    decode_u64(s, format.encoding()).map_err(|e| e.to_string())
}

fn decode(
    id_kind: &IdKind,
    id: &str,
    format: Option<Format>,
    json: bool,
    out: &mut String,
) -> Result<(), String> {
    match id_kind {
        IdKind::Bits64(layout) => {
            let value = parse_u64(id, format)?;
            let d = layout.decode(value).map_err(|e| e.to_string())?;
            if json {
                let mut obj = JsonObject::new(out);
                obj.num("id", d.id);
                obj.str("id_str", &d.id.to_string());
                obj.str("layout", layout.name());
                obj.num("timestamp_ms", d.timestamp_ms);
                obj.str("time", &d.time);
                for (name, value) in &d.fields {
                    obj.num(name, *value);
                }
                obj.end();
            } else {
                let _ = writeln!(out, "{} ({})", d.id, layout.name());
                let width = field_width(layout);
                for (f, (_, value)) in layout.fields().iter().zip(&d.fields) {
                    let note = match f.kind() {
                        FieldKind::Timestamp => format!(
                            "  ({} ms units since {})",
                            layout.time_unit_ms(),
                            format_rfc3339_ms(layout.epoch_ms())
                        ),
                        _ => String::new(),
                    };
                    let _ = writeln!(out, "  {:width$}  {value}{note}", f.name());
                }
                let _ = writeln!(out, "  {:width$}  {}", "time", d.time);
                let _ = writeln!(out, "  {:width$}  {}", "timestamp_ms", d.timestamp_ms);
                let _ = writeln!(out, "  {:width$}  {}", "overflows", layout.overflow_time());
            }
            Ok(())
        }
        IdKind::Uuidv7 | IdKind::Ulid => decode_128(id_kind, id, json, out),
    }
}

fn field_width(layout: &Layout) -> usize {
    layout
        .fields()
        .iter()
        .map(|f| f.name().len())
        .chain(["timestamp_ms".len()])
        .max()
        .unwrap_or(0)
}

fn describe(id_kind: &IdKind, json: bool, out: &mut String) {
    let IdKind::Bits64(layout) = id_kind else {
        describe_128(id_kind, json, out);
        return;
    };
    let per_tick = layout.ids_per_tick();
    if json {
        let mut obj = JsonObject::new(out);
        obj.str("layout", layout.name());
        obj.num("bits", layout.total_bits() as u64);
        obj.num("epoch_ms", layout.epoch_ms());
        obj.str("epoch", &format_rfc3339_ms(layout.epoch_ms()));
        obj.num("time_unit_ms", layout.time_unit_ms());
        obj.num("overflow_ms", layout.overflow_ms());
        obj.str("overflow_time", &layout.overflow_time());
        obj.num("ids_per_tick", per_tick);
        let mut fields = String::from("[");
        for (i, f) in layout.fields().iter().enumerate() {
            if i > 0 {
                fields.push(',');
            }
            let mut o = JsonObject::new(&mut fields);
            o.str("name", f.name());
            o.num("bits", f.bits() as u64);
            o.num("shift", f.shift() as u64);
            o.str("kind", kind_name(f.kind()));
            o.num("max", f.max());
            o.close();
        }
        fields.push(']');
        obj.raw("fields", &fields);
        obj.end();
        return;
    }
    let _ = writeln!(out, "{}", layout.name());
    let _ = writeln!(
        out,
        "  epoch      {} ({} Unix ms)",
        format_rfc3339_ms(layout.epoch_ms()),
        layout.epoch_ms()
    );
    let _ = writeln!(out, "  unit       {} ms", layout.time_unit_ms());
    let _ = writeln!(
        out,
        "  overflows  {} (the timestamp field is full)",
        layout.overflow_time()
    );
    let rate = per_tick as u128 * 1000 / layout.time_unit_ms() as u128;
    let _ = writeln!(
        out,
        "  capacity   {per_tick} ids per tick per node ({rate} ids/s)"
    );
    let _ = writeln!(out, "  fields, most significant first:");
    let width = field_width(layout);
    for f in layout.fields() {
        let _ = writeln!(
            out,
            "    {:width$}  {:2} bits  bits {:2}..={:2}  {:9}  0..={}",
            f.name(),
            f.bits(),
            f.shift(),
            f.shift() + f.bits() - 1,
            kind_name(f.kind()),
            f.max()
        );
    }
    if let Some(machine) = layout.machine_field() {
        let _ = write!(
            out,
            "  node ids:  --machine-id / MACHINE_ID sets `{}`",
            machine.name()
        );
        if let Some(d) = layout.datacenter_field() {
            let _ = write!(out, ", --datacenter-id / DATACENTER_ID sets `{}`", d.name());
        }
        out.push('\n');
    }
    let _ = writeln!(out, "  spec:      {}", layout.spec());
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Timestamp => "timestamp",
        FieldKind::Node => "node",
        FieldKind::Sequence => "sequence",
    }
}

/// Writes one JSON object on one line. Keys and strings are escaped by serde_json; numbers
/// are written as they are, so 64-bit ids keep every digit.
struct JsonObject<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out
            .push_str(&serde_json::to_string(key).expect("a str always serializes"));
        self.out.push(':');
    }
    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out
            .push_str(&serde_json::to_string(value).expect("a str always serializes"));
    }
    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.push_str(json);
    }
    /// Closes the object without a newline (for nesting).
    fn close(self) {
        self.out.push('}');
    }
    /// Closes the object and ends the line.
    fn end(self) {
        self.out.push_str("}\n");
    }
}

/// The fields of the 128-bit formats, most significant first: name and width in bits.
const UUIDV7_FIELDS: &[(&str, u32)] = &[
    ("unix_ts_ms", 48),
    ("ver", 4),
    ("rand_a", 12),
    ("var", 2),
    ("rand_b", 62),
];
const ULID_FIELDS: &[(&str, u32)] = &[("timestamp", 48), ("randomness", 80)];

fn describe_128(id_kind: &IdKind, json: bool, out: &mut String) {
    let (fields, spec, text) = match id_kind {
        IdKind::Uuidv7 => (
            UUIDV7_FIELDS,
            "RFC 9562 section 5.7, monotonic per section 6.2",
            "canonical lowercase 8-4-4-4-12 hex",
        ),
        _ => (
            ULID_FIELDS,
            "ULID spec, monotonic within a millisecond",
            "26 Crockford base32 characters",
        ),
    };
    // 48 bits of milliseconds last until 10889-08-02, beyond what RFC 3339 can write.
    let overflow_ms: u64 = 1 << 48;
    if json {
        let mut obj = JsonObject::new(out);
        obj.str("layout", id_kind.name());
        obj.num("bits", 128);
        obj.num("epoch_ms", 0);
        obj.num("time_unit_ms", 1);
        obj.num("overflow_ms", overflow_ms);
        let mut list = String::from("[");
        let mut shift = 128;
        for (i, (name, bits)) in fields.iter().enumerate() {
            shift -= bits;
            if i > 0 {
                list.push(',');
            }
            let mut o = JsonObject::new(&mut list);
            o.str("name", name);
            o.num("bits", *bits as u64);
            o.num("shift", shift as u64);
            o.close();
        }
        list.push(']');
        obj.raw("fields", &list);
        obj.end();
        return;
    }
    let _ = writeln!(out, "{}", id_kind.name());
    let _ = writeln!(out, "  spec       {spec}");
    let _ = writeln!(out, "  text       {text}");
    let _ = writeln!(out, "  epoch      1970-01-01T00:00:00.000Z, unit 1 ms");
    let _ = writeln!(
        out,
        "  overflows  in the year 10889 ({overflow_ms} Unix ms, 48-bit timestamp)"
    );
    let _ = writeln!(out, "  fields, most significant first:");
    for (name, bits) in fields {
        let _ = writeln!(out, "    {name:12}  {bits:3} bits");
    }
}

fn decode_128(id_kind: &IdKind, id: &str, json: bool, out: &mut String) -> Result<(), String> {
    let (text, timestamp_ms, fields): (String, u64, Vec<(&str, Value128)>) = match id_kind {
        IdKind::Uuidv7 => {
            let u: Uuid7 = id
                .parse()
                .map_err(|e: shardflake::DecodeError| e.to_string())?;
            (
                u.to_string(),
                u.timestamp_ms(),
                vec![
                    ("unix_ts_ms", Value128::Num(u.timestamp_ms())),
                    ("version", Value128::Num(u.version().into())),
                    ("rand_a", Value128::Num(u.rand_a().into())),
                    ("variant", Value128::Num(u.variant().into())),
                    ("rand_b", Value128::Num(u.rand_b())),
                ],
            )
        }
        _ => {
            let u: Ulid = id
                .parse()
                .map_err(|e: shardflake::DecodeError| e.to_string())?;
            let text = u.to_string();
            // The spec draws the randomness as the last 16 characters of the text.
            let randomness = text[10..].to_string();
            (
                text,
                u.timestamp_ms(),
                vec![
                    ("timestamp", Value128::Num(u.timestamp_ms())),
                    ("randomness", Value128::Text(randomness)),
                ],
            )
        }
    };
    let time = format_rfc3339_ms(timestamp_ms);
    if json {
        // A 128-bit id is no JSON number; `id` and `id_str` both carry the canonical text.
        let mut obj = JsonObject::new(out);
        obj.str("id", &text);
        obj.str("id_str", &text);
        obj.str("layout", id_kind.name());
        obj.num("timestamp_ms", timestamp_ms);
        obj.str("time", &time);
        for (name, value) in &fields {
            match value {
                Value128::Num(n) => obj.num(name, *n),
                Value128::Text(t) => obj.str(name, t),
            }
        }
        obj.end();
    } else {
        let _ = writeln!(out, "{text} ({})", id_kind.name());
        for (name, value) in &fields {
            match value {
                Value128::Num(n) => {
                    let _ = writeln!(out, "  {name:12}  {n}");
                }
                Value128::Text(t) => {
                    let _ = writeln!(out, "  {name:12}  {t}");
                }
            }
        }
        let _ = writeln!(out, "  {:12}  {time}", "time");
        let _ = writeln!(out, "  {:12}  {timestamp_ms}", "timestamp_ms");
    }
    Ok(())
}

/// A field value of a 128-bit id: a number, or text where the number would not fit JSON.
enum Value128 {
    Num(u64),
    Text(String),
}

/// A parser of one 128-bit id per line, for `verify`.
pub fn text_parser_128(id_kind: &IdKind) -> impl Fn(&[u8]) -> Result<u128, String> {
    let uuid = matches!(id_kind, IdKind::Uuidv7);
    move |line: &[u8]| {
        let s = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8".to_string())?;
        let parsed = if uuid {
            s.parse::<Uuid7>().map(u128::from)
        } else {
            s.parse::<Ulid>().map(u128::from)
        };
        parsed.map_err(|e| e.to_string())
    }
}

/// Formats a 128-bit id as its canonical text, for `verify`'s report.
pub fn text_formatter_128(id_kind: &IdKind) -> impl Fn(u128) -> String {
    let uuid = matches!(id_kind, IdKind::Uuidv7);
    move |k: u128| {
        if uuid {
            Uuid7::try_from(k).map_or_else(|_| format!("{k:032x}"), |u| u.to_string())
        } else {
            Ulid::from(k).to_string()
        }
    }
}
