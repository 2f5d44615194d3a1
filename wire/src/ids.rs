//! Identifiers parsed once at the edge: code that holds one knows it is well formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The identifier is empty or longer than the limit.
    #[error("{kind} must be 1 to {max} characters long")]
    Length { kind: &'static str, max: usize },
    /// The identifier has a character outside the allowed set.
    #[error("{kind} may only contain ASCII letters, digits, '-', '_', '.' and ':'")]
    Charset { kind: &'static str },
    /// The session id is not a UUID.
    #[error("session id must be a UUID")]
    NotUuid,
    /// The batch id is empty, too long, or has a character that is not printable ASCII.
    #[error("batch_id must be 1 to {max} printable ASCII characters without spaces", max = BatchId::MAX_LEN)]
    BatchId,
}

fn check_slug(kind: &'static str, max: usize, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length { kind, max });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(IdError::Charset { kind });
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and checks an identifier received from outside.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_slug($kind, $max, &s)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// A tenant: the organisation that owns devices, sessions and sinks.
    TenantId,
    "tenant id",
    64
);
slug_id!(
    /// A device within a tenant (the `sub` claim of a device token).
    DeviceId,
    "device id",
    128
);
slug_id!(
    /// A geofence within a tenant (chosen by the tenant admin who puts it).
    GeofenceId,
    "geofence id",
    128
);

/// A tracking session. UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh, time-ordered session id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a session id from a path segment.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::NotUuid)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client's name for one batch of fixes: the idempotency key of its upload. A retry with
/// the same id within the dedupe window is answered, not stored again; the id is also part
/// of every record id of the batch. Serialized as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(String);

impl BatchId {
    /// Longest batch id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Parses a batch id sent by a client (in the body's `batch_id` or the
    /// `Idempotency-Key` header): 1 to 128 printable ASCII characters, no spaces.
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError::BatchId);
        }
        Ok(Self(s))
    }

    /// A fresh id for a batch the client did not name (a random UUID).
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BatchId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> String {
        id.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_slugs_and_refuse_everything_else() {
        assert!(TenantId::parse("acme-01").is_ok());
        assert!(matches!(TenantId::parse(""), Err(IdError::Length { .. })));
        assert!(matches!(
            TenantId::parse("a b"),
            Err(IdError::Charset { .. })
        ));
        assert!(matches!(
            TenantId::parse("x".repeat(65)),
            Err(IdError::Length { .. })
        ));
        assert!(TenantId::parse("x".repeat(64)).is_ok(), "64 is the longest");
    }

    #[test]
    fn session_ids_must_be_uuids() {
        assert_eq!(SessionId::parse("nope"), Err(IdError::NotUuid));
        let id = SessionId::new();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn batch_ids_are_1_to_128_printable_ascii_characters() {
        assert!(BatchId::parse("b-1:x/y").is_ok());
        assert!(BatchId::parse("x".repeat(128)).is_ok());
        assert_eq!(BatchId::parse(""), Err(IdError::BatchId));
        assert_eq!(BatchId::parse("x".repeat(129)), Err(IdError::BatchId));
        assert_eq!(BatchId::parse("a b"), Err(IdError::BatchId));
        assert_eq!(BatchId::parse("caf\u{e9}"), Err(IdError::BatchId));
        assert_eq!(BatchId::parse("tab\there"), Err(IdError::BatchId));
        assert_ne!(BatchId::generate(), BatchId::generate());
    }

    #[test]
    fn a_batch_id_serializes_as_its_string_and_is_checked_when_read() {
        let id = BatchId::parse("b1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"b1\"");
        assert_eq!(id.to_string(), "b1");
        assert!(serde_json::from_str::<BatchId>("\"\"").is_err());
    }
}
