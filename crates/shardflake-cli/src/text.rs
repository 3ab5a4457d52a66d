//! Allocation-free number formatting and parsing for the hot loops of `generate` and
//! `verify`, which handle hundreds of millions of lines.

/// Longest decimal `u64`: 18446744073709551615.
pub const DEC_LEN_MAX: usize = 20;

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Formats `n` in decimal at the end of `buf` and returns the digits.
///
/// Two digits per division, as the `itoa` crate does, since the divisions dominate.
#[inline]
pub fn format_dec(mut n: u64, buf: &mut [u8; DEC_LEN_MAX]) -> &[u8] {
    let mut i = DEC_LEN_MAX;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

/// Parses an unsigned decimal number: ASCII digits only, no sign, no spaces, at most
/// `u64::MAX`. Returns `None` for anything else, including the empty string.
#[inline]
pub fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > DEC_LEN_MAX {
        return None;
    }
    let mut n: u64 = 0;
    if s.len() < DEC_LEN_MAX {
        // Up to 19 digits cannot overflow, so skip the checked arithmetic.
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + d as u64;
        }
        return Some(n);
    }
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(n)
}

/// Parses a hexadecimal `u64`, with or without a `0x` prefix, either case.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    let digits = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | d as u64;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dec_round_trips_at_the_edges() {
        let mut buf = [0; DEC_LEN_MAX];
        for n in [
            0,
            9,
            10,
            99,
            100,
            101,
            12345,
            u64::MAX / 10,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let s = format_dec(n, &mut buf);
            assert_eq!(s, n.to_string().as_bytes());
            assert_eq!(parse_dec(s), Some(n));
        }
        for n in (0..64)
            .map(|b| 1u64 << b)
            .chain((0..64).map(|b| (1u64 << b) - 1))
        {
            assert_eq!(format_dec(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn dec_rejects_what_is_not_a_u64() {
        for s in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1a",
            "18446744073709551616",
            "99999999999999999999",
        ] {
            assert_eq!(parse_dec(s.as_bytes()), None, "{s:?}");
        }
        assert_eq!(parse_dec(b"000000000000000000001"), None);
        assert_eq!(parse_dec(b"00000000000000000001"), Some(1));
    }

    #[test]
    fn hex_accepts_prefix_and_either_case() {
        assert_eq!(parse_hex(b"0x270f"), Some(9999));
        assert_eq!(parse_hex(b"0X270F"), Some(9999));
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"1ffffffffffffffff"), None);
        assert_eq!(parse_hex(b"0x"), None);
        assert_eq!(parse_hex(b"0xg"), None);
    }
}
