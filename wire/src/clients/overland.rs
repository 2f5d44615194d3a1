//! Overland (iOS, by Aaron Parecki): `{"locations": [GeoJSON Point Features]}`.
//!
//! Each feature's `geometry.coordinates` are `[lon, lat]` (GeoJSON order);
//! `properties.timestamp` is ISO 8601 with an offset with or without a colon
//! (`2017-01-01T10:00:00-0700`); `speed` (m/s), `course` (degrees), `altitude` and
//! `horizontal_accuracy` (metres) are native, -1 meaning unknown; `battery_level` is 0..1.
//! `device_id` (set in the app's settings) names the device; `motion`, `battery_state`,
//! `wifi`, `activity` and the rest are kept as attributes. `current` and `trip` beside
//! `locations` are the app's status and are not fixes.

use serde_json::{Map, Value};

use super::{
    ClientBatch, ClientError, ClientFix, device_text, kind, number, number_value, optional,
    parse_json, time_value, unknown_if_negative,
};
use crate::api::FixInput;
use crate::decode::BatchBounds;

/// Properties read into the fix; the rest are attributes.
const KNOWN: &[&str] = &[
    "timestamp",
    "speed",
    "course",
    "altitude",
    "horizontal_accuracy",
    "battery_level",
    "device_id",
];

/// Decodes one Overland request body.
pub fn decode(body: &str, bounds: &BatchBounds) -> Result<ClientBatch, ClientError> {
    let root = parse_json(body, bounds)?;
    let locations = match &root {
        Value::Object(o) => match o.get("locations") {
            Some(Value::Array(l)) => l,
            _ => return Err(shape("the body has no `locations` list")),
        },
        other => return Err(shape(&format!("the body is {}", kind(other)))),
    };
    let mut out = ClientBatch::default();
    for feature in locations {
        let fix = match feature {
            Value::Object(f) => feature_fix(f, &mut out.device),
            other => ClientFix {
                input: Err(format!(
                    "a location must be a GeoJSON Feature object, not {}",
                    kind(other)
                )),
                key: None,
                attributes: None,
            },
        };
        out.fixes.push(fix);
    }
    // An empty list is what Overland sends when it has nothing queued: nothing to store.
    out.heartbeat = out.fixes.is_empty();
    Ok(out)
}

fn shape(what: &str) -> ClientError {
    ClientError::Shape(format!(
        "{what}, not Overland's {{\"locations\": [GeoJSON Point Features]}}; send the app's body unchanged"
    ))
}

fn feature_fix(f: &Map<String, Value>, device: &mut Option<String>) -> ClientFix {
    let empty = Map::new();
    let properties = match f.get("properties") {
        Some(Value::Object(p)) => p,
        _ => &empty,
    };
    if device.is_none() {
        *device = device_text(properties.get("device_id"));
    }
    let mut attributes = Map::new();
    for (k, v) in properties {
        if !KNOWN.contains(&k.as_str()) && !v.is_null() {
            attributes.insert(k.clone(), v.clone());
        }
    }
    ClientFix {
        input: fix_input(f, properties),
        key: None,
        attributes: (!attributes.is_empty()).then_some(attributes),
    }
}

fn fix_input(f: &Map<String, Value>, p: &Map<String, Value>) -> Result<FixInput, String> {
    let geometry = match f.get("geometry") {
        Some(Value::Object(g)) => g,
        _ => return Err("missing field `geometry` (a GeoJSON Point)".to_owned()),
    };
    if let Some(t) = geometry.get("type")
        && t != "Point"
    {
        return Err(format!("`geometry.type` must be \"Point\", not {t}"));
    }
    let (lon, lat) = match geometry.get("coordinates") {
        Some(Value::Array(c)) if c.len() >= 2 => (
            super::required(number_value(&c[0], "coordinates[0]"), "coordinates[0]")?,
            super::required(number_value(&c[1], "coordinates[1]"), "coordinates[1]")?,
        ),
        _ => {
            return Err(
                "`geometry.coordinates` must be [longitude, latitude] (GeoJSON order)".to_owned(),
            );
        }
    };
    Ok(FixInput {
        lat,
        lon,
        recorded_at: time_value(p.get("timestamp"), "properties.timestamp")?,
        accuracy: unknown_if_negative(number(
            p,
            "horizontal_accuracy",
            "properties.horizontal_accuracy",
        ))?,
        altitude: optional(number(p, "altitude", "properties.altitude"))?,
        speed: unknown_if_negative(number(p, "speed", "properties.speed"))?,
        heading: unknown_if_negative(number(p, "course", "properties.course"))?,
        battery: unknown_if_negative(number(p, "battery_level", "properties.battery_level"))?
            .map(|level| level * 100.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::BOUNDS;
    use chrono::{TimeZone, Utc};

    /// As Overland's README documents a request (one feature of its `locations`).
    const FEATURE: &str = r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[-122.030581,37.331800]},"properties":{"timestamp":"2015-10-01T08:00:00-0700","altitude":0,"speed":4,"horizontal_accuracy":30,"vertical_accuracy":-1,"motion":["driving","stationary"],"pauses":false,"activity":"other_navigation","desired_accuracy":100,"deferred":1000,"significant_change":"disabled","locations_in_payload":1,"battery_state":"charging","battery_level":0.89,"device_id":"iphone-a","wifi":""}}"#;

    #[test]
    fn a_feature_reads_in_native_units_with_lon_lat_swapped() {
        let body = format!(
            r#"{{"locations":[{FEATURE}],"current":{{"type":"Feature"}},"trip":{{"distance":0}}}}"#
        );
        let b = decode(&body, &BOUNDS).unwrap();
        assert_eq!(b.device.as_deref(), Some("iphone-a"));
        assert!(!b.heartbeat);
        let fix = &b.fixes[0];
        let f = fix.input.as_ref().unwrap();
        assert_eq!((f.lat, f.lon), (37.3318, -122.030581));
        assert_eq!(
            f.recorded_at,
            Utc.with_ymd_and_hms(2015, 10, 1, 15, 0, 0).unwrap()
        );
        assert_eq!(
            (f.speed, f.accuracy, f.altitude),
            (Some(4.0), Some(30.0), Some(0.0))
        );
        assert!((f.battery.unwrap() - 89.0).abs() < 1e-9);
        let a = fix.attributes.as_ref().unwrap();
        assert_eq!(a["battery_state"], "charging");
        assert_eq!(a["motion"][0], "driving");
        assert!(!a.contains_key("speed") && !a.contains_key("device_id"));
    }

    #[test]
    fn offsets_with_a_colon_and_unknowns_read_as_native() {
        let body = r#"{"locations":[{"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5]},"properties":{"timestamp":"2015-10-01T17:00:00+02:00","speed":-1,"course":-1,"horizontal_accuracy":-1,"battery_level":-1}}]}"#;
        let b = decode(body, &BOUNDS).unwrap();
        let f = b.fixes[0].input.as_ref().unwrap();
        assert_eq!(
            f.recorded_at,
            Utc.with_ymd_and_hms(2015, 10, 1, 15, 0, 0).unwrap()
        );
        assert_eq!(
            (f.speed, f.heading, f.accuracy, f.battery),
            (None, None, None, None)
        );
        assert_eq!(b.device, None);
        assert_eq!(b.fixes[0].attributes, None);
    }

    #[test]
    fn a_bad_feature_is_rejected_alone() {
        let body = format!(
            r#"{{"locations":[{FEATURE},{{"type":"Feature","geometry":{{"type":"LineString","coordinates":[[1,2],[3,4]]}},"properties":{{}}}},{{"geometry":{{"type":"Point","coordinates":[1]}}}},{{"geometry":{{"type":"Point","coordinates":[1,2]}},"properties":{{"timestamp":"noon"}}}}]}}"#
        );
        let b = decode(&body, &BOUNDS).unwrap();
        let e: Vec<_> = b
            .fixes
            .iter()
            .map(|f| f.input.as_ref().err().cloned())
            .collect();
        assert_eq!(e[0], None);
        assert!(e[1].as_ref().unwrap().contains("Point"), "{e:?}");
        assert!(
            e[2].as_ref().unwrap().contains("longitude, latitude"),
            "{e:?}"
        );
        assert!(
            e[3].as_ref().unwrap().contains("properties.timestamp"),
            "{e:?}"
        );
    }

    #[test]
    fn an_empty_list_is_a_heartbeat_and_other_shapes_are_refused() {
        assert!(decode(r#"{"locations":[]}"#, &BOUNDS).unwrap().heartbeat);
        for body in [r#"{"fixes":[]}"#, "[]", r#"{"locations":{}}"#] {
            let e = decode(body, &BOUNDS).unwrap_err();
            assert!(e.to_string().contains("Overland"), "{body}: {e}");
        }
        let many = format!(r#"{{"locations":[{}]}}"#, [FEATURE; 5].join(","));
        assert!(matches!(
            decode(
                &many,
                &BatchBounds {
                    max_string_bytes: 1024,
                    ..BOUNDS
                }
            ),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
    }
}
