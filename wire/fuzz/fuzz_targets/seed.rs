//! The seed system's update decoder on any bytes: it never panics and never answers more
//! fixes than its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_wire::clients::seed;
use locus_wire_fuzz::BOUNDS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = seed::decode_update(text, &BOUNDS) {
        assert!(u.batch.fixes.len() <= BOUNDS.max_fixes);
    }
});
