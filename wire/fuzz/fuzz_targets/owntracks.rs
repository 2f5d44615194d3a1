//! The OwnTracks decoder on any bytes: it never panics, and only a location message has a
//! fix (one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_wire::clients::owntracks;
use locus_wire_fuzz::BOUNDS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = owntracks::decode(text, &BOUNDS) {
        assert!(m.batch.fixes.len() <= usize::from(m.kind == "location"));
    }
});
