//! Decoders of the bodies that existing tracking apps send, into the native fix shape.
//!
//! Each format ([`transistor`], [`osmand`], [`owntracks`], [`overland`], and the seed
//! system's aliases in [`seed`]) turns one request into a [`ClientBatch`]: the fixes in
//! native units (metres, m/s, degrees, UTC, battery percent), the device the body names,
//! and whether it was only a heartbeat. Validation ([`crate::api::Fix::validate`]), dedupe
//! and the rest are the native path's, so a client fix is refused for the same reasons.
//!
//! Every decoder is bounded like the native one ([`crate::decode`]): one pre-scan for depth
//! and string length before anything is built, a list stops at fix `max_fixes + 1`, and the
//! values kept as attributes have a budget, so no input makes a decoder allocate without
//! bound or panic (the fuzz targets in `wire/fuzz` hold them to that).

pub mod osmand;
pub mod overland;
pub mod owntracks;
pub mod seed;
pub mod transistor;

use std::cell::Cell;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::api::FixInput;
use crate::decode::{BatchBounds, BatchError, check_shape, echo, parse_rfc3339};

/// One fix of a client body: decoded into the native shape, or what was wrong with it
/// (then it is rejected alone, with its index, like a native fix).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFix {
    /// The fix in native units, or why it could not be read.
    pub input: Result<FixInput, String>,
    /// The client's own id of the fix (its dedupe key), when the format has one.
    pub key: Option<String>,
    /// What the app sent beside the position, for [`crate::api::Fix::attributes`].
    pub attributes: Option<Map<String, Value>>,
}

/// What one client request carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientBatch {
    /// The device the body names (`device_id`, `id`, ...); the route decides whether to
    /// trust it (a device credential names the device too).
    pub device: Option<String>,
    /// The fixes, in the order sent.
    pub fixes: Vec<ClientFix>,
    /// True when the request carried no position: the app only said it is alive.
    pub heartbeat: bool,
}

/// Most query or form parameters of one OsmAnd request.
pub const MAX_PARAMETERS: usize = 256;

/// Most JSON values (each key, number, string, array, object) kept per fix of a body, on
/// top of [`VALUE_BUDGET_BASE`]: what an app sends beside a position (extras, activity) is
/// kept, so its size needs a bound of its own.
pub const VALUES_PER_FIX: usize = 64;

/// JSON values allowed in any body, whatever its fix count.
pub const VALUE_BUDGET_BASE: usize = 1024;

/// Longest client fix key (`uuid`), in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Why a client body was refused as a whole. Each message says what was wrong and how to
/// send it instead; a single bad fix is not an error here but a [`ClientFix`] with `Err`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not JSON at all.
    #[error("the body is not valid JSON ({0}); send the app's JSON body unchanged")]
    Json(#[source] serde_json::Error),
    /// JSON, but not of the format's shape.
    #[error("{0}")]
    Shape(String),
    /// More fixes (or list elements) than the batch maximum.
    #[error(
        "the body holds more than {max} fixes (or a list longer than that); send at most {max} per request"
    )]
    TooManyFixes {
        /// The batch maximum.
        max: usize,
    },
    /// Nested deeper than the depth bound.
    #[error("the JSON nests deeper than {max} levels; send the app's body without extra nesting")]
    TooDeep {
        /// The depth bound.
        max: usize,
    },
    /// A string longer than the string bound.
    #[error("a string of the body is longer than {max} bytes; shorten it (extras, ids)")]
    StringTooLong {
        /// The string bound.
        max: usize,
    },
    /// More JSON values than the body's budget (large extras).
    #[error(
        "the body holds more than {max} JSON values; send fewer extras per fix or fewer fixes per request"
    )]
    TooManyValues {
        /// The budget of this body.
        max: usize,
    },
    /// More query or form parameters than [`MAX_PARAMETERS`].
    #[error("the request has more than {max} parameters; send only the OsmAnd ones")]
    TooManyParameters {
        /// [`MAX_PARAMETERS`].
        max: usize,
    },
    /// An OsmAnd request without `id` or `deviceid`.
    #[error(
        "the request names no device: add the parameter `id` (or `deviceid`), the app's device identifier"
    )]
    NoDevice,
    /// A seed update without its session id.
    #[error(
        "the body has no `session_id`: add the id that `POST /location/session/start` answered"
    )]
    NoSession,
}

impl From<BatchError> for ClientError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::TooManyFixes { max } => Self::TooManyFixes { max },
            BatchError::TooDeep { max } => Self::TooDeep { max },
            BatchError::StringTooLong { max } => Self::StringTooLong { max },
            BatchError::Json(j) if j.is_data() => Self::Shape(j.to_string()),
            BatchError::Json(j) => Self::Json(j),
        }
    }
}

/// The JSON value budget of a body under `bounds`.
pub fn value_budget(bounds: &BatchBounds) -> usize {
    bounds
        .max_fixes
        .saturating_mul(VALUES_PER_FIX)
        .saturating_add(VALUE_BUDGET_BASE)
}

/// Parses `body` into a JSON value within `bounds`: [`check_shape`] first (depth, string
/// length), then a build that stops at the value budget and at any list longer than
/// `bounds.max_fixes`, so memory stays proportional to what a legal body needs.
pub(crate) fn parse_json(body: &str, bounds: &BatchBounds) -> Result<Value, ClientError> {
    check_shape(body.as_bytes(), bounds.max_depth, bounds.max_string_bytes)?;
    let over = Cell::new(None);
    let budget = Cell::new(value_budget(bounds));
    let mut de = serde_json::Deserializer::from_str(body);
    let value = Bounded {
        budget: &budget,
        max_list: bounds.max_fixes,
        over: &over,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (over.get(), value) {
        (Some(Over::List), _) => Err(ClientError::TooManyFixes {
            max: bounds.max_fixes,
        }),
        (Some(Over::Values), _) => Err(ClientError::TooManyValues {
            max: value_budget(bounds),
        }),
        (None, Ok(v)) => Ok(v),
        (None, Err(e)) => Err(ClientError::Json(e)),
    }
}

/// Which bound a bounded parse ran into.
#[derive(Debug, Clone, Copy)]
enum Over {
    List,
    Values,
}

/// A [`Value`] deserializer that spends one unit of `budget` per value and refuses lists
/// longer than `max_list`.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Cell<usize>,
    max_list: usize,
    over: &'a Cell<Option<Over>>,
}

impl Bounded<'_> {
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => {
                self.over.set(Some(Over::Values));
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend()?;
        // serde_json never yields a non-finite number, so `from_f64` cannot fail here.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            if out.len() == self.max_list {
                self.over.set(Some(Over::List));
                return Err(de::Error::custom("list too long"));
            }
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.spend()?;
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A number in a client body: JSON numbers, and numeric strings (some apps quote them).
pub(crate) enum Number {
    /// Absent or `null`.
    Absent,
    /// A finite number.
    Value(f64),
    /// Something else, named for the message.
    Wrong(String),
}

/// Reads `field` of `obj` as a number; `name` is how a message names it.
pub(crate) fn number(obj: &Map<String, Value>, field: &str, name: &str) -> Number {
    match obj.get(field) {
        None | Some(Value::Null) => Number::Absent,
        Some(v) => number_value(v, name),
    }
}

/// Reads one value as a number.
pub(crate) fn number_value(v: &Value, name: &str) -> Number {
    match v {
        Value::Null => Number::Absent,
        Value::Number(n) => n.as_f64().map_or_else(
            || Number::Wrong(format!("`{name}` is not a number")),
            Number::Value,
        ),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Number::Value(x),
            _ => Number::Wrong(format!("`{name}` {} is not a number", echo(s))),
        },
        other => Number::Wrong(format!("`{name}` must be a number, not {}", kind(other))),
    }
}

/// A required number: present and numeric.
pub(crate) fn required(n: Number, name: &str) -> Result<f64, String> {
    match n {
        Number::Value(x) => Ok(x),
        Number::Absent => Err(format!("missing field `{name}`")),
        Number::Wrong(m) => Err(m),
    }
}

/// An optional number where a negative value (the apps send -1) means unknown.
pub(crate) fn unknown_if_negative(n: Number) -> Result<Option<f64>, String> {
    match n {
        Number::Value(x) if x < 0.0 => Ok(None),
        Number::Value(x) => Ok(Some(x)),
        Number::Absent => Ok(None),
        Number::Wrong(m) => Err(m),
    }
}

/// An optional number taken as it is (altitude: negative is a real value).
pub(crate) fn optional(n: Number) -> Result<Option<f64>, String> {
    match n {
        Number::Value(x) => Ok(Some(x)),
        Number::Absent => Ok(None),
        Number::Wrong(m) => Err(m),
    }
}

/// The JSON type of `v`, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A client fix key: 1 to [`MAX_KEY_LEN`] printable ASCII characters.
pub(crate) fn fix_key(v: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_KEY_LEN
                && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(s.clone()))
        }
        Some(Value::String(s)) => Err(format!(
            "`{name}` {} must be 1 to {MAX_KEY_LEN} printable ASCII characters",
            echo(s)
        )),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("`{name}` must be a string, not {}", kind(other))),
    }
}

/// A device id as a body names it: a non-empty string, or a number written as text.
pub(crate) fn device_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses the timestamps apps send as text: RFC 3339, ISO 8601 with an offset without a
/// colon (`+0100`) or without a zone (read as UTC), and `yyyy-MM-dd HH:mm:ss` (UTC).
pub fn parse_iso8601(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    None
}

/// Epoch seconds, or milliseconds when the number is too large to be seconds (after the
/// year 5138 in seconds, before 1973 in milliseconds: no real fix is ambiguous).
pub fn from_epoch(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() {
        return None;
    }
    let millis = if x.abs() >= 100_000_000_000.0 {
        x
    } else {
        x * 1000.0
    };
    // Beyond chrono's range (about ±262,000 years) is not a time.
    if millis.abs() > 8.0e15 {
        return None;
    }
    Utc.timestamp_millis_opt(millis.round() as i64).single()
}

/// Reads a timestamp value: an ISO 8601 string, or epoch seconds or milliseconds.
pub(crate) fn time_value(v: Option<&Value>, name: &str) -> Result<DateTime<Utc>, String> {
    let bad = |what: String| {
        format!(
            "`{name}` {what} is not a timestamp (send ISO 8601 like 2026-11-23T10:15:00Z, or epoch seconds)"
        )
    };
    match v {
        None | Some(Value::Null) => Err(format!("missing field `{name}`")),
        Some(Value::String(s)) => parse_iso8601(s)
            .or_else(|| s.trim().parse::<f64>().ok().and_then(from_epoch))
            .ok_or_else(|| bad(echo(s))),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(from_epoch)
            .ok_or_else(|| bad(n.to_string())),
        Some(other) => Err(format!(
            "`{name}` must be a timestamp string, not {}",
            kind(other)
        )),
    }
}

/// Puts `value` into `attributes` under `key` unless it is absent or null.
pub(crate) fn keep(attributes: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    if let Some(v) = value
        && !v.is_null()
    {
        attributes.insert(key.to_owned(), v.clone());
    }
}

/// `None` for an empty map, so a fix without extras carries none.
pub(crate) fn non_empty(attributes: Map<String, Value>) -> Option<Map<String, Value>> {
    (!attributes.is_empty()).then_some(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const BOUNDS: BatchBounds = BatchBounds {
        max_fixes: 4,
        max_depth: 8,
        max_string_bytes: 64,
    };

    #[test]
    fn the_bounded_parse_stops_at_a_list_one_past_the_maximum() {
        assert!(parse_json("[1,2,3,4]", &BOUNDS).is_ok());
        assert!(matches!(
            parse_json("[1,2,3,4,5]", &BOUNDS),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
        let bomb = format!("[{}]", vec!["0"; 100_000].join(","));
        assert!(matches!(
            parse_json(&bomb, &BOUNDS),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
    }

    #[test]
    fn the_bounded_parse_spends_a_budget_of_values() {
        let max = value_budget(&BOUNDS);
        // 256 objects of three lists of three (16 values each) in lists of four: no list is
        // over the maximum, the whole is over the budget.
        let mut body = r#"{"a":[1,2,3],"b":[1,2,3],"c":[1,2,3]}"#.to_owned();
        for _ in 0..4 {
            body = format!("[{}]", vec![body; 4].join(","));
        }
        assert!(matches!(
            parse_json(&body, &BOUNDS),
            Err(ClientError::TooManyValues { max: m }) if m == max
        ));
        assert!(matches!(
            parse_json(&"[".repeat(9), &BOUNDS),
            Err(ClientError::TooDeep { max: 8 })
        ));
        assert!(matches!(
            parse_json(&format!("\"{}\"", "x".repeat(65)), &BOUNDS),
            Err(ClientError::StringTooLong { max: 64 })
        ));
        assert!(matches!(
            parse_json("{", &BOUNDS),
            Err(ClientError::Json(_))
        ));
        assert!(matches!(
            parse_json("1 2", &BOUNDS),
            Err(ClientError::Json(_))
        ));
    }

    #[test]
    fn timestamps_in_the_shapes_apps_send_are_read_as_utc() {
        let t = |s: &str| parse_iso8601(s).map(|t| t.to_rfc3339());
        let want = Some("2017-01-01T17:00:00+00:00".to_owned());
        assert_eq!(t("2017-01-01T10:00:00-0700"), want);
        assert_eq!(t("2017-01-01T10:00:00-07:00"), want);
        assert_eq!(t("2017-01-01T17:00:00Z"), want);
        assert_eq!(t("2017-01-01T17:00:00"), want);
        assert_eq!(t("2017-01-01 17:00:00"), want);
        assert_eq!(
            t("2017-10-19T23:52:28.551Z").as_deref(),
            Some("2017-10-19T23:52:28.551+00:00")
        );
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2017-02-30 10:00:00"), None);
    }

    #[test]
    fn epoch_seconds_and_milliseconds_are_told_apart() {
        let secs = from_epoch(1_700_000_000.0).unwrap();
        assert_eq!(from_epoch(1_700_000_000_000.0), Some(secs));
        assert_eq!(
            from_epoch(1_700_000_000.25).unwrap().timestamp_millis(),
            1_700_000_000_250
        );
        assert_eq!(from_epoch(f64::NAN), None);
        assert_eq!(from_epoch(1e300), None);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: BatchBounds = BatchBounds {
        max_fixes: 8,
        max_depth: 12,
        max_string_bytes: 256,
    };

    /// Names the decoders look for, so generated bodies reach past the first check.
    const KEYS: &[&str] = &[
        "location",
        "coords",
        "latitude",
        "longitude",
        "timestamp",
        "uuid",
        "battery",
        "level",
        "device_id",
        "device",
        "extras",
        "activity",
        "type",
        "_type",
        "lat",
        "lon",
        "tst",
        "vel",
        "acc",
        "batt",
        "locations",
        "geometry",
        "coordinates",
        "properties",
        "speed",
        "course",
        "battery_level",
        "session_id",
        "fixes",
        "recorded_at",
        "heading",
        "accuracy",
    ];

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            (-2.0f64..200.0).prop_map(Value::from),
            Just(Value::from(-1)),
            prop_oneof![
                Just("location".to_owned()),
                Just("2017-10-19T23:52:28.551Z".to_owned()),
                Just("2017-01-01T10:00:00-0700".to_owned()),
                Just("Point".to_owned()),
                "\\PC{0,12}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(
                    |pairs| Value::Object(
                        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )
                ),
            ]
        })
    }

    fn query() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            prop::sample::select(
                &[
                    "id",
                    "deviceid",
                    "lat",
                    "lon",
                    "location",
                    "timestamp",
                    "speed",
                    "bearing",
                    "heading",
                    "altitude",
                    "accuracy",
                    "batt",
                    "hdop",
                    "x",
                ][..]
            )
            .prop_map(str::to_owned),
            "\\PC{0,6}",
        ];
        let value = prop_oneof![
            (-200.0f64..200.0).prop_map(|x| x.to_string()),
            any::<i64>().prop_map(|x| x.to_string()),
            Just("2023-11-14%2022:13:20".to_owned()),
            Just("1,2".to_owned()),
            "[%&=+a-z0-9.:-]{0,16}",
        ];
        prop::collection::vec((name, value), 0..12).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    /// Runs every JSON decoder on `body` and checks the bounds of what they answer.
    fn every_json_decoder(body: &str) -> Result<(), TestCaseError> {
        if let Ok(b) = transistor::decode(body, &BOUNDS) {
            prop_assert!(!b.fixes.is_empty() && b.fixes.len() <= BOUNDS.max_fixes);
            for f in &b.fixes {
                if let Some(k) = &f.key {
                    prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
                }
            }
        }
        if let Ok(b) = overland::decode(body, &BOUNDS) {
            prop_assert!(b.fixes.len() <= BOUNDS.max_fixes);
            prop_assert_eq!(b.heartbeat, b.fixes.is_empty());
        }
        if let Ok(m) = owntracks::decode(body, &BOUNDS) {
            prop_assert!(m.batch.fixes.len() <= usize::from(m.kind == "location"));
        }
        if let Ok(u) = seed::decode_update(body, &BOUNDS) {
            prop_assert!(!u.session_id.is_empty());
            prop_assert!(u.batch.fixes.len() <= BOUNDS.max_fixes);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn no_decoder_panics_on_any_text(body in "\\PC{0,200}") {
            every_json_decoder(&body)?;
            let _ = osmand::decode(&body, Some(&body), chrono::Utc::now(), &BOUNDS);
        }

        #[test]
        fn no_decoder_panics_on_json_of_any_shape(value in json()) {
            let body = value.to_string();
            every_json_decoder(&body)?;
        }

        #[test]
        fn osmand_answers_a_device_or_refuses_for_its_lack(q in query()) {
            match osmand::decode(&q, None, chrono::Utc::now(), &BOUNDS) {
                Ok(b) => {
                    prop_assert!(b.device.as_deref().is_some_and(|d| !d.is_empty()));
                    prop_assert_eq!(b.heartbeat, b.fixes.is_empty());
                    prop_assert!(b.fixes.len() <= 1);
                }
                Err(e) => prop_assert!(matches!(
                    e,
                    ClientError::NoDevice | ClientError::StringTooLong { .. }
                ), "{}", e),
            }
        }

        #[test]
        fn units_convert_to_native_ones(level in 0.0f64..=1.0, knots in 0.0f64..200.0, kmh in 0.0f64..500.0) {
            let body = format!(
                r#"{{"location":{{"timestamp":"2026-01-01T00:00:00Z","coords":{{"latitude":1,"longitude":2,"speed":{knots}}},"battery":{{"level":{level}}}}}}}"#
            );
            let f = transistor::decode(&body, &BOUNDS).unwrap().fixes.remove(0).input.unwrap();
            prop_assert!((f.battery.unwrap() - level * 100.0).abs() < 1e-9);
            // The SDK's speed is already m/s. (serde_json without `float_roundtrip` may read a
            // number one ulp off, hence the tolerance.)
            prop_assert!((f.speed.unwrap() - knots).abs() < 1e-9);
            let q = format!("id=d&lat=1&lon=2&speed={knots}");
            let f = osmand::decode(&q, None, chrono::Utc::now(), &BOUNDS).unwrap().fixes.remove(0).input.unwrap();
            prop_assert!((f.speed.unwrap() - knots * 0.514444).abs() < 1e-9);
            let body = format!(r#"{{"_type":"location","lat":1,"lon":2,"tst":1700000000,"vel":{kmh}}}"#);
            let f = owntracks::decode(&body, &BOUNDS).unwrap().batch.fixes.remove(0).input.unwrap();
            prop_assert!((f.speed.unwrap() - kmh / 3.6).abs() < 1e-9);
        }
    }
}
