//! The transistor decoder on any bytes: it never panics and never answers more fixes than its
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_wire::clients::transistor;
use locus_wire_fuzz::BOUNDS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(batch) = transistor::decode(text, &BOUNDS) {
        assert!(batch.fixes.len() <= BOUNDS.max_fixes);
    }
});
