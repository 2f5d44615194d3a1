//! The OsmAnd decoder on any bytes, split at the first newline into the query string and
//! the form body: it never panics, and answers a device with at most one fix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locus_wire::clients::osmand;
use locus_wire_fuzz::BOUNDS;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, form) = match text.split_once('\n') {
        Some((q, f)) => (q, Some(f)),
        None => (text, None),
    };
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
    if let Ok(b) = osmand::decode(query, form, now, &BOUNDS) {
        assert!(b.device.is_some() && b.fixes.len() <= 1);
        assert_eq!(b.heartbeat, b.fixes.is_empty());
    }
});
