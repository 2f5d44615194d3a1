//! The overland decoder on any bytes: it never panics and never answers more fixes than its
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_wire::clients::overland;
use locus_wire_fuzz::BOUNDS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(batch) = overland::decode(text, &BOUNDS) {
        assert!(batch.fixes.len() <= BOUNDS.max_fixes);
    }
});
