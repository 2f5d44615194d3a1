//! The JSON of Transistorsoft's background-geolocation SDKs (react-native, flutter,
//! cordova, capacitor), which Traccar Client 9+ posts too.
//!
//! Shapes taken (`httpRootProperty` decides which one an app sends):
//! - `{"location": {..}, ..params}`: one location (the default root property);
//! - `{"location": [{..}, ..], ..params}`: a batch sync (`batchSync: true`);
//! - `[{"location": ..}, ..]`: a list of such envelopes;
//! - `{"coords": {..}, ..params}` or `[{"coords": ..}, ..]`: `httpRootProperty: "."`, the
//!   location itself at the root.
//!
//! `params` are merged at the root by the SDK: `device_id` names the device, or a `device`
//! object (`uuid`, `identifier`, `id`). Units are already native except `battery.level`
//! (0..1, read as percent); -1 means unknown for speed, heading, accuracy and battery.

use serde_json::{Map, Value};

use super::{
    ClientBatch, ClientError, ClientFix, device_text, fix_key, keep, kind, non_empty, number,
    optional, parse_json, required, time_value, unknown_if_negative,
};
use crate::api::FixInput;
use crate::decode::BatchBounds;

/// Decodes one Transistorsoft (or Traccar Client 9+) request body.
pub fn decode(body: &str, bounds: &BatchBounds) -> Result<ClientBatch, ClientError> {
    let root = parse_json(body, bounds)?;
    let mut out = ClientBatch::default();
    match &root {
        Value::Array(envelopes) => {
            for envelope in envelopes {
                let Value::Object(envelope) = envelope else {
                    out.fixes.push(not_an_object(envelope));
                    continue;
                };
                envelope_into(envelope, &mut out, bounds)?;
            }
        }
        Value::Object(envelope) => envelope_into(envelope, &mut out, bounds)?,
        other => {
            return Err(ClientError::Shape(format!(
                "the body is {}, not a background-geolocation JSON object with `location`; \
                 set the SDK's httpRootProperty to \"location\" (its default)",
                kind(other)
            )));
        }
    }
    if out.fixes.is_empty() {
        return Err(ClientError::Shape(
            "the body has no `location` (an object or a list of them, each with `coords` and `timestamp`); \
             send the SDK's body unchanged with httpRootProperty \"location\""
                .to_owned(),
        ));
    }
    Ok(out)
}

/// Adds the fixes of one envelope (or a root-level location) and takes its device.
fn envelope_into(
    envelope: &Map<String, Value>,
    out: &mut ClientBatch,
    bounds: &BatchBounds,
) -> Result<(), ClientError> {
    if out.device.is_none() {
        out.device = device(envelope);
    }
    match envelope.get("location") {
        Some(Value::Array(locations)) => {
            for l in locations {
                out.fixes.push(match l {
                    Value::Object(l) => location(l),
                    other => not_an_object(other),
                });
            }
        }
        Some(Value::Object(l)) => out.fixes.push(location(l)),
        Some(other) => out.fixes.push(not_an_object(other)),
        // `httpRootProperty: "."`: the location is the envelope.
        None if envelope.contains_key("coords") => out.fixes.push(location(envelope)),
        None => {}
    }
    if out.fixes.len() > bounds.max_fixes {
        return Err(ClientError::TooManyFixes {
            max: bounds.max_fixes,
        });
    }
    Ok(())
}

/// The device a body names: `device_id`, or `device.uuid` / `.identifier` / `.id`.
fn device(envelope: &Map<String, Value>) -> Option<String> {
    device_text(envelope.get("device_id")).or_else(|| match envelope.get("device") {
        Some(Value::Object(d)) => ["uuid", "identifier", "id"]
            .iter()
            .find_map(|k| device_text(d.get(*k))),
        other => device_text(other),
    })
}

fn not_an_object(v: &Value) -> ClientFix {
    ClientFix {
        input: Err(format!("a location must be a JSON object, not {}", kind(v))),
        key: None,
        attributes: None,
    }
}

/// One SDK location object.
fn location(l: &Map<String, Value>) -> ClientFix {
    let key = fix_key(l.get("uuid"), "uuid");
    let mut attributes = Map::new();
    for field in ["is_moving", "odometer", "event", "mock", "sample", "age"] {
        keep(&mut attributes, field, l.get(field));
    }
    if let Some(Value::Object(a)) = l.get("activity") {
        keep(&mut attributes, "activity", a.get("type"));
        keep(&mut attributes, "activity_confidence", a.get("confidence"));
    }
    if let Some(Value::Object(b)) = l.get("battery") {
        keep(&mut attributes, "is_charging", b.get("is_charging"));
    }
    keep(&mut attributes, "extras", l.get("extras"));
    let input = key
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| fix_input(l));
    ClientFix {
        input,
        key: key.unwrap_or(None),
        attributes: non_empty(attributes),
    }
}

fn fix_input(l: &Map<String, Value>) -> Result<FixInput, String> {
    let coords = match l.get("coords") {
        Some(Value::Object(c)) => c,
        None | Some(Value::Null) => return Err("missing field `coords`".to_owned()),
        Some(other) => return Err(format!("`coords` must be an object, not {}", kind(other))),
    };
    let lat = required(
        number(coords, "latitude", "coords.latitude"),
        "coords.latitude",
    )?;
    let lon = required(
        number(coords, "longitude", "coords.longitude"),
        "coords.longitude",
    )?;
    let recorded_at = time_value(l.get("timestamp"), "timestamp")?;
    let battery = match l.get("battery") {
        Some(Value::Object(b)) => {
            unknown_if_negative(number(b, "level", "battery.level"))?.map(|level| level * 100.0)
        }
        _ => None,
    };
    Ok(FixInput {
        lat,
        lon,
        recorded_at,
        accuracy: unknown_if_negative(number(coords, "accuracy", "coords.accuracy"))?,
        altitude: optional(number(coords, "altitude", "coords.altitude"))?,
        speed: unknown_if_negative(number(coords, "speed", "coords.speed"))?,
        heading: unknown_if_negative(number(coords, "heading", "coords.heading"))?,
        battery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::BOUNDS;
    use chrono::{TimeZone, Utc};

    /// A location as the SDK documents it (`Location` in its API docs), with the -1
    /// unknowns of a fix taken without motion and the extras an app attached.
    const LOCATION: &str = r#"{
        "timestamp": "2017-10-19T23:52:28.551Z",
        "odometer": 1612.4,
        "is_moving": false,
        "uuid": "0b5c3a8e-2f58-4e2f-a9a7-8b3a5b1e4c11",
        "event": "motionchange",
        "activity": {"type": "still", "confidence": 100},
        "battery": {"level": 0.83, "is_charging": false},
        "coords": {"latitude": 45.5192292, "longitude": -73.6169397, "accuracy": 22.9,
                   "speed": -1, "heading": -1, "altitude": -5.8, "ellipsoidal_altitude": 25.4,
                   "altitude_accuracy": 3.4, "floor": null},
        "extras": {"route_id": 123},
        "mock": true
    }"#;

    #[test]
    fn one_location_with_params_at_the_root_reads_in_native_units() {
        let body = format!(r#"{{"location": {LOCATION}, "device_id": "phone-7"}}"#);
        let b = decode(&body, &BOUNDS).unwrap();
        assert_eq!(b.device.as_deref(), Some("phone-7"));
        assert!(!b.heartbeat);
        let [fix] = &b.fixes[..] else { panic!("{b:?}") };
        assert_eq!(
            fix.key.as_deref(),
            Some("0b5c3a8e-2f58-4e2f-a9a7-8b3a5b1e4c11")
        );
        let f = fix.input.as_ref().unwrap();
        assert_eq!((f.lat, f.lon), (45.5192292, -73.6169397));
        assert_eq!(
            f.recorded_at,
            Utc.with_ymd_and_hms(2017, 10, 19, 23, 52, 28).unwrap()
                + chrono::Duration::milliseconds(551)
        );
        // -1 is the SDK's "unknown"; altitude below zero is a real altitude.
        assert_eq!((f.speed, f.heading), (None, None));
        assert_eq!((f.accuracy, f.altitude), (Some(22.9), Some(-5.8)));
        assert!((f.battery.unwrap() - 83.0).abs() < 1e-9);
        let a = fix.attributes.as_ref().unwrap();
        assert_eq!(a["is_moving"], false);
        assert_eq!(a["odometer"], 1612.4);
        assert_eq!(a["activity"], "still");
        assert_eq!(a["is_charging"], false);
        assert_eq!(a["extras"]["route_id"], 123);
        assert_eq!(a["event"], "motionchange");
    }

    #[test]
    fn a_batch_sync_and_a_list_of_envelopes_give_every_fix_in_order() {
        let sync = format!(
            r#"{{"location": [{LOCATION}, {LOCATION}], "device": {{"uuid": "abc-1", "model": "Pixel 7", "platform": "Android"}}}}"#
        );
        let b = decode(&sync, &BOUNDS).unwrap();
        assert_eq!((b.fixes.len(), b.device.as_deref()), (2, Some("abc-1")));
        let list =
            format!(r#"[{{"location": {LOCATION}, "device_id": 42}}, {{"location": {LOCATION}}}]"#);
        let b = decode(&list, &BOUNDS).unwrap();
        assert_eq!((b.fixes.len(), b.device.as_deref()), (2, Some("42")));
        // httpRootProperty ".": the location at the root, params beside it.
        let dot = format!(r#"[{LOCATION}]"#);
        assert_eq!(decode(&dot, &BOUNDS).unwrap().fixes.len(), 1);
    }

    #[test]
    fn traccar_client_posts_the_same_shape() {
        // Traccar Client 9 (flutter_background_geolocation) with its device_id param.
        let body = r#"{"location":{"timestamp":"2024-05-01T08:00:00.000Z","coords":{"latitude":52.52,"longitude":13.405,"accuracy":5,"speed":1.5,"heading":90,"altitude":40},"is_moving":true,"odometer":0,"uuid":"f1","activity":{"type":"walking"},"battery":{"level":-1,"is_charging":true}},"device_id":"123456"}"#;
        let b = decode(body, &BOUNDS).unwrap();
        let f = b.fixes[0].input.as_ref().unwrap();
        assert_eq!(
            (f.speed, f.heading, f.battery),
            (Some(1.5), Some(90.0), None)
        );
        assert_eq!(b.device.as_deref(), Some("123456"));
    }

    #[test]
    fn a_bad_location_is_rejected_alone_and_says_why() {
        let body = format!(
            r#"{{"location": [{LOCATION}, {{"timestamp": "2017-10-19T23:52:28Z"}}, {{"coords": {{"latitude": "x", "longitude": 1}}, "timestamp": "2017-10-19T23:52:28Z"}}, {{"coords": {{"latitude": 1, "longitude": 1}}, "timestamp": "soon"}}, 7, {{"coords": {{"latitude": 1, "longitude": 1}}, "timestamp": "2017-10-19T23:52:28Z", "uuid": "has space"}}]}}"#
        );
        let b = decode(
            &body,
            &BatchBounds {
                max_fixes: 8,
                ..BOUNDS
            },
        )
        .unwrap();
        let errors: Vec<_> = b
            .fixes
            .iter()
            .map(|f| f.input.as_ref().err().cloned())
            .collect();
        assert_eq!(errors[0], None);
        assert_eq!(errors[1].as_deref(), Some("missing field `coords`"));
        assert!(
            errors[2].as_ref().unwrap().contains("coords.latitude"),
            "{errors:?}"
        );
        assert!(
            errors[3].as_ref().unwrap().contains("timestamp"),
            "{errors:?}"
        );
        assert!(
            errors[4].as_ref().unwrap().contains("JSON object"),
            "{errors:?}"
        );
        assert!(errors[5].as_ref().unwrap().contains("uuid"), "{errors:?}");
    }

    #[test]
    fn bodies_that_are_not_the_sdk_shape_are_refused_with_how_to_fix() {
        for body in ["3", r#"{"fixes": []}"#, "[]", r#"{"location": []}"#] {
            let e = decode(body, &BOUNDS).unwrap_err();
            assert!(matches!(e, ClientError::Shape(_)), "{body}: {e}");
            assert!(e.to_string().contains("httpRootProperty"), "{e}");
        }
        assert!(matches!(decode("{", &BOUNDS), Err(ClientError::Json(_))));
    }

    #[test]
    fn more_fixes_than_the_maximum_stop_the_decode() {
        let one = r#"{"coords":{"latitude":1,"longitude":1},"timestamp":"2017-10-19T23:52:28Z"}"#;
        let body = format!(r#"{{"location": [{}]}}"#, [one; 5].join(","));
        assert!(matches!(
            decode(&body, &BOUNDS),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
        // Envelopes of three each: under the list bound, over the fix bound together.
        let env = format!(r#"{{"location": [{one},{one},{one}]}}"#);
        let body = format!("[{env},{env}]");
        assert!(matches!(
            decode(&body, &BOUNDS),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
    }
}
