//! Layout specs (`--layout`): any text either parses or is an error, never a panic; a layout
//! that parses has a spec that parses back to the same layout, and decoding any id with it
//! either works or is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardflake::Layout;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (spec, id) = match text.split_once('\n') {
        Some((s, rest)) => (
            s,
            rest.bytes()
                .fold(0u64, |a, b| a.wrapping_mul(131).wrapping_add(u64::from(b))),
        ),
        None => (text, 0),
    };
    if let Ok(layout) = Layout::from_spec(spec) {
        let again = Layout::from_spec(&layout.spec()).expect("a layout's own spec parses");
        assert_eq!(again.spec(), layout.spec(), "the spec is a fixed point");
        let _ = layout.decode(id);
        let _ = layout.overflow_ms();
    }
});
