//! The seed system's `POST /location/update` body: the native fix shape with the session
//! id inside, either one point (`{"session_id": .., "lat": .., "lon": .., "recorded_at": ..}`)
//! or a batch (`{"session_id": .., "batch_id": .., "fixes": [..]}`, `locations` also read).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::ClientError;
use crate::api::LocationBatch;
use crate::decode::{BatchBounds, FixSlot, check_shape};

/// One seed update: the session it is for and its fixes, as a native batch.
#[derive(Debug)]
pub struct SeedUpdate {
    /// The session id as sent (the route parses it).
    pub session_id: String,
    /// The fixes: one for a one-point update.
    pub batch: LocationBatch,
}

/// Decodes one seed update within the native batch bounds.
pub fn decode_update(body: &str, bounds: &BatchBounds) -> Result<SeedUpdate, ClientError> {
    check_shape(body.as_bytes(), bounds.max_depth, bounds.max_string_bytes)?;
    // A first pass reads only the envelope (values skipped without being built), so the
    // second can hand the body to the native decoders unchanged.
    let envelope = Envelope::deserialize_from(body)?;
    let session_id = envelope.session_id.ok_or(ClientError::NoSession)?;
    let batch = if envelope.has_list {
        LocationBatch::decode(body, bounds.max_fixes)?
    } else {
        let slot: FixSlot = serde_json::from_str(body).map_err(ClientError::Json)?;
        LocationBatch {
            batch_id: envelope.batch_id,
            fixes: vec![slot],
        }
    };
    Ok(SeedUpdate { session_id, batch })
}

/// The top-level fields of an update that decide how to read it.
#[derive(Default)]
struct Envelope {
    session_id: Option<String>,
    batch_id: Option<String>,
    has_list: bool,
}

impl Envelope {
    fn deserialize_from(body: &str) -> Result<Self, ClientError> {
        let mut de = serde_json::Deserializer::from_str(body);
        let envelope = (&mut de)
            .deserialize_map(EnvelopeVisitor)
            .and_then(|e| de.end().map(|()| e));
        envelope.map_err(|e| {
            if e.is_data() {
                ClientError::Shape(format!(
                    "{e}; send {{\"session_id\": .., \"lat\": .., \"lon\": .., \"recorded_at\": ..}} or {{\"session_id\": .., \"fixes\": [..]}}"
                ))
            } else {
                ClientError::Json(e)
            }
        })
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an update object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut e = Envelope::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "session_id" | "sessionId" => {
                    let id: Option<String> = map.next_value()?;
                    e.session_id = id.filter(|s| !s.is_empty());
                }
                "batch_id" => e.batch_id = map.next_value()?,
                "fixes" | "locations" => {
                    e.has_list = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::BOUNDS;

    const SID: &str = "0193a4d2-7c1e-7b3a-9a5e-3f2b1c0d9e8f";

    #[test]
    fn one_point_is_a_batch_of_one_fix() {
        let body = format!(
            r#"{{"session_id":"{SID}","lat":52.5,"lon":13.4,"recorded_at":"2026-12-02T10:00:00Z","accuracy":5}}"#
        );
        let u = decode_update(&body, &BOUNDS).unwrap();
        assert_eq!(u.session_id, SID);
        let [FixSlot(Ok(f))] = &u.batch.fixes[..] else {
            panic!("{:?}", u.batch)
        };
        assert_eq!((f.lat, f.lon, f.accuracy), (52.5, 13.4, Some(5.0)));
        assert_eq!(u.batch.batch_id, None);
    }

    #[test]
    fn a_batch_reads_as_the_native_batch() {
        let fix = r#"{"lat":1,"lon":2,"recorded_at":"2026-12-02T10:00:00Z"}"#;
        let body = format!(
            r#"{{"sessionId":"{SID}","batch_id":"b-7","locations":[{fix},{fix},{{"lat":1}}]}}"#
        );
        let u = decode_update(&body, &BOUNDS).unwrap();
        assert_eq!(u.batch.batch_id.as_deref(), Some("b-7"));
        assert_eq!(u.batch.fixes.len(), 3);
        assert!(u.batch.fixes[2].0.is_err(), "a bad fix is rejected alone");
        let over = format!(
            r#"{{"session_id":"{SID}","fixes":[{}]}}"#,
            [fix; 5].join(",")
        );
        assert!(matches!(
            decode_update(&over, &BOUNDS),
            Err(ClientError::TooManyFixes { max: 4 })
        ));
    }

    #[test]
    fn an_update_without_a_session_or_of_another_shape_is_refused() {
        let e = decode_update(
            r#"{"lat":1,"lon":2,"recorded_at":"2026-12-02T10:00:00Z"}"#,
            &BOUNDS,
        );
        assert!(matches!(e, Err(ClientError::NoSession)));
        assert!(matches!(
            decode_update("[1]", &BOUNDS),
            Err(ClientError::Shape(_))
        ));
        assert!(matches!(
            decode_update("{", &BOUNDS),
            Err(ClientError::Json(_))
        ));
        let e = decode_update(&format!(r#"{{"session_id":"{SID}","fixes":3}}"#), &BOUNDS);
        assert!(matches!(e, Err(ClientError::Shape(_))), "{e:?}");
        // One point with a missing field is still an update: its fix is rejected alone.
        let u = decode_update(&format!(r#"{{"session_id":"{SID}","lat":1}}"#), &BOUNDS).unwrap();
        assert!(u.batch.fixes[0].0.is_err());
    }
}
