//! The Kafka client's side of the wire crate's header pairs (the one conversion from
//! `locus_wire::headers` pairs to rdkafka headers), and the client security settings every
//! Locus Kafka client is built with ([`KafkaSecurity`]): `security.protocol`, the SASL
//! mechanism and credentials, and the TLS files, from `LOCUS_KAFKA_*` environment variables.
//!
//! Every `rdkafka::ClientConfig` Locus builds calls [`KafkaSecurity::apply`] (most through
//! [`crate::settings::KafkaSettings::client_config`]), so one set of variables reaches the
//! producer, the consumers and the admin clients of a process alike.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use secrecy::{ExposeSecret, SecretString};

/// Kafka headers from `(name, value)` pairs such as `locus_wire::headers::record_headers`,
/// in the same order.
pub fn headers<V: AsRef<str>>(pairs: &[(&str, V)]) -> OwnedHeaders {
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_ref()),
            })
        },
    )
}

/// `security.protocol`: how a client talks to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No authentication, no encryption (the default; a broker without security).
    #[default]
    Plaintext,
    /// TLS, no SASL (a client certificate may authenticate).
    Ssl,
    /// SASL authentication without TLS (the local broker: loopback only).
    SaslPlaintext,
    /// SASL authentication over TLS (a production cluster).
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka and the brokers use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the client authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// Whether the connection is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Empty is "unset" (an environment that blanks the variable), as elsewhere below.
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "" | "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(format!(
                "unknown Kafka security protocol {s:?}; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )),
        }
    }
}

/// `sasl.mechanism`: the SASL mechanisms Locus supports (username and password ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: the password itself goes to the broker (use only over TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512` (the local broker's).
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka and the brokers use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(format!(
                "unknown SASL mechanism {s:?}; use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
            )),
        }
    }
}

/// What is wrong with a set of Kafka security settings; each names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSecurityError {
    /// A SASL protocol without one of mechanism, username or password.
    #[error(
        "LOCUS_KAFKA_SECURITY_PROTOCOL={protocol} needs {variable}; set it (or use PLAINTEXT/SSL for a broker without SASL)"
    )]
    SaslIncomplete {
        /// The protocol asked for.
        protocol: SecurityProtocol,
        /// The variable that is missing.
        variable: &'static str,
    },
    /// A SASL setting with a protocol that does not use SASL: it would be ignored.
    #[error(
        "{variable} is set but LOCUS_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL; set LOCUS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL, or unset {variable}"
    )]
    SaslWithoutSasl {
        /// The protocol asked for.
        protocol: SecurityProtocol,
        /// The SASL variable that is set.
        variable: &'static str,
    },
    /// A TLS setting with a protocol that does not use TLS: it would be ignored.
    #[error(
        "{variable} is set but LOCUS_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS; set LOCUS_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset {variable}"
    )]
    TlsWithoutTls {
        /// The protocol asked for.
        protocol: SecurityProtocol,
        /// The TLS variable that is set.
        variable: &'static str,
    },
    /// A client certificate without its key, a key without its certificate, or a key
    /// password without a key.
    #[error("{variable} is set but {missing} is not; a client certificate needs both files")]
    TlsIncomplete {
        /// The variable that is set.
        variable: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// A TLS file that cannot be read.
    #[error("{variable}={} cannot be read: {source}", path.display())]
    TlsFile {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A value that does not parse (an unknown protocol or mechanism).
    #[error("Kafka security settings: {0}")]
    Parse(String),
}

/// Kafka client security: `security.protocol`, SASL and TLS settings, from
/// `LOCUS_KAFKA_*`. The default (nothing set) is `PLAINTEXT` with no credentials. An empty
/// variable counts as unset. Debug output never shows the passwords.
#[derive(Clone, Default, Args)]
pub struct KafkaSecurity {
    /// `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(
        id = "kafka_security_protocol",
        long = "kafka-security-protocol",
        env = "LOCUS_KAFKA_SECURITY_PROTOCOL",
        default_value = "PLAINTEXT",
        value_parser = SecurityProtocol::from_str
    )]
    pub protocol: SecurityProtocol,

    /// `sasl.mechanism`: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (with a SASL protocol).
    #[arg(
        id = "kafka_sasl_mechanism",
        long = "kafka-sasl-mechanism",
        env = "LOCUS_KAFKA_SASL_MECHANISM",
        value_parser = SaslMechanism::from_str
    )]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// `sasl.username`: the principal this process logs in as.
    #[arg(
        id = "kafka_sasl_username",
        long = "kafka-sasl-username",
        env = "LOCUS_KAFKA_SASL_USERNAME"
    )]
    pub sasl_username: Option<String>,

    /// `sasl.password` of that principal.
    #[arg(
        id = "kafka_sasl_password",
        long = "kafka-sasl-password",
        env = "LOCUS_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<SecretString>,

    /// `ssl.ca.location`: the CA certificate(s) (PEM) the brokers' certificates are checked
    /// against; unset: the system's trust store.
    #[arg(
        id = "kafka_ssl_ca_location",
        long = "kafka-ssl-ca-location",
        env = "LOCUS_KAFKA_SSL_CA_LOCATION"
    )]
    pub ssl_ca_location: Option<PathBuf>,

    /// `ssl.certificate.location`: this client's certificate (PEM), for mutual TLS.
    #[arg(
        id = "kafka_ssl_certificate_location",
        long = "kafka-ssl-certificate-location",
        env = "LOCUS_KAFKA_SSL_CERTIFICATE_LOCATION"
    )]
    pub ssl_certificate_location: Option<PathBuf>,

    /// `ssl.key.location`: the private key (PEM) of that certificate.
    #[arg(
        id = "kafka_ssl_key_location",
        long = "kafka-ssl-key-location",
        env = "LOCUS_KAFKA_SSL_KEY_LOCATION"
    )]
    pub ssl_key_location: Option<PathBuf>,

    /// `ssl.key.password`: the private key's passphrase, if it has one.
    #[arg(
        id = "kafka_ssl_key_password",
        long = "kafka-ssl-key-password",
        env = "LOCUS_KAFKA_SSL_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub ssl_key_password: Option<SecretString>,
}

/// Only the security settings, for [`KafkaSecurity::from_env`].
#[derive(Parser)]
#[command(no_binary_name = true)]
struct SecurityOnly {
    #[command(flatten)]
    security: KafkaSecurity,
}

impl KafkaSecurity {
    /// SASL with `mechanism` as `username`/`password` over `protocol` (no TLS files).
    pub fn sasl(
        protocol: SecurityProtocol,
        mechanism: SaslMechanism,
        username: &str,
        password: SecretString,
    ) -> Self {
        Self {
            protocol,
            sasl_mechanism: Some(mechanism),
            sasl_username: Some(username.to_owned()),
            sasl_password: Some(password),
            ..Self::default()
        }
    }

    /// The settings from the `LOCUS_KAFKA_*` variables alone (for processes that do not
    /// parse a command line, such as test helpers), validated.
    pub fn from_env() -> Result<Self, KafkaSecurityError> {
        let only = SecurityOnly::try_parse_from(std::iter::empty::<String>())
            .map_err(|e| KafkaSecurityError::Parse(e.to_string().trim().to_owned()))?;
        only.security.validate()?;
        Ok(only.security)
    }

    /// Checks that the settings are complete and consistent, so a process refuses to start
    /// on a half-configured client instead of failing on every connection: a SASL
    /// protocol needs a mechanism, a username and a password; SASL and TLS settings need a
    /// protocol that uses them (otherwise librdkafka would ignore them silently); a client
    /// certificate needs its key; the TLS files must be readable.
    pub fn validate(&self) -> Result<(), KafkaSecurityError> {
        let protocol = self.protocol;
        if protocol.is_sasl() {
            let missing = if self.sasl_mechanism.is_none() {
                Some("LOCUS_KAFKA_SASL_MECHANISM")
            } else if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                Some("LOCUS_KAFKA_SASL_USERNAME")
            } else if self.sasl_password.is_none() {
                Some("LOCUS_KAFKA_SASL_PASSWORD")
            } else {
                None
            };
            if let Some(variable) = missing {
                return Err(KafkaSecurityError::SaslIncomplete { protocol, variable });
            }
        } else {
            let set = [
                ("LOCUS_KAFKA_SASL_MECHANISM", self.sasl_mechanism.is_some()),
                ("LOCUS_KAFKA_SASL_USERNAME", self.sasl_username.is_some()),
                ("LOCUS_KAFKA_SASL_PASSWORD", self.sasl_password.is_some()),
            ];
            if let Some((variable, _)) = set.iter().find(|(_, set)| *set) {
                return Err(KafkaSecurityError::SaslWithoutSasl { protocol, variable });
            }
        }
        let files = [
            ("LOCUS_KAFKA_SSL_CA_LOCATION", &self.ssl_ca_location),
            (
                "LOCUS_KAFKA_SSL_CERTIFICATE_LOCATION",
                &self.ssl_certificate_location,
            ),
            ("LOCUS_KAFKA_SSL_KEY_LOCATION", &self.ssl_key_location),
        ];
        if !protocol.is_tls() {
            let key_password = (
                "LOCUS_KAFKA_SSL_KEY_PASSWORD",
                self.ssl_key_password.is_some(),
            );
            let set = files
                .iter()
                .map(|(v, f)| (*v, f.is_some()))
                .chain([key_password]);
            if let Some((variable, _)) = set.into_iter().find(|(_, set)| *set) {
                return Err(KafkaSecurityError::TlsWithoutTls { protocol, variable });
            }
            return Ok(());
        }
        let pairs = [
            (
                "LOCUS_KAFKA_SSL_CERTIFICATE_LOCATION",
                self.ssl_certificate_location.is_some(),
                "LOCUS_KAFKA_SSL_KEY_LOCATION",
                self.ssl_key_location.is_some(),
            ),
            (
                "LOCUS_KAFKA_SSL_KEY_LOCATION",
                self.ssl_key_location.is_some(),
                "LOCUS_KAFKA_SSL_CERTIFICATE_LOCATION",
                self.ssl_certificate_location.is_some(),
            ),
            (
                "LOCUS_KAFKA_SSL_KEY_PASSWORD",
                self.ssl_key_password.is_some(),
                "LOCUS_KAFKA_SSL_KEY_LOCATION",
                self.ssl_key_location.is_some(),
            ),
        ];
        if let Some((variable, _, missing, _)) = pairs.iter().find(|(_, a, _, b)| *a && !*b) {
            return Err(KafkaSecurityError::TlsIncomplete { variable, missing });
        }
        for (variable, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|source| KafkaSecurityError::TlsFile {
                    variable,
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Sets `security.protocol` and whichever SASL and TLS settings are given on `config`.
    /// Plaintext with nothing set leaves `config` as librdkafka's defaults (so a client of a
    /// broker without security is configured exactly as before these settings existed).
    pub fn apply(&self, config: &mut ClientConfig) {
        if self.protocol != SecurityProtocol::Plaintext {
            config.set("security.protocol", self.protocol.as_str());
        }
        if let Some(mechanism) = self.sasl_mechanism {
            config.set("sasl.mechanism", mechanism.as_str());
        }
        if let Some(username) = &self.sasl_username {
            config.set("sasl.username", username);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password.expose_secret());
        }
        let files = [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                config.set(key, path.display().to_string());
            }
        }
        if let Some(password) = &self.ssl_key_password {
            config.set("ssl.key.password", password.expose_secret());
        }
    }

    /// The `LOCUS_KAFKA_*` variables that give a child process these settings (the
    /// passwords included: for spawning a Locus binary, never for logging).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "LOCUS_KAFKA_SECURITY_PROTOCOL".to_owned(),
            self.protocol.as_str().to_owned(),
        )];
        let mut push = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                env.push((name.to_owned(), value));
            }
        };
        push(
            "LOCUS_KAFKA_SASL_MECHANISM",
            self.sasl_mechanism.map(|m| m.as_str().to_owned()),
        );
        push("LOCUS_KAFKA_SASL_USERNAME", self.sasl_username.clone());
        push(
            "LOCUS_KAFKA_SASL_PASSWORD",
            self.sasl_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        );
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        push("LOCUS_KAFKA_SSL_CA_LOCATION", path(&self.ssl_ca_location));
        push(
            "LOCUS_KAFKA_SSL_CERTIFICATE_LOCATION",
            path(&self.ssl_certificate_location),
        );
        push("LOCUS_KAFKA_SSL_KEY_LOCATION", path(&self.ssl_key_location));
        push(
            "LOCUS_KAFKA_SSL_KEY_PASSWORD",
            self.ssl_key_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        );
        env
    }
}

impl fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &redacted(&self.sasl_password))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &redacted(&self.ssl_key_password))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn pairs_become_headers_in_order() {
        let h = headers(&[("a", "1"), ("b", "2")]);
        let got: Vec<(&str, &[u8])> = h.iter().map(|h| (h.key, h.value.unwrap())).collect();
        assert_eq!(got, [("a", &b"1"[..]), ("b", &b"2"[..])]);
    }

    fn parse(args: &[&str]) -> Result<KafkaSecurity, KafkaSecurityError> {
        let only = SecurityOnly::try_parse_from(args)
            .map_err(|e| KafkaSecurityError::Parse(e.to_string()))?;
        only.security.validate()?;
        Ok(only.security)
    }

    fn scram() -> KafkaSecurity {
        KafkaSecurity::sasl(
            SecurityProtocol::SaslPlaintext,
            SaslMechanism::ScramSha512,
            "locus-ingest",
            SecretString::from("hunter2-but-longer"),
        )
    }

    #[test]
    fn nothing_set_is_plaintext_and_changes_no_client_setting() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.protocol, SecurityProtocol::Plaintext);
        let mut c = ClientConfig::new();
        s.apply(&mut c);
        assert!(c.config_map().is_empty(), "{:?}", c.config_map());
    }

    #[test]
    fn sasl_settings_reach_the_client_config() {
        let mut c = ClientConfig::new();
        scram().apply(&mut c);
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("locus-ingest"));
        assert_eq!(c.get("sasl.password"), Some("hunter2-but-longer"));
    }

    #[test]
    fn protocol_and_mechanism_names_are_case_insensitive() {
        let s = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-256",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password",
            "p",
        ])
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.sasl_mechanism, Some(SaslMechanism::ScramSha256));
    }

    #[test]
    fn a_sasl_protocol_without_a_username_is_refused_and_the_error_names_the_variable() {
        let e = parse(&[
            "--kafka-security-protocol",
            "SASL_PLAINTEXT",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-password",
            "p",
        ])
        .unwrap_err();
        assert!(
            matches!(
                e,
                KafkaSecurityError::SaslIncomplete {
                    variable: "LOCUS_KAFKA_SASL_USERNAME",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("LOCUS_KAFKA_SASL_USERNAME"), "{e}");
    }

    #[test]
    fn a_sasl_protocol_without_a_mechanism_or_password_is_refused() {
        let mut s = scram();
        s.sasl_mechanism = None;
        assert!(s.validate().unwrap_err().to_string().contains("MECHANISM"));
        let mut s = scram();
        s.sasl_password = None;
        assert!(s.validate().unwrap_err().to_string().contains("PASSWORD"));
    }

    #[test]
    fn credentials_with_a_protocol_without_sasl_are_refused_not_ignored() {
        let mut s = scram();
        s.protocol = SecurityProtocol::Plaintext;
        let e = s.validate().unwrap_err();
        assert!(
            matches!(e, KafkaSecurityError::SaslWithoutSasl { .. }),
            "{e}"
        );
    }

    #[test]
    fn tls_files_need_a_tls_protocol_a_key_beside_the_certificate_and_must_exist() {
        let mut s = KafkaSecurity {
            ssl_ca_location: Some("/etc/hostname".into()),
            ..KafkaSecurity::default()
        };
        assert!(matches!(
            s.validate().unwrap_err(),
            KafkaSecurityError::TlsWithoutTls { .. }
        ));
        s.protocol = SecurityProtocol::Ssl;
        s.validate().unwrap();
        s.ssl_certificate_location = Some("/etc/hostname".into());
        assert!(matches!(
            s.validate().unwrap_err(),
            KafkaSecurityError::TlsIncomplete {
                missing: "LOCUS_KAFKA_SSL_KEY_LOCATION",
                ..
            }
        ));
        s.ssl_key_location = Some("/nonexistent/locus-client.key".into());
        let e = s.validate().unwrap_err();
        assert!(matches!(e, KafkaSecurityError::TlsFile { .. }), "{e}");
        assert!(
            e.to_string().contains("/nonexistent/locus-client.key"),
            "{e}"
        );
    }

    #[test]
    fn unknown_protocols_are_refused_with_the_known_ones_named() {
        let e = parse(&["--kafka-security-protocol", "SASL"]).unwrap_err();
        assert!(e.to_string().contains("SASL_PLAINTEXT"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let mut s = scram();
        s.ssl_key_password = Some(SecretString::from("key-secret"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("key-secret"), "{shown}");
        assert!(shown.contains("locus-ingest"), "{shown}");
    }

    #[test]
    fn to_env_round_trips_through_the_variables() {
        let env = scram().to_env();
        let args: Vec<String> = env
            .iter()
            .flat_map(|(k, v)| {
                let flag = k
                    .strip_prefix("LOCUS_")
                    .unwrap()
                    .to_ascii_lowercase()
                    .replace('_', "-");
                [format!("--{flag}"), v.clone()]
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let back = parse(&args).unwrap();
        assert_eq!(format!("{back:?}"), format!("{:?}", scram()));
        assert_eq!(
            back.sasl_password.unwrap().expose_secret(),
            "hunter2-but-longer"
        );
    }
}
