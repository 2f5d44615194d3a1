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
    }

    #[test]
    fn session_ids_must_be_uuids() {
        assert_eq!(SessionId::parse("nope"), Err(IdError::NotUuid));
        let id = SessionId::new();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
    }
}
