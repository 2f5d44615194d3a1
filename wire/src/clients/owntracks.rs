//! OwnTracks in HTTP mode: one JSON message per POST, its type in `_type`.
//!
//! `location` messages become one fix: `lat`, `lon`, `tst` (epoch seconds), `acc` and
//! `alt` (metres), `vel` (km/h), `cog` (degrees), `batt` (percent); the other fields
//! (`tid`, `conn`, `t`, `m`, `inregions`, `SSID`, ...) are kept as attributes. Every other
//! type (`transition`, `waypoint`, `lwt`, `card`, `status`, `encrypted`, ...) is accepted
//! with no fix, as OwnTracks expects of a server that does not use them. User and device
//! come from the request (basic auth, `u`/`d`, `X-Limit-U`/`X-Limit-D`), not the body.

use serde_json::{Map, Value};

use super::{
    ClientBatch, ClientError, ClientFix, kind, number, optional, parse_json, required, time_value,
    unknown_if_negative,
};
use crate::api::FixInput;
use crate::decode::BatchBounds;

/// One OwnTracks message.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnTracks {
    /// Its `_type`.
    pub kind: String,
    /// One fix for a `location` message, none for the other types.
    pub batch: ClientBatch,
    /// The tracker id (`tid`), two characters the app shows on its map.
    pub tid: Option<String>,
}

/// Fields read into the fix; the rest of a location message are attributes.
const KNOWN: &[&str] = &[
    "_type", "lat", "lon", "tst", "acc", "alt", "vel", "cog", "batt",
];

/// Decodes one OwnTracks message.
pub fn decode(body: &str, bounds: &BatchBounds) -> Result<OwnTracks, ClientError> {
    let root = parse_json(body, bounds)?;
    let Value::Object(message) = root else {
        return Err(ClientError::Shape(format!(
            "the body is {}, not an OwnTracks message (a JSON object with `_type`); use the app's HTTP mode",
            kind(&root)
        )));
    };
    let kind = match message.get("_type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(ClientError::Shape(
                "the message has no `_type` string; OwnTracks messages carry one (\"location\", \"transition\", ...)"
                    .to_owned(),
            ));
        }
    };
    let tid = match message.get("tid") {
        Some(Value::String(t)) => Some(t.clone()),
        _ => None,
    };
    let mut batch = ClientBatch::default();
    if kind == "location" {
        let mut attributes = Map::new();
        for (k, v) in &message {
            if !KNOWN.contains(&k.as_str()) && !v.is_null() {
                attributes.insert(k.clone(), v.clone());
            }
        }
        batch.fixes.push(ClientFix {
            input: fix_input(&message),
            key: None,
            attributes: (!attributes.is_empty()).then_some(attributes),
        });
    }
    Ok(OwnTracks { kind, batch, tid })
}

fn fix_input(m: &Map<String, Value>) -> Result<FixInput, String> {
    Ok(FixInput {
        lat: required(number(m, "lat", "lat"), "lat")?,
        lon: required(number(m, "lon", "lon"), "lon")?,
        recorded_at: time_value(m.get("tst"), "tst")?,
        accuracy: unknown_if_negative(number(m, "acc", "acc"))?,
        altitude: optional(number(m, "alt", "alt"))?,
        speed: unknown_if_negative(number(m, "vel", "vel"))?.map(|kmh| kmh / 3.6),
        heading: unknown_if_negative(number(m, "cog", "cog"))?,
        battery: unknown_if_negative(number(m, "batt", "batt"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::BOUNDS;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_location_message_reads_in_native_units() {
        // The example of the OwnTracks booklet (JSON format, `_type: location`).
        let body = r#"{"_type":"location","acc":13,"alt":48,"batt":77,"bs":1,"conn":"w","created_at":1700000003,"lat":51.5072,"lon":-0.1276,"m":1,"t":"u","tid":"jj","tst":1700000000,"vac":3,"vel":36,"cog":271,"topic":"owntracks/jane/phone","inregions":["home"]}"#;
        let m = decode(body, &BOUNDS).unwrap();
        assert_eq!(
            (m.kind.as_str(), m.tid.as_deref()),
            ("location", Some("jj"))
        );
        let fix = &m.batch.fixes[0];
        let f = fix.input.as_ref().unwrap();
        assert_eq!((f.lat, f.lon), (51.5072, -0.1276));
        assert_eq!(f.recorded_at, Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        assert!((f.speed.unwrap() - 10.0).abs() < 1e-9, "36 km/h is 10 m/s");
        assert_eq!(
            (f.accuracy, f.altitude, f.heading, f.battery),
            (Some(13.0), Some(48.0), Some(271.0), Some(77.0))
        );
        let a = fix.attributes.as_ref().unwrap();
        assert_eq!(
            (&a["conn"], &a["tid"], &a["inregions"][0]),
            (&Value::from("w"), &Value::from("jj"), &Value::from("home"))
        );
        assert!(!a.contains_key("lat") && !a.contains_key("_type"));
    }

    #[test]
    fn a_minimal_location_has_only_the_required_fields() {
        // iOS in significant-change mode sends little more than this; vel -1 is unknown.
        let m = decode(
            r#"{"_type":"location","lat":1.5,"lon":2.5,"tst":1700000000,"vel":-1}"#,
            &BOUNDS,
        )
        .unwrap();
        let f = m.batch.fixes[0].input.as_ref().unwrap();
        assert_eq!((f.accuracy, f.speed, f.battery), (None, None, None));
        assert_eq!(m.tid, None);
        let e = decode(r#"{"_type":"location","lat":1.5,"lon":2.5}"#, &BOUNDS).unwrap();
        assert_eq!(
            e.batch.fixes[0].input.as_ref().unwrap_err(),
            "missing field `tst`"
        );
    }

    #[test]
    fn other_message_types_are_accepted_without_fixes() {
        for body in [
            r#"{"_type":"transition","wtst":1700000000,"lat":1,"lon":2,"tst":1700000000,"acc":5,"tid":"jj","event":"enter","desc":"home","t":"c"}"#,
            r#"{"_type":"lwt","tst":1700000000}"#,
            r#"{"_type":"waypoints","waypoints":[{"_type":"waypoint","desc":"home","lat":1,"lon":2,"rad":50,"tst":1}]}"#,
            r#"{"_type":"encrypted","data":"aGVsbG8="}"#,
            r#"{"_type":"status","android":{"hib":1}}"#,
        ] {
            let m = decode(body, &BOUNDS).unwrap();
            assert!(m.batch.fixes.is_empty(), "{body}");
            assert_ne!(m.kind, "location");
        }
    }

    #[test]
    fn a_body_without_a_type_is_refused_with_how_to_fix() {
        for body in [r#"{"lat":1,"lon":2}"#, "[]", r#"{"_type":5}"#] {
            let e = decode(body, &BOUNDS).unwrap_err();
            assert!(matches!(e, ClientError::Shape(_)), "{body}: {e}");
            assert!(e.to_string().contains("_type"), "{e}");
        }
    }
}
