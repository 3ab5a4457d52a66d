//! Id text in every encoding (decimal, hex, Crockford base32, base62; 64 and 128 bits; UUID
//! and ULID strings): any text either decodes or is an error, never a panic, and what decodes
//! encodes back to text that decodes to the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardflake::encode::{decode_u128, decode_u64, encode_u128, encode_u64, Encoding};
use shardflake::ulid::Ulid;
use shardflake::uuid7::Uuid7;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let enc = Encoding::ALL[usize::from(selector) % Encoding::ALL.len()];
    match selector / 4 % 4 {
        0 => {
            if let Ok(id) = decode_u64(text, enc) {
                assert_eq!(
                    decode_u64(&encode_u64(id, enc), enc).ok(),
                    Some(id),
                    "{enc:?} {text:?}"
                );
            }
        }
        1 => {
            if let Ok(id) = decode_u128(text, enc) {
                assert_eq!(
                    decode_u128(&encode_u128(id, enc), enc).ok(),
                    Some(id),
                    "{enc:?} {text:?}"
                );
            }
        }
        2 => {
            if let Ok(id) = text.parse::<Uuid7>() {
                assert_eq!(id.to_string().parse::<Uuid7>().ok(), Some(id), "{text:?}");
            }
        }
        _ => {
            if let Ok(id) = text.parse::<Ulid>() {
                assert_eq!(id.to_string().parse::<Ulid>().ok(), Some(id), "{text:?}");
            }
        }
    }
});
