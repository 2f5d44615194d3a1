//! Single-pass, lenient decoding of the fixes of a posted batch.
//!
//! A batch is decoded in one pass over the body, yet a fix with a missing or mistyped
//! field is rejected alone, with its index, instead of failing the whole batch: each fix
//! decodes into a [`FixSlot`] that holds either the fix or what was wrong with it. The
//! first version parsed the batch into raw JSON fragments and then each fragment again;
//! profiling put a quarter of the decode time in that second scan, and most of the rest in
//! number and timestamp parsing, hence the RFC 3339 fast path below.
//!
//! Over 400 lines on purpose: the decoder and its tests of every field and edge stay in one
//! file, since the fast path only makes sense read next to what it must match.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use std::cell::Cell;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use crate::api::{FixInput, LocationBatch};

/// Most characters of bad input an error message repeats.
pub const ECHO_CHARS: usize = 32;

/// `text` for an error message: whole when short, else its first [`ECHO_CHARS`]
/// characters, `…` and its length, so a huge bad value costs nothing downstream.
pub fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// Why [`LocationBatch::decode`] refused a batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// More fixes than the batch maximum: decoding stopped at the one past it.
    #[error("the batch has more than {max} fixes")]
    TooManyFixes {
        /// The batch maximum.
        max: usize,
    },
    /// Nested deeper than the depth bound.
    #[error("the JSON nests deeper than {max} levels")]
    TooDeep {
        /// The depth bound.
        max: usize,
    },
    /// A string (a key or a value) longer than the string bound, in bytes as sent.
    #[error("a string of the JSON is longer than {max} bytes")]
    StringTooLong {
        /// The string bound.
        max: usize,
    },
    /// Not JSON, or JSON of another shape.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Bounds of a posted batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchBounds {
    /// Most fixes.
    pub max_fixes: usize,
    /// Most levels of nested arrays and objects (the batch, its list and a fix are 3).
    pub max_depth: usize,
    /// Longest string, key or value, in bytes as sent (escapes included).
    pub max_string_bytes: usize,
}

/// One pass over the text for depth and string length, before serde builds anything.
/// Malformed JSON passes through to the parser, which names what is wrong.
pub fn check_shape(text: &[u8], max_depth: usize, max_string: usize) -> Result<(), BatchError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < text.len() && text[j] != b'"' {
                    j += if text[j] == b'\\' { 2 } else { 1 };
                }
                if j.min(text.len()) - start > max_string {
                    return Err(BatchError::StringTooLong { max: max_string });
                }
                i = j + 1;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(BatchError::TooDeep { max: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

impl LocationBatch {
    /// [`LocationBatch::decode`] after [`check_shape`] with the depth and string bounds.
    pub fn decode_bounded(text: &str, bounds: &BatchBounds) -> Result<LocationBatch, BatchError> {
        check_shape(text.as_bytes(), bounds.max_depth, bounds.max_string_bytes)?;
        Self::decode(text, bounds.max_fixes)
    }

    /// Decodes a posted batch, stopping at fix `max_fixes + 1`: a body of half a million
    /// tiny fixes costs the decode of `max_fixes`, not half a million slots.
    pub fn decode(text: &str, max_fixes: usize) -> Result<LocationBatch, BatchError> {
        let over = Cell::new(false);
        let mut de = serde_json::Deserializer::from_str(text);
        let batch = BatchSeed {
            max_fixes,
            over: &over,
        }
        .deserialize(&mut de)
        .and_then(|b| de.end().map(|()| b));
        match batch {
            _ if over.get() => Err(BatchError::TooManyFixes { max: max_fixes }),
            Ok(b) => Ok(b),
            Err(e) => Err(e.into()),
        }
    }
}

struct BatchSeed<'a> {
    max_fixes: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = LocationBatch;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LocationBatch, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = LocationBatch;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocationBatch, A::Error> {
        let mut batch_id = None;
        let mut fixes = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "batch_id" => {
                    if batch_id.is_some() {
                        return Err(de::Error::duplicate_field("batch_id"));
                    }
                    batch_id = Some(map.next_value::<Option<String>>()?);
                }
                "fixes" | "locations" => {
                    if fixes.is_some() {
                        return Err(de::Error::duplicate_field("fixes"));
                    }
                    fixes = Some(map.next_value_seed(FixesSeed {
                        max: self.max_fixes,
                        over: self.over,
                    })?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(LocationBatch {
            batch_id: batch_id.flatten(),
            fixes: fixes.ok_or_else(|| de::Error::missing_field("fixes"))?,
        })
    }
}

struct FixesSeed<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for FixesSeed<'_> {
    type Value = Vec<FixSlot>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<FixSlot>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FixesSeed<'_> {
    type Value = Vec<FixSlot>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of fixes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<FixSlot>, A::Error> {
        let mut out = Vec::with_capacity(self.max.min(64));
        while let Some(slot) = seq.next_element::<FixSlot>()? {
            if out.len() == self.max {
                self.over.set(true);
                return Err(de::Error::custom("too many fixes"));
            }
            out.push(slot);
        }
        Ok(out)
    }
}

/// One fix of a posted batch: decoded, or the reason it could not be.
#[derive(Debug, Clone)]
pub struct FixSlot(pub Result<FixInput, String>);

/// A JSON value where a number is expected.
enum Num {
    Value(f64),
    Null,
    Wrong(&'static str),
}

/// A JSON value where an RFC 3339 timestamp is expected.
enum Time {
    Value(DateTime<Utc>),
    Wrong(String),
}

/// The keys of a fix; anything else is skipped.
enum Key {
    Lat,
    Lon,
    RecordedAt,
    Accuracy,
    Altitude,
    Speed,
    Heading,
    Battery,
    Other,
}

/// Consumes any JSON value and names its type, for error messages.
macro_rules! wrong_types {
    ($wrong:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($wrong("a boolean"))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($wrong("an object"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($wrong("an array"))
        }
    };
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::Value(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num::Value(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num::Value(v as f64))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Null)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num::Wrong("a string"))
            }
            wrong_types!(Num::Wrong);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                Ok(match parse_rfc3339(s) {
                    Some(t) => Time::Value(t),
                    None => Time::Wrong(format!(
                        "`recorded_at` {} is not an RFC 3339 timestamp (like 2026-11-23T10:15:00Z)",
                        echo(s)
                    )),
                })
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Time, E> {
                Ok(wrong_time("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Time, E> {
                Ok(wrong_time("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Time, E> {
                Ok(wrong_time("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Time, E> {
                Ok(wrong_time("null"))
            }
            wrong_types!(wrong_time);
        }
        d.deserialize_any(V)
    }
}

fn wrong_time(what: &str) -> Time {
    Time::Wrong(format!(
        "`recorded_at` must be an RFC 3339 timestamp string, not {what}"
    ))
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "lat" => Key::Lat,
                    "lon" => Key::Lon,
                    "recorded_at" => Key::RecordedAt,
                    "accuracy" => Key::Accuracy,
                    "altitude" => Key::Altitude,
                    "speed" => Key::Speed,
                    "heading" => Key::Heading,
                    "battery" => Key::Battery,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for FixSlot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FixSlot;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fix object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FixSlot, A::Error> {
                let mut lat = None;
                let mut lon = None;
                let mut recorded_at = None;
                let mut optional: [Option<Num>; 5] = [None, None, None, None, None];
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Lat => lat = Some(map.next_value::<Num>()?),
                        Key::Lon => lon = Some(map.next_value::<Num>()?),
                        Key::RecordedAt => recorded_at = Some(map.next_value::<Time>()?),
                        Key::Accuracy => optional[0] = Some(map.next_value()?),
                        Key::Altitude => optional[1] = Some(map.next_value()?),
                        Key::Speed => optional[2] = Some(map.next_value()?),
                        Key::Heading => optional[3] = Some(map.next_value()?),
                        Key::Battery => optional[4] = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(FixSlot(assemble(lat, lon, recorded_at, optional)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<FixSlot, E> {
                Ok(not_an_object("a string"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<FixSlot, E> {
                Ok(not_an_object("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<FixSlot, E> {
                Ok(not_an_object("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<FixSlot, E> {
                Ok(not_an_object("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<FixSlot, E> {
                Ok(not_an_object("null"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<FixSlot, E> {
                Ok(not_an_object("a boolean"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FixSlot, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(not_an_object("an array"))
            }
        }
        d.deserialize_any(V)
    }
}

fn not_an_object(what: &str) -> FixSlot {
    FixSlot(Err(format!("a fix must be a JSON object, not {what}")))
}

const OPTIONAL_NAMES: [&str; 5] = ["accuracy", "altitude", "speed", "heading", "battery"];

fn assemble(
    lat: Option<Num>,
    lon: Option<Num>,
    recorded_at: Option<Time>,
    optional: [Option<Num>; 5],
) -> Result<FixInput, String> {
    let required = |name: &str, v: Option<Num>| match v {
        Some(Num::Value(x)) => Ok(x),
        None | Some(Num::Null) => Err(format!("missing field `{name}`")),
        Some(Num::Wrong(t)) => Err(format!("`{name}` must be a number, not {t}")),
    };
    let lat = required("lat", lat)?;
    let lon = required("lon", lon)?;
    let recorded_at = match recorded_at {
        Some(Time::Value(t)) => t,
        Some(Time::Wrong(m)) => return Err(m),
        None => return Err("missing field `recorded_at`".into()),
    };
    let mut values = [None; 5];
    for (i, v) in optional.into_iter().enumerate() {
        values[i] = match v {
            None | Some(Num::Null) => None,
            Some(Num::Value(x)) => Some(x),
            Some(Num::Wrong(t)) => {
                return Err(format!("`{}` must be a number, not {t}", OPTIONAL_NAMES[i]));
            }
        };
    }
    let [accuracy, altitude, speed, heading, battery] = values;
    Ok(FixInput {
        lat,
        lon,
        recorded_at,
        accuracy,
        altitude,
        speed,
        heading,
        battery,
    })
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Parses an RFC 3339 timestamp. The common shape (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`)
/// takes a fast path; anything else goes to chrono's full parser.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    fast_rfc3339(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

fn fast_rfc3339(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let h = i64::from(digits(&b[i + 1..i + 3])?);
            let m = i64::from(digits(&b[i + 4..i + 6])?);
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    // A leap second (ss = 60) fails here and goes to chrono, which knows them.
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = date.and_time(time);
    let utc = local - chrono::Duration::seconds(offset_secs);
    Some(Utc.from_utc_datetime(&utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(json: &str) -> FixSlot {
        serde_json::from_str(json).unwrap()
    }

    const FIX: &str = r#"{"lat":1,"lon":2,"recorded_at":"2026-01-01T00:00:00Z"}"#;

    fn batch_of(n: usize) -> String {
        format!(r#"{{"batch_id":"b","fixes":[{}]}}"#, vec![FIX; n].join(","))
    }

    #[test]
    fn a_batch_decodes_up_to_its_maximum_and_stops_one_past_it() {
        let at = LocationBatch::decode(&batch_of(3), 3).unwrap();
        assert_eq!((at.fixes.len(), at.batch_id.as_deref()), (3, Some("b")));
        let over = LocationBatch::decode(&batch_of(4), 3).unwrap_err();
        assert!(
            matches!(over, BatchError::TooManyFixes { max: 3 }),
            "{over}"
        );
        // The bomb shape: refused at the fourth element, whatever follows.
        let bomb = format!(r#"{{"fixes":[{}]}}"#, vec!["0"; 100_000].join(","));
        assert!(matches!(
            LocationBatch::decode(&bomb, 3),
            Err(BatchError::TooManyFixes { max: 3 })
        ));
        let alias = LocationBatch::decode(&format!(r#"{{"locations":[{FIX}],"x":[1]}}"#), 3);
        assert_eq!(alias.unwrap().fixes.len(), 1);
        for bad in [
            r#"{"fixes":3}"#,
            r#"{"batch_id":"b"}"#,
            r#"{"fixes":[],"fixes":[]}"#,
        ] {
            let e = LocationBatch::decode(bad, 3).unwrap_err();
            assert!(
                matches!(&e, BatchError::Json(j) if j.is_data()),
                "{bad}: {e}"
            );
        }
        let e = LocationBatch::decode(r#"{"fixes":["#, 3).unwrap_err();
        assert!(matches!(&e, BatchError::Json(j) if !j.is_data()), "{e}");
    }

    #[test]
    fn depth_and_string_length_are_bounded_exactly() {
        assert!(check_shape(br#"{"a":[[1]]}"#, 3, 8).is_ok());
        assert!(matches!(
            check_shape(br#"{"a":[[[1]]]}"#, 3, 8),
            Err(BatchError::TooDeep { max: 3 })
        ));
        assert!(check_shape(br#"{"12345678":"a\"b"}"#, 3, 8).is_ok());
        assert!(matches!(
            check_shape(br#"{"a":"123456789"}"#, 3, 8),
            Err(BatchError::StringTooLong { max: 8 })
        ));
        // Brackets inside strings are text, not depth.
        assert!(check_shape(br#"{"a":"[[[[[["}"#, 1, 8).is_ok());
    }

    #[test]
    fn bad_input_is_echoed_as_a_short_prefix_and_its_length() {
        assert_eq!(echo("short"), "\"short\"");
        let long = "9".repeat(900_000);
        let e = slot(&format!(r#"{{"lat":1,"lon":2,"recorded_at":"{long}"}}"#)).0;
        let e = e.unwrap_err();
        assert!(e.len() < 150 && e.contains("… (900000 bytes)"), "{e}");
        // A multi-byte character at the cut is kept whole.
        assert!(echo(&"é".repeat(40)).starts_with(&format!("{:?}", "é".repeat(32))));
    }

    #[test]
    fn a_fix_with_a_wrong_or_missing_field_says_which() {
        assert!(
            slot(r#"{"lat":1,"lon":2,"recorded_at":"2026-01-01T00:00:00Z"}"#)
                .0
                .is_ok()
        );
        let e = slot(r#"{"lat":"north","lon":2,"recorded_at":"2026-01-01T00:00:00Z"}"#).0;
        assert_eq!(e.unwrap_err(), "`lat` must be a number, not a string");
        let e = slot(r#"{"lat":1,"recorded_at":"2026-01-01T00:00:00Z","x":{"deep":[1]}}"#).0;
        assert_eq!(e.unwrap_err(), "missing field `lon`");
        let e = slot(r#"{"lat":1,"lon":2,"recorded_at":1700000000}"#).0;
        assert!(e.unwrap_err().contains("RFC 3339"));
        let e = slot(r#"{"lat":1,"lon":2,"recorded_at":"2026-01-01T00:00:00Z","speed":[1]}"#).0;
        assert_eq!(e.unwrap_err(), "`speed` must be a number, not an array");
        let e = slot(r#"[1,2]"#).0;
        assert!(e.unwrap_err().contains("JSON object"));
    }

    #[test]
    fn null_optional_fields_read_as_absent() {
        let f = slot(r#"{"lat":1,"lon":2,"recorded_at":"2026-01-01T00:00:00Z","battery":null}"#)
            .0
            .unwrap();
        assert_eq!(f.battery, None);
    }

    #[test]
    fn unusual_but_valid_timestamps_fall_back_to_chrono() {
        let leap = parse_rfc3339("2016-12-31T23:59:60Z");
        assert_eq!(
            leap,
            DateTime::parse_from_rfc3339("2016-12-31T23:59:60Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        assert!(parse_rfc3339("2026-02-30T00:00:00Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn every_optional_field_is_decoded() {
        let f = slot(
            r#"{"lat":1,"lon":2,"recorded_at":"2026-01-01T00:00:00Z","accuracy":3,"altitude":-4.5,"speed":5,"heading":6,"battery":7,"unknown":8}"#,
        )
        .0
        .unwrap();
        assert_eq!(
            (f.accuracy, f.altitude, f.speed, f.heading, f.battery),
            (Some(3.0), Some(-4.5), Some(5.0), Some(6.0), Some(7.0))
        );
    }

    #[test]
    fn a_field_name_that_is_not_a_string_says_what_was_expected() {
        let e = serde_json::from_str::<Key>("1").err().unwrap().to_string();
        assert!(e.contains("a field name"), "{e}");
    }

    #[test]
    fn the_fast_path_declines_every_other_shape() {
        for text in [
            "2026-11-23T10:15:00",  // no zone
            "2026x11-23T10:15:00Z", // date separators
            "2026-11x23T10:15:00Z",
            "2026-11-23X10:15:00Z", // date-time separator
            "2026-11-23T10x15:00Z", // time separators
            "2026-11-23T10:15x00Z",
            "2026-11-23T10:15:00Zjunk",   // trailing text after Z
            "2026-11-23T10:15:00+01:00x", // trailing text after an offset
            "2026-11-23T10:15:00+01x00",  // offset separator
            "2026-11-23T10:15:00.Z",      // a dot without digits
        ] {
            assert_eq!(fast_rfc3339(text.as_bytes()), None, "{text}");
        }
        let t = |s: &str| fast_rfc3339(s.as_bytes()).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2026-11-23 10:15:00Z").as_deref(),
            Some("2026-11-23T10:15:00+00:00")
        );
        assert_eq!(
            t("2026-11-23T10:15:00-02:30").as_deref(),
            Some("2026-11-23T12:45:00+00:00")
        );
        // Nine fraction digits are kept, a tenth is dropped, not rounded or shifted.
        assert_eq!(
            t("2026-11-23T10:15:00.1234567899Z").as_deref(),
            Some("2026-11-23T10:15:00.123456789+00:00")
        );
        assert_eq!(
            t("2026-11-23T10:15:00.9999999999Z").as_deref(),
            Some("2026-11-23T10:15:00.999999999+00:00")
        );
        assert_eq!(
            t("2026-11-23T10:15:00.12345678Z").as_deref(),
            Some("2026-11-23T10:15:00.123456780+00:00")
        );
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_chrono(
            secs in 0i64..4_102_444_800,
            nanos in 0u32..1_000_000_000,
            digits in 0usize..10,
            offset_min in -1439i32..1440,
            zulu in any::<bool>(),
        ) {
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            let frac = if digits == 0 { String::new() } else { format!(".{:09}", nanos)[..=digits].to_owned() };
            let text = if zulu {
                format!("{}{}Z", t.format("%Y-%m-%dT%H:%M:%S"), frac)
            } else {
                let off = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
                let local = t.with_timezone(&off);
                format!("{}{}{}", local.format("%Y-%m-%dT%H:%M:%S"), frac, local.format("%:z"))
            };
            let expected = DateTime::parse_from_rfc3339(&text).unwrap().with_timezone(&Utc);
            prop_assert_eq!(fast_rfc3339(text.as_bytes()), Some(expected));
        }
    }
}
