//! Text encodings for ids: decimal, hex, Crockford base32 and base62, and parsing back.
//!
//! Encoding is canonical and fixed-width where the alphabet allows it, so encoded ids sort
//! as text in the same order as the numbers (except decimal, which is written without
//! padding as people expect):
//!
//! | encoding | alphabet | width (u64 / u128) |
//! |---|---|---|
//! | `dec` | `0-9` | no padding |
//! | `hex` | `0-9a-f` (lowercase) | 16 / 32 |
//! | `base32` | Crockford `0-9A-HJKMNP-TV-Z` (uppercase) | 13 / 26 |
//! | `base62` | `0-9A-Za-z` | 11 / 22 |
//!
//! Hex has a fixed width because unpadded hex is ambiguous with decimal for ids whose hex
//! digits are all `0-9`. Decoding is lenient where the encoding's own spec is: hex and
//! base32 ignore case, hex accepts a `0x` prefix, and base32 follows Crockford's decoding
//! rules (<https://www.crockford.com/base32.html>): `I` and `L` read as `1`, `O` as `0`, and
//! hyphens are ignored. Base62 is case-sensitive by nature. Every error names the offending
//! character and its position, counted in characters from 1.
//!
//! ```
//! use shardflake::encode::{decode_u64, encode_u64, Encoding};
//!
//! let id = 175_928_847_299_117_063_u64; // Discord's documented example snowflake
//! assert_eq!(encode_u64(id, Encoding::Dec), "175928847299117063");
//! assert_eq!(encode_u64(id, Encoding::Hex), "0271065ac1020007");
//! assert_eq!(encode_u64(id, Encoding::Base32), "04W86BB0G4007");
//! assert_eq!(encode_u64(id, Encoding::Base62), "0Czks0tP37X");
//! for enc in Encoding::ALL {
//!     assert_eq!(decode_u64(&encode_u64(id, enc), enc)?, id);
//! }
//! // Crockford base32 decoding is forgiving about case, look-alikes and hyphens.
//! assert_eq!(decode_u64("04w8-6bb0-g4oo7", Encoding::Base32)?, id);
//! # Ok::<(), shardflake::DecodeError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{truncate_input, DecodeError};

/// Crockford's base32 alphabet: digits and letters without `I`, `L`, `O` and `U`.
pub(crate) const CROCKFORD_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

const HEX_ALPHABET: &[u8; 16] = b"0123456789abcdef";

const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Marks a byte that is not a digit in a decoding table.
const INVALID: u8 = 0xff;

/// Crockford base32 values of the canonical symbols only, either case: the strict table the
/// ULID spec asks for, which rejects `I`, `L`, `O` and `U`.
pub(crate) const CROCKFORD_STRICT: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 32 {
        let c = CROCKFORD_ALPHABET[i];
        t[c as usize] = i as u8;
        t[c.to_ascii_lowercase() as usize] = i as u8;
        i += 1;
    }
    t
};

/// Crockford's decoding table: the strict table plus `I`/`L` as 1 and `O` as 0.
const CROCKFORD_LENIENT: [u8; 256] = {
    let mut t = CROCKFORD_STRICT;
    t[b'I' as usize] = 1;
    t[b'i' as usize] = 1;
    t[b'L' as usize] = 1;
    t[b'l' as usize] = 1;
    t[b'O' as usize] = 0;
    t[b'o' as usize] = 0;
    t
};

const HEX_TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 16 {
        let c = HEX_ALPHABET[i];
        t[c as usize] = i as u8;
        t[c.to_ascii_uppercase() as usize] = i as u8;
        i += 1;
    }
    t
};

const BASE62_TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        t[BASE62_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

const DEC_TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    t
};

/// A text encoding for ids. Parses from and displays as `dec`, `hex`, `base32`, `base62`.
///
/// ```
/// use shardflake::encode::Encoding;
/// let enc: Encoding = "base62".parse()?;
/// assert_eq!(enc, Encoding::Base62);
/// assert_eq!(enc.to_string(), "base62");
/// assert!("base64".parse::<Encoding>().is_err());
/// # Ok::<(), shardflake::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Decimal, no padding.
    #[default]
    Dec,
    /// Lowercase hexadecimal, zero-padded to the id's full width.
    Hex,
    /// Crockford base32, uppercase, zero-padded to the id's full width.
    Base32,
    /// Base62 (`0-9A-Za-z`), zero-padded to the id's full width.
    Base62,
}

impl Encoding {
    /// Every encoding, in the order of their names in [`Encoding::NAMES`].
    pub const ALL: [Encoding; 4] = [
        Encoding::Dec,
        Encoding::Hex,
        Encoding::Base32,
        Encoding::Base62,
    ];

    /// The names accepted by `FromStr`, as shown in help texts.
    pub const NAMES: &'static str = "dec|hex|base32|base62";

    /// The short name: `dec`, `hex`, `base32` or `base62`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Dec => "dec",
            Encoding::Hex => "hex",
            Encoding::Base32 => "base32",
            Encoding::Base62 => "base62",
        }
    }

    /// The name used in error messages.
    fn description(self) -> &'static str {
        match self {
            Encoding::Dec => "decimal",
            Encoding::Hex => "hex",
            Encoding::Base32 => "Crockford base32",
            Encoding::Base62 => "base62",
        }
    }

    fn radix(self) -> u32 {
        match self {
            Encoding::Dec => 10,
            Encoding::Hex => 16,
            Encoding::Base32 => 32,
            Encoding::Base62 => 62,
        }
    }

    fn alphabet(self) -> &'static [u8] {
        match self {
            Encoding::Dec => b"0123456789",
            Encoding::Hex => HEX_ALPHABET,
            Encoding::Base32 => CROCKFORD_ALPHABET,
            Encoding::Base62 => BASE62_ALPHABET,
        }
    }

    fn table(self) -> &'static [u8; 256] {
        match self {
            Encoding::Dec => &DEC_TABLE,
            Encoding::Hex => &HEX_TABLE,
            Encoding::Base32 => &CROCKFORD_LENIENT,
            Encoding::Base62 => &BASE62_TABLE,
        }
    }

    /// The fixed width of an encoded `u64`, or `None` for decimal (unpadded).
    pub fn width_u64(self) -> Option<usize> {
        match self {
            Encoding::Dec => None,
            Encoding::Hex => Some(16),
            Encoding::Base32 => Some(13),
            Encoding::Base62 => Some(11),
        }
    }

    /// The fixed width of an encoded `u128`, or `None` for decimal (unpadded).
    pub fn width_u128(self) -> Option<usize> {
        match self {
            Encoding::Dec => None,
            Encoding::Hex => Some(32),
            Encoding::Base32 => Some(26),
            Encoding::Base62 => Some(22),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = DecodeError;

    /// Parses `dec`, `hex`, `base32` or `base62`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DecodeError::Syntax {
                input: truncate_input(s),
                encoding: "encoding name",
                reason: format!("expected one of {}", Encoding::NAMES),
            })
    }
}

/// Encodes a 64-bit id; see the [module docs](self) for each encoding's alphabet and width.
///
/// ```
/// use shardflake::encode::{encode_u64, Encoding};
/// assert_eq!(encode_u64(255, Encoding::Hex), "00000000000000ff");
/// assert_eq!(encode_u64(u64::MAX, Encoding::Base32), "FZZZZZZZZZZZZ");
/// assert_eq!(encode_u64(61, Encoding::Base62), "0000000000z");
/// ```
pub fn encode_u64(id: u64, enc: Encoding) -> String {
    let mut out = String::with_capacity(20);
    encode_u64_to(id, enc, &mut out);
    out
}

/// Appends the encoding of `id` to `out`: [`encode_u64`] without an allocation per id.
///
/// ```
/// use shardflake::encode::{encode_u64_to, Encoding};
/// let mut out = String::new();
/// for id in [1, 2] {
///     encode_u64_to(id, Encoding::Base62, &mut out);
///     out.push('\n');
/// }
/// assert_eq!(out, "00000000001\n00000000002\n");
/// ```
pub fn encode_u64_to(id: u64, enc: Encoding, out: &mut String) {
    let mut buf = [0u8; 20];
    let text = match enc {
        Encoding::Dec => {
            let mut n = id;
            let mut i = buf.len();
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            &buf[i..]
        }
        Encoding::Hex => {
            for (i, b) in buf[..16].iter_mut().enumerate() {
                *b = HEX_ALPHABET[((id >> (60 - 4 * i)) & 0xf) as usize];
            }
            &buf[..16]
        }
        Encoding::Base32 => {
            for (i, b) in buf[..13].iter_mut().enumerate() {
                // 13 symbols carry 65 bits; the first carries only the top 4.
                let shift = 60 - 5 * i as i32;
                let digit = if shift >= 0 {
                    (id >> shift) & 0x1f
                } else {
                    (id << -shift) & 0x1f
                };
                *b = CROCKFORD_ALPHABET[digit as usize];
            }
            &buf[..13]
        }
        Encoding::Base62 => {
            let mut n = id;
            for b in buf[..11].iter_mut().rev() {
                *b = BASE62_ALPHABET[(n % 62) as usize];
                n /= 62;
            }
            &buf[..11]
        }
    };
    // Every alphabet is ASCII, so the bytes are valid UTF-8 one by one.
    out.extend(text.iter().map(|&b| b as char));
}

/// Encodes a 128-bit id (UUID, ULID); see the [module docs](self) for widths.
///
/// Base32 of a ULID's value is its canonical text.
///
/// ```
/// use shardflake::encode::{encode_u128, Encoding};
/// let ulid = 0x0156_3E3A_B5D3_D676_4C61_EFB9_9302_BD5B_u128;
/// assert_eq!(encode_u128(ulid, Encoding::Base32), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
/// assert_eq!(encode_u128(ulid, Encoding::Hex), "01563e3ab5d3d6764c61efb99302bd5b");
/// assert_eq!(encode_u128(1, Encoding::Base62), "0000000000000000000001");
/// ```
pub fn encode_u128(id: u128, enc: Encoding) -> String {
    let mut out = String::with_capacity(40);
    encode_u128_to(id, enc, &mut out);
    out
}

/// Appends the encoding of a 128-bit `id` to `out`.
pub fn encode_u128_to(id: u128, enc: Encoding, out: &mut String) {
    let Some(width) = enc.width_u128() else {
        use fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{id}");
        return;
    };
    let mut buf = [0u8; 32];
    let digits = &mut buf[..width];
    match enc {
        Encoding::Hex | Encoding::Base32 => {
            let bits = enc.radix().trailing_zeros();
            let digit_mask = u128::from(enc.radix() - 1);
            for (i, b) in digits.iter_mut().rev().enumerate() {
                let shift = bits * i as u32;
                *b = enc.alphabet()[((id >> shift) & digit_mask) as usize];
            }
        }
        Encoding::Dec | Encoding::Base62 => {
            let mut n = id;
            for b in digits.iter_mut().rev() {
                *b = BASE62_ALPHABET[(n % 62) as usize];
                n /= 62;
            }
        }
    }
    out.extend(digits.iter().map(|&b| b as char));
}

/// Parses a 64-bit id written in `enc`.
///
/// Accepts what [`encode_u64`] writes and, per the module docs, a few lenient forms; with or
/// without the zero padding. Rejects an empty string, a character outside the alphabet
/// (naming it and its position from 1) and a value above `u64::MAX`.
///
/// ```
/// use shardflake::encode::{decode_u64, Encoding};
/// assert_eq!(decode_u64("0xFF", Encoding::Hex)?, 255);
/// assert_eq!(decode_u64("ff", Encoding::Hex)?, 255);
/// let err = decode_u64("12a4", Encoding::Dec).unwrap_err();
/// assert_eq!(err.to_string(), "`12a4` is not valid decimal: invalid character 'a' at position 3");
/// let err = decode_u64("18446744073709551616", Encoding::Dec).unwrap_err();
/// assert!(err.to_string().contains("does not fit in 64 bits"));
/// # Ok::<(), shardflake::DecodeError>(())
/// ```
pub fn decode_u64(s: &str, enc: Encoding) -> Result<u64, DecodeError> {
    let value = decode_digits(s, enc, 64)?;
    Ok(value as u64)
}

/// Parses a 128-bit id written in `enc`; the 128-bit counterpart of [`decode_u64`].
///
/// ```
/// use shardflake::encode::{decode_u128, Encoding};
/// assert_eq!(
///     decode_u128("01ARZ3NDEKTSV4RRFFQ69G5FAV", Encoding::Base32)?,
///     0x0156_3E3A_B5D3_D676_4C61_EFB9_9302_BD5B
/// );
/// # Ok::<(), shardflake::DecodeError>(())
/// ```
pub fn decode_u128(s: &str, enc: Encoding) -> Result<u128, DecodeError> {
    decode_digits(s, enc, 128)
}

/// Parses `s` as a number of at most `bits` bits in `enc`.
fn decode_digits(s: &str, enc: Encoding, bits: u32) -> Result<u128, DecodeError> {
    let err = |reason: String| DecodeError::Syntax {
        input: truncate_input(s),
        encoding: enc.description(),
        reason,
    };
    let (body, skipped_chars) = match enc {
        Encoding::Hex => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(rest) => (rest, 2),
            None => (s, 0),
        },
        _ => (s, 0),
    };
    let table = enc.table();
    let radix = u128::from(enc.radix());
    let max = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let mut value: u128 = 0;
    let mut digits = 0usize;
    for (i, c) in body.chars().enumerate() {
        if enc == Encoding::Base32 && c == '-' {
            // Crockford: "Hyphens (-) can be inserted into symbol strings... ignored during
            // decoding."
            continue;
        }
        let digit = if c.is_ascii() {
            table[c as usize]
        } else {
            INVALID
        };
        if digit == INVALID {
            return Err(err(format!(
                "invalid character {c:?} at position {}",
                i + 1 + skipped_chars
            )));
        }
        digits += 1;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(u128::from(digit)))
            .filter(|&v| v <= max)
            .ok_or_else(|| err(format!("the value does not fit in {bits} bits (max {max})")))?;
    }
    if digits == 0 {
        return Err(err("no digits".to_string()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_encode_at_full_width() {
        assert_eq!(encode_u64(0, Encoding::Dec), "0");
        assert_eq!(encode_u64(0, Encoding::Hex), "0000000000000000");
        assert_eq!(encode_u64(0, Encoding::Base32), "0000000000000");
        assert_eq!(encode_u64(0, Encoding::Base62), "00000000000");
        assert_eq!(encode_u64(u64::MAX, Encoding::Dec), "18446744073709551615");
        assert_eq!(encode_u64(u64::MAX, Encoding::Hex), "ffffffffffffffff");
        assert_eq!(encode_u64(u64::MAX, Encoding::Base62), "LygHa16AHYF");
        assert_eq!(
            encode_u128(u128::MAX, Encoding::Base32),
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
        );
        assert_eq!(
            encode_u128(u128::MAX, Encoding::Base62),
            "7n42DGM5Tflk9n8mt7Fhc7"
        );
        assert_eq!(encode_u128(u128::MAX, Encoding::Dec), u128::MAX.to_string());
    }

    #[test]
    fn overflow_is_rejected_by_one() {
        assert!(decode_u64("LygHa16AHYG", Encoding::Base62).is_err());
        assert!(decode_u64("G000000000000", Encoding::Base32).is_err());
        assert!(decode_u64("10000000000000000", Encoding::Hex).is_err());
        assert_eq!(
            decode_u64("0000000000000000000000ffffffffffffffff", Encoding::Hex),
            Ok(u64::MAX)
        );
        assert!(decode_u128("80000000000000000000000000", Encoding::Base32).is_err());
    }

    #[test]
    fn errors_name_the_character_and_position() {
        let e = decode_u64("0x12g4", Encoding::Hex).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`0x12g4` is not valid hex: invalid character 'g' at position 5"
        );
        let e = decode_u64("01U3", Encoding::Base32).unwrap_err();
        assert!(e.to_string().contains("'U' at position 3"), "{e}");
        let e = decode_u64("ab-c", Encoding::Base62).unwrap_err();
        assert!(e.to_string().contains("'-' at position 3"), "{e}");
        let e = decode_u64("1é", Encoding::Dec).unwrap_err();
        assert!(e.to_string().contains("'é' at position 2"), "{e}");
        assert!(decode_u64("", Encoding::Dec).is_err());
        assert!(decode_u64("0x", Encoding::Hex).is_err());
        assert!(decode_u64("--", Encoding::Base32).is_err());
        assert!(decode_u64("+1", Encoding::Dec).is_err());
    }

    #[test]
    fn crockford_decoding_maps_look_alikes() {
        assert_eq!(
            decode_u64("iIlL", Encoding::Base32),
            Ok(0b00001_00001_00001_00001)
        );
        assert_eq!(decode_u64("oO1", Encoding::Base32), Ok(1));
        assert_eq!(decode_u64("1-0", Encoding::Base32), Ok(32));
        assert_eq!(decode_u64("zz", Encoding::Base32), Ok(1023));
    }

    #[test]
    fn base62_is_case_sensitive() {
        assert_eq!(decode_u64("a", Encoding::Base62), Ok(36));
        assert_eq!(decode_u64("A", Encoding::Base62), Ok(10));
    }
}
