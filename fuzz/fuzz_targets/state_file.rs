//! The node's state file: any bytes are either a state for this node or a `Corrupt` /
//! `Mismatch` error, never a panic. Each input is tried as it is and sealed with a valid
//! checksum (so that the fuzzer reaches the payload's decoding, past the checksum).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shardflake_node::{parse_state, seal_state, StateError, StateIdentity};

fuzz_target!(|data: &[u8]| {
    let node = serde_json::json!({"datacenter": 1, "worker": 2});
    let identity = StateIdentity {
        layout: "twitter".into(),
        epoch_ms: 1_288_834_974_657,
        time_unit_ms: 1,
        node: node.as_object().unwrap().clone(),
        spec: None,
    };
    let path = Path::new("fuzz.state");
    for bytes in [data.to_vec(), seal_state(data)] {
        match parse_state(path, &identity, &bytes) {
            Ok(_) | Err(StateError::Corrupt { .. } | StateError::Mismatch { .. }) => {}
            Err(e) => panic!("an unexpected error kind: {e}"),
        }
    }
});
