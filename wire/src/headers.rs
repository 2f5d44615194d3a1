//! Kafka record headers: every header name Locus writes, and the pairs each kind of record
//! carries. Plain `(name, value)` pairs, with no Kafka client in them: the processes turn
//! them into their client's header type, and tests compare them as they are.

use crate::record::SCHEMA_VERSION;
use crate::{SessionId, TenantId};

/// The tenant id.
pub const TENANT: &str = "locus-tenant-id";
/// The session id.
pub const SESSION: &str = "locus-session-id";
/// The schema version of the value ([`SCHEMA_VERSION`]).
pub const SCHEMA_VERSION_HEADER: &str = "locus-schema-version";
/// The record type ([`RecordType`]).
pub const RECORD_TYPE: &str = "locus-record-type";
/// The content type of the value.
pub const CONTENT_TYPE: &str = "content-type";
/// Content type of every value Locus writes.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Dead letters: why ([`DeadLetterReason`]).
pub const DLQ_REASON: &str = "locus-dlq-reason";
/// Dead letters: the sink that could not take the record (`webhook`, or `none` for a record
/// that was not readable).
pub const DLQ_SINK: &str = "locus-dlq-sink";
/// Dead letters: the last error, in words.
pub const DLQ_DETAIL: &str = "locus-dlq-detail";
/// Dead letters: where the record came from (`<topic>/<partition>/<offset>`, or
/// `<stream>/<entry id>` for a buffer entry).
pub const DLQ_ORIGIN: &str = "locus-dlq-origin";

/// What a record on a Locus topic is: the value of [`RECORD_TYPE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A [`crate::record::LocationRecord`] on the location topic.
    Location,
    /// A [`crate::record::SessionEvent`] on the session-event topic.
    SessionEvent,
}

impl RecordType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Location => "location",
            Self::SessionEvent => "session_event",
        }
    }
}

/// The headers of a record of `record_type` for `session` of `tenant`, in the order they
/// are written.
pub fn record_headers(
    record_type: RecordType,
    tenant: &TenantId,
    session: SessionId,
) -> [(&'static str, String); 5] {
    [
        (TENANT, tenant.as_str().to_owned()),
        (SESSION, session.to_string()),
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION.to_string()),
        (RECORD_TYPE, record_type.as_str().to_owned()),
        (CONTENT_TYPE, CONTENT_TYPE_JSON.to_owned()),
    ]
}

/// Why a record went to the dead-letter topic: the value of [`DLQ_REASON`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The sink refused it for good. Written by bridges before a failing webhook paused its
    /// tenant instead; kept so that older dead letters still read.
    Rejected,
    /// Every attempt failed with a retriable error. Like `Rejected`, only in older dead
    /// letters: the bridge now retries until the webhook takes the records.
    Exhausted,
    /// It is not a record (or buffer entry) that Locus can read.
    Malformed,
    /// Its tenant has no sink: it waits here to be replayed once the sink exists.
    NoSink,
}

impl DeadLetterReason {
    /// The header (and metric label) value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Exhausted => "exhausted",
            Self::Malformed => "malformed",
            Self::NoSink => "no_sink",
        }
    }
}

/// The headers a dead letter gets on top of the original record's, in the order they are
/// written.
pub fn dead_letter_headers<'a>(
    reason: DeadLetterReason,
    sink: &'a str,
    detail: &'a str,
    origin: &'a str,
) -> [(&'static str, &'a str); 4] {
    [
        (DLQ_REASON, reason.as_str()),
        (DLQ_SINK, sink),
        (DLQ_DETAIL, detail),
        (DLQ_ORIGIN, origin),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_record_carries_tenant_session_version_type_and_content_type() {
        let tenant = TenantId::parse("acme").unwrap();
        let session = SessionId::new();
        let headers = record_headers(RecordType::Location, &tenant, session);
        assert_eq!(
            headers,
            [
                ("locus-tenant-id", "acme".to_owned()),
                ("locus-session-id", session.to_string()),
                ("locus-schema-version", "1".to_owned()),
                ("locus-record-type", "location".to_owned()),
                ("content-type", "application/json".to_owned()),
            ]
        );
        let event = record_headers(RecordType::SessionEvent, &tenant, session);
        assert_eq!(event[3], ("locus-record-type", "session_event".to_owned()));
    }

    #[test]
    fn a_dead_letter_says_why_where_and_what_happened() {
        assert_eq!(
            dead_letter_headers(DeadLetterReason::Exhausted, "webhook", "503", "t/0/7"),
            [
                ("locus-dlq-reason", "exhausted"),
                ("locus-dlq-sink", "webhook"),
                ("locus-dlq-detail", "503"),
                ("locus-dlq-origin", "t/0/7"),
            ]
        );
        assert_eq!(DeadLetterReason::Rejected.as_str(), "rejected");
        assert_eq!(DeadLetterReason::Malformed.as_str(), "malformed");
        assert_eq!(DeadLetterReason::NoSink.as_str(), "no_sink");
    }
}
