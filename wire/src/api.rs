//! Bodies of the ingest HTTP API (`/v1`), and the validation that turns a posted fix into a [`Fix`].
//!
//! Over 400 lines on purpose: the device API's bodies are one contract, read together.

use crate::decode::FixSlot;
use crate::{DeviceId, SessionId, TenantId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/sessions`. Every field is optional; an empty body is fine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartSessionRequest {
    /// Seconds after which the session stops by itself with reason `expired`.
    /// Capped by the server's maximum; the server default applies when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_duration_secs: Option<u64>,
}

/// Whether a session still takes fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Takes fixes.
    Active,
    /// Stopped by the device or expired; batches get 409.
    Stopped,
}

/// Why a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `POST /v1/sessions/{id}/stop`.
    Requested,
    /// The session ran past its maximum duration.
    Expired,
}

impl StopReason {
    /// The stable string stored in PostgreSQL and sent on Kafka.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Expired => "expired",
        }
    }

    /// Parses the stored string.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "requested" => Some(Self::Requested),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// A position without the rest of a fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Position {
    /// Latitude in degrees (WGS 84).
    pub lat: f64,
    /// Longitude in degrees (WGS 84).
    pub lon: f64,
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// The session's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "uuid"))]
    pub session_id: SessionId,
    /// The tenant that owns it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$"))]
    pub tenant_id: TenantId,
    /// The device that records it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$"))]
    pub device_id: DeviceId,
    /// Active or stopped.
    pub status: SessionStatus,
    /// Why it stopped, once stopped.
    pub stop_reason: Option<StopReason>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it stops by itself.
    pub expires_at: DateTime<Utc>,
    /// When it stopped, once stopped.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Fixes forwarded to Kafka so far (updated in batches, a second or so behind).
    pub fix_count: i64,
    /// Time of the latest fix forwarded.
    pub last_fix_at: Option<DateTime<Utc>>,
    /// Position of the latest fix forwarded.
    pub last_position: Option<Position>,
    /// Statistics of the track the tracker keeps (`GET /v1/sessions/{id}` only; absent
    /// before the tracker saw a fix of the session, and in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SessionStats>,
}

/// Statistics of a session's track, as the tracker derived them from its fixes in time
/// order (a late or repeated batch leaves them as if the fixes had come in order once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionStats {
    /// Fixes in the track.
    pub fix_count: i64,
    /// Metres travelled (haversine), not counting steps flagged as jumps.
    pub distance_m: f64,
    /// Seconds from the first fix to the last.
    pub duration_secs: f64,
    /// Steps between consecutive fixes faster than `LOCUS_GEO_MAX_SPEED_MPS`: flagged, kept,
    /// not counted in the distance.
    pub jumps: i64,
    /// The fastest step that is not a jump, m/s.
    pub max_speed_mps: Option<f64>,
    /// Distance over duration, m/s (absent while the duration is 0).
    pub avg_speed_mps: Option<f64>,
    /// The box around every fix.
    pub bbox: Option<BoundingBox>,
    /// The first fix by time.
    pub first_fix: Option<TimedPosition>,
    /// The last fix by time.
    pub last_fix: Option<TimedPosition>,
    /// When the tracker last updated them.
    pub updated_at: DateTime<Utc>,
}

/// A latitude/longitude box in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoundingBox {
    /// Southern edge.
    pub min_lat: f64,
    /// Western edge.
    pub min_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
    /// Eastern edge.
    pub max_lon: f64,
}

/// Where a device was and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimedPosition {
    /// When the device recorded the fix.
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// Answer of `GET /v1/devices/{device_id}/position`: the device's last known position, the
/// fix with the latest `recorded_at` the tracker has seen (a late fix never replaces it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevicePosition {
    /// The device.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$"))]
    pub device_id: DeviceId,
    /// The session the fix came in.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "uuid"))]
    pub session_id: SessionId,
    /// The fix's record id (as on the locations topic).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "uuid"))]
    pub record_id: uuid::Uuid,
    /// When the device recorded the fix.
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres.
    pub accuracy: Option<f64>,
    /// Altitude in metres.
    pub altitude: Option<f64>,
    /// Speed in m/s.
    pub speed: Option<f64>,
    /// Heading in degrees.
    pub heading: Option<f64>,
    /// Battery percent.
    pub battery: Option<f64>,
    /// When the tracker stored it.
    pub updated_at: DateTime<Utc>,
}

/// Answer of `GET /v1/sessions`: the sessions visible to the caller, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    /// The sessions, newest first.
    pub sessions: Vec<SessionView>,
}

/// Body of `POST /v1/sessions/{id}/locations`.
///
/// Each fix decodes into a [`FixSlot`], so that one malformed fix is rejected alone, with
/// its index, instead of failing the whole batch.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocationBatch {
    /// Client batch id: a retried batch with the same id is recognised and not stored twice.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")
    )]
    #[serde(default)]
    pub batch_id: Option<String>,
    /// The fixes, oldest first.
    // The schema shows a valid fix; a fix of any other shape is still taken and rejected
    // alone (reason `invalid_fix`), so the batch answer lists it.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<FixInput>, min_items = 1))]
    #[serde(alias = "locations")]
    pub fixes: Vec<FixSlot>,
}

/// One fix as a device posts it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FixInput {
    /// Latitude in degrees, -90 to 90.
    #[cfg_attr(feature = "openapi", schema(minimum = -90.0, maximum = 90.0))]
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    #[cfg_attr(feature = "openapi", schema(minimum = -180.0, maximum = 180.0))]
    pub lon: f64,
    /// When the device took the fix (RFC 3339).
    pub recorded_at: DateTime<Utc>,
    /// Horizontal accuracy in metres.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    pub accuracy: Option<f64>,
    /// Altitude in metres above the WGS 84 ellipsoid.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = -20000.0, maximum = 100000.0))]
    pub altitude: Option<f64>,
    /// Speed in metres per second.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    pub speed: Option<f64>,
    /// Heading in degrees clockwise from true north, 0 to 360.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 360.0))]
    pub heading: Option<f64>,
    /// Battery level in percent, 0 to 100.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 100.0))]
    pub battery: Option<f64>,
}

/// A validated fix: every value is finite and in range. Only [`Fix::validate`] makes one
/// from device input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Position of the fix in the batch as posted (rejected fixes included).
    pub index: u32,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// When the device took the fix.
    pub recorded_at: DateTime<Utc>,
    /// Horizontal accuracy in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Altitude in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    /// Speed in metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Heading in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    /// Battery level in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    /// The client's own id of the fix (Transistorsoft `uuid`; at most 128 printable ASCII):
    /// the same client fix is one record even when it arrives in another batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What the client app said beside the position (extras, activity, odometer, unknown
    /// OsmAnd keys), kept as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How far a fix's timestamp may stray from the server's clock.
#[derive(Debug, Clone, Copy)]
pub struct FixLimits {
    /// A fix may be at most this far in the future (device clocks drift).
    pub max_future: Duration,
    /// A fix may be at most this old (devices buffer while offline).
    pub max_age: Duration,
}

impl Default for FixLimits {
    fn default() -> Self {
        Self {
            max_future: Duration::minutes(5),
            max_age: Duration::days(7),
        }
    }
}

/// Why one fix of a batch was rejected. The code is stable; clients may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The fix is not a JSON object with the required fields of the right types.
    InvalidFix,
    /// Latitude is not finite or outside -90..=90.
    LatitudeOutOfRange,
    /// Longitude is not finite or outside -180..=180.
    LongitudeOutOfRange,
    /// `recorded_at` is further in the future than the server allows.
    TimestampInFuture,
    /// `recorded_at` is older than the server allows.
    TimestampTooOld,
    /// An optional field (accuracy, altitude, speed, heading, battery) is not finite or out of range.
    FieldOutOfRange,
}

impl RejectReason {
    /// The stable code, as serialized (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFix => "invalid_fix",
            Self::LatitudeOutOfRange => "latitude_out_of_range",
            Self::LongitudeOutOfRange => "longitude_out_of_range",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::FieldOutOfRange => "field_out_of_range",
        }
    }

    /// What the reason means, for a human: the message of a rejection when the fix itself is
    /// not at hand (a retried batch's answer is rebuilt from the reasons alone).
    pub fn summary(self) -> &'static str {
        match self {
            Self::InvalidFix => {
                "the fix is not an object with lat, lon and recorded_at of the right types"
            }
            Self::LatitudeOutOfRange => "lat is not a finite number from -90 to 90",
            Self::LongitudeOutOfRange => "lon is not a finite number from -180 to 180",
            Self::TimestampInFuture => {
                "recorded_at is further in the future than the server allows"
            }
            Self::TimestampTooOld => "recorded_at is older than the server allows",
            Self::FieldOutOfRange => {
                "accuracy, altitude, speed, heading or battery is not finite or out of range"
            }
        }
    }
}

/// A rejected fix in a batch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedFix {
    /// Index of the fix in the posted batch, from 0.
    pub index: u32,
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// What was wrong, for a human.
    pub message: String,
}

impl Fix {
    /// Checks one posted fix against the server clock `now` and the limits.
    pub fn validate(
        index: u32,
        input: FixInput,
        now: DateTime<Utc>,
        limits: &FixLimits,
    ) -> Result<Fix, RejectedFix> {
        let reject = |reason, message: String| RejectedFix {
            index,
            reason,
            message,
        };
        if !(input.lat.is_finite() && (-90.0..=90.0).contains(&input.lat)) {
            return Err(reject(
                RejectReason::LatitudeOutOfRange,
                format!("lat {} is outside -90..=90", input.lat),
            ));
        }
        if !(input.lon.is_finite() && (-180.0..=180.0).contains(&input.lon)) {
            return Err(reject(
                RejectReason::LongitudeOutOfRange,
                format!("lon {} is outside -180..=180", input.lon),
            ));
        }
        if input.recorded_at > now + limits.max_future {
            return Err(reject(
                RejectReason::TimestampInFuture,
                format!(
                    "recorded_at {} is more than {} s ahead of the server clock",
                    input.recorded_at.to_rfc3339(),
                    limits.max_future.num_seconds()
                ),
            ));
        }
        if input.recorded_at < now - limits.max_age {
            return Err(reject(
                RejectReason::TimestampTooOld,
                format!(
                    "recorded_at {} is more than {} s in the past",
                    input.recorded_at.to_rfc3339(),
                    limits.max_age.num_seconds()
                ),
            ));
        }
        let optional = [
            ("accuracy", input.accuracy, 0.0, f64::MAX),
            ("altitude", input.altitude, -20_000.0, 100_000.0),
            ("speed", input.speed, 0.0, f64::MAX),
            ("heading", input.heading, 0.0, 360.0),
            ("battery", input.battery, 0.0, 100.0),
        ];
        for (name, value, min, max) in optional {
            if let Some(v) = value
                && !(v.is_finite() && (min..=max).contains(&v))
            {
                return Err(reject(
                    RejectReason::FieldOutOfRange,
                    format!("{name} {v} is outside {min}..={max}"),
                ));
            }
        }
        Ok(Fix {
            index,
            lat: input.lat,
            lon: input.lon,
            recorded_at: input.recorded_at,
            accuracy: input.accuracy,
            altitude: input.altitude,
            speed: input.speed,
            heading: input.heading,
            battery: input.battery,
            // Client formats set these after validation (see `crate::clients`).
            key: None,
            attributes: None,
        })
    }

    /// Validates one decoded fix of a batch.
    pub fn parse(
        index: u32,
        slot: &FixSlot,
        now: DateTime<Utc>,
        limits: &FixLimits,
    ) -> Result<Fix, RejectedFix> {
        match &slot.0 {
            Ok(input) => Self::validate(index, *input, now, limits),
            Err(why) => Err(RejectedFix {
                index,
                reason: RejectReason::InvalidFix,
                message: format!("fix is not valid: {why}"),
            }),
        }
    }
}

/// Answer to a batch: 202 when at least one fix was accepted, 422 when none was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    /// The batch id the client sent, or the one the server gave the batch.
    pub batch_id: String,
    /// Fixes stored for forwarding.
    pub accepted: u32,
    /// Fixes refused, each with its index and reason.
    pub rejected: Vec<RejectedFix>,
    /// True when this batch id was already stored: nothing was stored again.
    #[serde(default)]
    pub duplicate: bool,
}

/// The body of the 422 answer to a batch whose every fix was rejected: the batch answer,
/// so the client sees why each fix was refused, with the `error` and `message` of every
/// error answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedBatch {
    /// The batch answer: `accepted` is 0.
    #[serde(flatten)]
    pub batch: BatchResponse,
    /// `all_fixes_rejected`.
    pub error: String,
    /// What was wrong and how to fix it, for a human.
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code, stable.
    pub error: String,
    /// What was wrong and how to fix it, for a human.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(lat: f64, lon: f64) -> FixInput {
        FixInput {
            lat,
            lon,
            recorded_at: Utc::now(),
            accuracy: None,
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
        }
    }

    #[test]
    fn a_fix_outside_the_globe_is_rejected_with_its_reason() {
        let now = Utc::now();
        let l = FixLimits::default();
        let e = Fix::validate(3, input(91.0, 0.0), now, &l).unwrap_err();
        assert_eq!((e.index, e.reason), (3, RejectReason::LatitudeOutOfRange));
        let e = Fix::validate(0, input(0.0, f64::NAN), now, &l).unwrap_err();
        assert_eq!(e.reason, RejectReason::LongitudeOutOfRange);
    }

    #[test]
    fn timestamps_beyond_the_allowed_skew_are_rejected() {
        let now = Utc::now();
        let l = FixLimits::default();
        let mut f = input(1.0, 1.0);
        f.recorded_at = now + Duration::minutes(6);
        assert_eq!(
            Fix::validate(0, f, now, &l).unwrap_err().reason,
            RejectReason::TimestampInFuture
        );
        f.recorded_at = now - Duration::days(8);
        assert_eq!(
            Fix::validate(0, f, now, &l).unwrap_err().reason,
            RejectReason::TimestampTooOld
        );
    }

    #[test]
    fn a_fix_with_a_missing_field_is_invalid_alone() {
        let slot: FixSlot = serde_json::from_str(r#"{"lat": 1.0}"#).unwrap();
        let e = Fix::parse(7, &slot, Utc::now(), &FixLimits::default()).unwrap_err();
        assert_eq!((e.index, e.reason), (7, RejectReason::InvalidFix));
        assert!(e.message.contains("lon"), "{}", e.message);
    }

    #[test]
    fn reject_codes_match_their_json_form() {
        for r in [
            RejectReason::InvalidFix,
            RejectReason::LatitudeOutOfRange,
            RejectReason::LongitudeOutOfRange,
            RejectReason::TimestampInFuture,
            RejectReason::TimestampTooOld,
            RejectReason::FieldOutOfRange,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn timestamps_exactly_at_the_allowed_skew_are_accepted() {
        let now = Utc::now();
        let l = FixLimits::default();
        let mut f = input(1.0, 1.0);
        f.recorded_at = now + l.max_future;
        assert!(Fix::validate(0, f, now, &l).is_ok(), "at max_future");
        f.recorded_at = now - l.max_age;
        assert!(Fix::validate(0, f, now, &l).is_ok(), "at max_age");
    }

    #[test]
    fn optional_fields_are_kept_when_in_range_and_rejected_outside() {
        let now = Utc::now();
        let l = FixLimits::default();
        let mut f = input(1.0, 1.0);
        f.accuracy = Some(3.5);
        // Below sea level is fine: the Dead Sea shore is at about -430 m.
        f.altitude = Some(-430.0);
        f.speed = Some(0.0);
        f.heading = Some(360.0);
        f.battery = Some(100.0);
        let fix = Fix::validate(4, f, now, &l).unwrap();
        assert_eq!(
            (
                fix.index,
                fix.accuracy,
                fix.altitude,
                fix.speed,
                fix.heading,
                fix.battery
            ),
            (
                4,
                Some(3.5),
                Some(-430.0),
                Some(0.0),
                Some(360.0),
                Some(100.0)
            )
        );
        for change in [
            (|f: &mut FixInput| f.accuracy = Some(-1.0)) as fn(&mut FixInput),
            |f| f.altitude = Some(-20_001.0),
            |f| f.altitude = Some(f64::NAN),
            |f| f.speed = Some(f64::INFINITY),
            |f| f.heading = Some(360.5),
            |f| f.battery = Some(100.1),
        ] {
            let mut bad = f;
            change(&mut bad);
            let e = Fix::validate(0, bad, now, &l).unwrap_err();
            assert_eq!(e.reason, RejectReason::FieldOutOfRange, "{}", e.message);
        }
    }

    #[test]
    fn stop_reasons_read_back_what_they_write() {
        for r in [StopReason::Requested, StopReason::Expired] {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(StopReason::Requested.as_str(), "requested");
        assert_eq!(StopReason::Expired.as_str(), "expired");
        assert_eq!(StopReason::parse("paused"), None);
    }

    proptest! {
        #[test]
        fn validation_accepts_exactly_the_coordinates_on_the_globe(lat in -200.0f64..200.0, lon in -400.0f64..400.0) {
            let ok = Fix::validate(0, input(lat, lon), Utc::now(), &FixLimits::default()).is_ok();
            prop_assert_eq!(ok, (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
        }
    }
}
