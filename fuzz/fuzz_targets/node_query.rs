//! The node's `GET /ids` query string, through `shardflake_node::parse_ids_query`, the
//! function the handler runs: any text is a count in `1..=IDS_COUNT_MAX` or a
//! `bad_request` / `count_out_of_range` error, never a panic. An accepted query is exactly
//! one `count=N` pair and the count is N; `count=N` written back parses to the same count; a
//! `count_out_of_range` is a whole number outside the range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardflake_node::parse_ids_query;
use shardflake_proto::node::IDS_COUNT_MAX;
use shardflake_proto::ErrorCode;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    match parse_ids_query(Some(query)) {
        Ok(count) => {
            assert!((1..=IDS_COUNT_MAX).contains(&(count as u64)), "{count}");
            assert_eq!(pairs.len(), 1, "one pair in an accepted query: {query:?}");
            let value = pairs[0].strip_prefix("count=").expect("the pair is count=");
            assert_eq!(value.parse::<u64>().ok(), Some(count as u64), "{query:?}");
            let canonical = format!("count={count}");
            assert_eq!(parse_ids_query(Some(&canonical)).ok(), Some(count));
        }
        Err(e) => match e.code {
            ErrorCode::BadRequest => {}
            ErrorCode::CountOutOfRange => {
                let value = pairs
                    .iter()
                    .find_map(|p| p.strip_prefix("count="))
                    .expect("an out-of-range count was given");
                let digits = value.strip_prefix('+').unwrap_or(value);
                assert!(
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                    "count_out_of_range for a value that is not a whole number: {value:?}"
                );
            }
            other => panic!("{other} for {query:?}"),
        },
    }
});
