//! Shared access signatures: the secret values, the connection string that carries them, and the SAS token.
//!
//! A SAS token is `SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<key name>`, where the
//! signature is base64(HMAC-SHA256(key, urlencode(resource) + "\n" + expiry)). The same function serves the
//! depth collector's management calls and anyone else who needs a token.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use time::OffsetDateTime;

/// Characters left as they are when URL-encoding a SAS field: the RFC 3986 unreserved set.
const SAS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A secret string (a key, a connection string). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call only where the value is handed to the code that needs it, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What is wrong with a connection string. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `key=value` pair is missing its `=`.
    #[error("connection string part {index} is not of the form key=value")]
    MalformedPart {
        /// Zero-based position of the part.
        index: usize,
    },
    /// A required key is absent.
    #[error("connection string has no {key}")]
    Missing {
        /// The missing key, for example `SharedAccessKey`.
        key: &'static str,
    },
    /// The endpoint is not an `sb://host` URL.
    #[error("connection string Endpoint {endpoint:?} is not of the form sb://host[:port]")]
    BadEndpoint {
        /// The endpoint as written (it holds no secret).
        endpoint: String,
    },
}

/// The parts of a Service Bus SAS connection string (`Endpoint=sb://..;SharedAccessKeyName=..;SharedAccessKey=..`).
#[derive(Clone)]
pub struct ConnectionString {
    /// The host of the endpoint, for example `contoso.servicebus.windows.net`.
    pub host: String,
    /// The port in the endpoint, if one was written.
    pub port: Option<u16>,
    /// `SharedAccessKeyName`.
    pub key_name: String,
    /// `SharedAccessKey`.
    pub key: SecretString,
    /// `EntityPath`, when the string is scoped to one entity.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: a local endpoint without TLS.
    pub development_emulator: bool,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("key_name", &self.key_name)
            .field("key", &self.key)
            .field("entity_path", &self.entity_path)
            .field("development_emulator", &self.development_emulator)
            .finish()
    }
}

impl ConnectionString {
    /// Parses a connection string. Keys are matched case-insensitively; unknown keys are ignored.
    pub fn parse(text: &SecretString) -> Result<Self, ConnectionStringError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut entity_path = None;
        let mut development_emulator = false;
        for (index, part) in text.expose().split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnectionStringError::MalformedPart { index })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.trim().to_string()),
                "sharedaccesskeyname" => key_name = Some(v.trim().to_string()),
                "sharedaccesskey" => key = Some(SecretString::new(v.trim())),
                "entitypath" => entity_path = Some(v.trim().to_string()),
                "usedevelopmentemulator" => {
                    development_emulator = v.trim().eq_ignore_ascii_case("true")
                }
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::Missing { key: "Endpoint" })?;
        let key_name = key_name.ok_or(ConnectionStringError::Missing {
            key: "SharedAccessKeyName",
        })?;
        let key = key.ok_or(ConnectionStringError::Missing {
            key: "SharedAccessKey",
        })?;
        let bad = || ConnectionStringError::BadEndpoint {
            endpoint: endpoint.clone(),
        };
        let url = url::Url::parse(&endpoint).map_err(|_| bad())?;
        if url.scheme() != "sb" {
            return Err(bad());
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        Ok(Self {
            host: host.to_string(),
            port: url.port(),
            key_name,
            key,
            entity_path: entity_path.filter(|p| !p.is_empty()),
            development_emulator,
        })
    }
}

/// URL-encodes one SAS field the way Service Bus expects (everything but the unreserved set).
pub fn sas_encode(value: &str) -> String {
    utf8_percent_encode(value, SAS_ENCODE).to_string()
}

/// Builds a SAS token for `resource` (a URL such as `https://ns.servicebus.windows.net/queue`) valid until
/// `expiry`, signed with the named key. The result is the whole `Authorization` header value.
pub fn sas_token(
    resource: &str,
    key_name: &str,
    key: &SecretString,
    expiry: OffsetDateTime,
) -> String {
    let encoded_resource = sas_encode(resource);
    let expiry = expiry.unix_timestamp().to_string();
    let to_sign = format!("{encoded_resource}\n{expiry}");
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={encoded_resource}&sig={}&se={expiry}&skn={}",
        sas_encode(&signature),
        sas_encode(key_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_a_known_answer() {
        // Known answer computed with Python's hmac/hashlib/base64 and urllib.parse.quote_plus for the resource.
        let key = SecretString::new("secret");
        let expiry = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let token = sas_token(
            "https://ns.servicebus.windows.net/orders",
            "RootManageSharedAccessKey",
            &key,
            expiry,
        );
        assert_eq!(
            token,
            "SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Forders\
             &sig=qZY1Aw3O2KQntgC5KNU5RAry41I8NbjOeotAjFoYzB8%3D&se=1700000000&skn=RootManageSharedAccessKey"
        );
    }

    #[test]
    fn connection_string_parses_and_hides_the_key() {
        let cs = SecretString::new(
            "Endpoint=sb://127.0.0.2:5672/;SharedAccessKeyName=root;SharedAccessKey=s3cr3t-key;UseDevelopmentEmulator=true",
        );
        let parsed = ConnectionString::parse(&cs).unwrap();
        assert_eq!(parsed.host, "127.0.0.2");
        assert_eq!(parsed.port, Some(5672));
        assert_eq!(parsed.key_name, "root");
        assert_eq!(parsed.key.expose(), "s3cr3t-key");
        assert!(parsed.development_emulator);
        let debug = format!("{parsed:?} {cs:?} {cs}");
        assert!(!debug.contains("s3cr3t"), "secret leaked into {debug}");
    }

    #[test]
    fn connection_string_errors_name_the_missing_part_without_the_key() {
        let check = |text: &str, expected: &str| {
            let err = ConnectionString::parse(&SecretString::new(text))
                .unwrap_err()
                .to_string();
            assert_eq!(err, expected);
            assert!(!err.contains("hunter2"));
        };
        check(
            "SharedAccessKeyName=a;SharedAccessKey=hunter2",
            "connection string has no Endpoint",
        );
        check(
            "Endpoint=sb://h;SharedAccessKey=hunter2",
            "connection string has no SharedAccessKeyName",
        );
        check(
            "Endpoint=sb://h;SharedAccessKeyName=a",
            "connection string has no SharedAccessKey",
        );
        check(
            "Endpoint=https://h;SharedAccessKeyName=a;SharedAccessKey=hunter2",
            "connection string Endpoint \"https://h\" is not of the form sb://host[:port]",
        );
        check(
            "Endpoint=sb://h;hunter2",
            "connection string part 1 is not of the form key=value",
        );
    }
}
