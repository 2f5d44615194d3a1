//! The OsmAnd protocol: one position per request as URL parameters, which OsmAnd, Traccar
//! Client (before 9, and 9's "OsmAnd" mode) and many hardware trackers send, by GET or by
//! POST with the parameters in the query string or a form body (both are read; the body
//! wins on a repeated name).
//!
//! `id` or `deviceid` names the device; `lat` and `lon`, or `location=lat,lon`, the
//! position; `timestamp` is epoch seconds, epoch milliseconds, ISO 8601 or
//! `yyyy-MM-dd HH:mm:ss` (UTC), and the server clock when absent; `speed` is in knots;
//! `bearing` or `heading`, `altitude`, `accuracy` (metres), `batt` (percent). Every other
//! parameter (`hdop`, `charge`, `driverUniqueId`, ...) is kept as an attribute. A request
//! without a position is a heartbeat.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{ClientBatch, ClientError, ClientFix, MAX_PARAMETERS, from_epoch, parse_iso8601};
use crate::api::FixInput;
use crate::decode::{BatchBounds, echo};

/// Metres per second in one knot.
pub const KNOT_MPS: f64 = 0.514444;

/// Decodes one OsmAnd request from its query string (without `?`) and its form body, if
/// it has one. `now` stands in for a missing timestamp.
pub fn decode(
    query: &str,
    form: Option<&str>,
    now: DateTime<Utc>,
    bounds: &BatchBounds,
) -> Result<ClientBatch, ClientError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for text in [Some(query), form].into_iter().flatten() {
        for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
            if k.len() > bounds.max_string_bytes || v.len() > bounds.max_string_bytes {
                return Err(ClientError::StringTooLong {
                    max: bounds.max_string_bytes,
                });
            }
            if params.len() == MAX_PARAMETERS {
                return Err(ClientError::TooManyParameters {
                    max: MAX_PARAMETERS,
                });
            }
            // A later value of a name replaces the earlier one (the body after the query).
            match params.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v.into_owned(),
                None => params.push((k.into_owned(), v.into_owned())),
            }
        }
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    };
    let device = get("id")
        .or_else(|| get("deviceid"))
        .map(|d| d.trim().to_owned())
        .ok_or(ClientError::NoDevice)?;
    let location = get("location").map(|l| l.split_once(',').unwrap_or((l, "")));
    let (lat, lon) = match location {
        Some((lat, lon)) => (Some(lat), Some(lon).filter(|l| !l.trim().is_empty())),
        None => (get("lat"), get("lon")),
    };
    if lat.is_none() && lon.is_none() {
        return Ok(ClientBatch {
            device: Some(device),
            fixes: Vec::new(),
            heartbeat: true,
        });
    }
    let mut attributes = Map::new();
    for (k, v) in &params {
        if !KNOWN.contains(&k.as_str()) {
            attributes.insert(k.clone(), attribute(v));
        }
    }
    let input = fix_input(lat, lon, &get, now);
    Ok(ClientBatch {
        device: Some(device),
        fixes: vec![ClientFix {
            input,
            key: None,
            attributes: (!attributes.is_empty()).then_some(attributes),
        }],
        heartbeat: false,
    })
}

/// Parameters read into the fix (or naming the device); the rest are attributes.
const KNOWN: &[&str] = &[
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
];

/// An attribute keeps a number as a number, `true`/`false` as booleans, the rest as text.
fn attribute(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Some(n) if !v.starts_with('+') && !v.starts_with('.') => Value::Number(n),
            _ => Value::String(v.to_owned()),
        },
    }
}

fn fix_input<'a>(
    lat: Option<&str>,
    lon: Option<&str>,
    get: &impl Fn(&str) -> Option<&'a str>,
    now: DateTime<Utc>,
) -> Result<FixInput, String> {
    let lat = required(lat, "lat")?;
    let lon = required(lon, "lon")?;
    let recorded_at = match get("timestamp") {
        None => now,
        Some(t) => timestamp(t)?,
    };
    let heading = match get("bearing") {
        Some(b) => unknown_if_negative(Some(b), "bearing")?,
        None => unknown_if_negative(get("heading"), "heading")?,
    };
    Ok(FixInput {
        lat,
        lon,
        recorded_at,
        accuracy: unknown_if_negative(get("accuracy"), "accuracy")?,
        altitude: parse(get("altitude"), "altitude")?,
        speed: unknown_if_negative(get("speed"), "speed")?.map(|knots| knots * KNOT_MPS),
        heading,
        battery: unknown_if_negative(get("batt"), "batt")?,
    })
}

fn parse(v: Option<&str>, name: &str) -> Result<Option<f64>, String> {
    match v {
        None => Ok(None),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("`{name}` {} is not a number", echo(text))),
        },
    }
}

fn required(v: Option<&str>, name: &str) -> Result<f64, String> {
    parse(v, name)?.ok_or_else(|| format!("missing parameter `{name}`"))
}

fn unknown_if_negative(v: Option<&str>, name: &str) -> Result<Option<f64>, String> {
    Ok(parse(v, name)?.filter(|x| *x >= 0.0))
}

/// Epoch seconds or milliseconds, ISO 8601, or `yyyy-MM-dd HH:mm:ss` in UTC.
fn timestamp(t: &str) -> Result<DateTime<Utc>, String> {
    let t = t.trim();
    let numeric = t.parse::<f64>().ok().filter(|_| !t.contains(['-', ':']));
    numeric
        .and_then(from_epoch)
        .or_else(|| parse_iso8601(t))
        .ok_or_else(|| {
            format!(
                "`timestamp` {} is not a time (send epoch seconds, epoch milliseconds, ISO 8601 or yyyy-MM-dd HH:mm:ss in UTC)",
                echo(t)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::BOUNDS;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    fn one(query: &str) -> ClientFix {
        let b = decode(query, None, now(), &BOUNDS).unwrap();
        assert!(!b.heartbeat);
        b.fixes.into_iter().next().unwrap()
    }

    #[test]
    fn a_traccar_client_query_reads_in_native_units() {
        // Traccar Client (Android, before 9) sends exactly these parameters.
        let q = "id=123456&timestamp=1700000000&lat=52.520008&lon=13.404954&speed=10.0&bearing=90.5&altitude=34.0&accuracy=12.5&batt=87.0&charge=true";
        let b = decode(q, None, now(), &BOUNDS).unwrap();
        assert_eq!(b.device.as_deref(), Some("123456"));
        let f = b.fixes[0].input.as_ref().unwrap();
        assert_eq!((f.lat, f.lon), (52.520008, 13.404954));
        assert_eq!(f.recorded_at, Utc.timestamp_opt(1_700_000_000, 0).unwrap());
        assert!((f.speed.unwrap() - 5.14444).abs() < 1e-9, "knots to m/s");
        assert_eq!(
            (f.heading, f.altitude, f.accuracy, f.battery),
            (Some(90.5), Some(34.0), Some(12.5), Some(87.0))
        );
        let a = b.fixes[0].attributes.as_ref().unwrap();
        assert_eq!(a["charge"], true);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn every_timestamp_shape_reads_as_the_same_instant() {
        let want = Utc.with_ymd_and_hms(2023, 11, 14, 22, 13, 20).unwrap();
        for t in [
            "1700000000",
            "1700000000000",
            "2023-11-14T22:13:20Z",
            "2023-11-14T23:13:20%2B01:00",
            "2023-11-14T23:13:20%2B0100",
            "2023-11-14%2022:13:20",
            "2023-11-14+22:13:20",
        ] {
            let f = one(&format!("id=d&lat=1&lon=2&timestamp={t}"));
            assert_eq!(f.input.unwrap().recorded_at, want, "{t}");
        }
        let f = one("id=d&lat=1&lon=2");
        assert_eq!(f.input.unwrap().recorded_at, now(), "no timestamp: now");
        let e = one("id=d&lat=1&lon=2&timestamp=yesterday")
            .input
            .unwrap_err();
        assert!(
            e.contains("timestamp") && e.contains("epoch seconds"),
            "{e}"
        );
    }

    #[test]
    fn location_heading_and_deviceid_are_read_as_their_aliases() {
        let b = decode(
            "",
            Some("deviceid=tr-9&location=-33.86,151.21&heading=270&hdop=0.9&speed=-1&batt=-1"),
            now(),
            &BOUNDS,
        )
        .unwrap();
        assert_eq!(b.device.as_deref(), Some("tr-9"));
        let fix = &b.fixes[0];
        let f = fix.input.as_ref().unwrap();
        assert_eq!((f.lat, f.lon, f.heading), (-33.86, 151.21, Some(270.0)));
        assert_eq!((f.speed, f.battery), (None, None), "-1 is unknown");
        assert_eq!(fix.attributes.as_ref().unwrap()["hdop"], 0.9);
        // The form body wins over the query on a repeated name.
        let b = decode("id=q&lat=1&lon=1", Some("id=body"), now(), &BOUNDS).unwrap();
        assert_eq!(b.device.as_deref(), Some("body"));
    }

    #[test]
    fn no_device_is_refused_and_no_position_is_a_heartbeat() {
        assert!(matches!(
            decode("lat=1&lon=2", None, now(), &BOUNDS),
            Err(ClientError::NoDevice)
        ));
        assert!(matches!(
            decode("id=&lat=1&lon=2", None, now(), &BOUNDS),
            Err(ClientError::NoDevice)
        ));
        let b = decode("id=d&batt=50", None, now(), &BOUNDS).unwrap();
        assert!(b.heartbeat && b.fixes.is_empty());
        assert_eq!(b.device.as_deref(), Some("d"));
    }

    #[test]
    fn a_bad_value_rejects_the_fix_with_its_name() {
        let e = one("id=d&lat=north&lon=2").input.unwrap_err();
        assert!(e.contains("`lat`"), "{e}");
        let e = one("id=d&lat=1").input.unwrap_err();
        assert_eq!(e, "missing parameter `lon`");
        let e = one("id=d&location=1").input.unwrap_err();
        assert_eq!(e, "missing parameter `lon`");
        let e = one("id=d&lat=1&lon=2&speed=fast").input.unwrap_err();
        assert!(e.contains("`speed`"), "{e}");
        let e = one("id=d&lat=1&lon=2&altitude=inf").input.unwrap_err();
        assert!(e.contains("`altitude`"), "{e}");
    }

    #[test]
    fn parameters_are_bounded_in_number_and_length() {
        let many: Vec<String> = (0..=MAX_PARAMETERS).map(|i| format!("k{i}=1")).collect();
        assert!(matches!(
            decode(&many.join("&"), None, now(), &BOUNDS),
            Err(ClientError::TooManyParameters { .. })
        ));
        let long = format!("id=d&x={}", "a".repeat(65));
        assert!(matches!(
            decode(&long, None, now(), &BOUNDS),
            Err(ClientError::StringTooLong { max: 64 })
        ));
    }
}
