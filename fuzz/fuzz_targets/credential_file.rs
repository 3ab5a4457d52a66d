//! Credential files (`--node-token-file` and friends): any text is parsed without a panic,
//! and no error message repeats a word of the file long enough to be a token, so a malformed
//! file never puts a credential in a log.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shardflake_proto::auth::TOKEN_BYTES_MIN;
use shardflake_runtime::credentials::parse_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_text("node", Path::new("fuzz.tokens"), text) {
        Ok(names) => assert!(!names.is_empty(), "a file without credentials is refused"),
        Err(e) => {
            let message = e.to_string();
            for word in text.split_whitespace().filter(|w| w.len() >= TOKEN_BYTES_MIN) {
                assert!(
                    !message.contains(word),
                    "the error repeats a word of the file: {message}"
                );
            }
        }
    }
});
