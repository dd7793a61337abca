//! Shared-access-signature checks: the token clients put to `$cbs` and send in the HTTP `Authorization` header.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sha2::Sha256;

/// Why a token was refused. The text never contains the key or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SasError {
    #[error("token is not a shared access signature (expected `SharedAccessSignature sr=..&sig=..&se=..&skn=..`)")]
    Malformed,
    #[error("token lacks the `{0}` field")]
    MissingField(&'static str),
    #[error("token names key `{0}`, which this namespace does not have")]
    UnknownKeyName(String),
    #[error("token expired at unix time {0}")]
    Expired(i64),
    #[error("token expiry `se` is not a unix time")]
    BadExpiry,
    #[error("token signature does not match the key")]
    BadSignature,
}

/// The key a namespace accepts signatures from.
#[derive(Clone)]
pub(crate) struct SasKey {
    pub(crate) name: String,
    pub(crate) key: String,
}

impl std::fmt::Debug for SasKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SasKey {
    /// Checks a `SharedAccessSignature ...` string against this key and the clock (`now` in unix seconds).
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<(), SasError> {
        let fields = token
            .trim()
            .strip_prefix("SharedAccessSignature")
            .ok_or(SasError::Malformed)?
            .trim();
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for pair in fields.split('&') {
            let (name, value) = pair.split_once('=').ok_or(SasError::Malformed)?;
            match name {
                "sr" => sr = Some(value),
                "sig" => sig = Some(value),
                "se" => se = Some(value),
                "skn" => skn = Some(value),
                _ => {}
            }
        }
        let sr = sr.ok_or(SasError::MissingField("sr"))?;
        let sig = sig.ok_or(SasError::MissingField("sig"))?;
        let se = se.ok_or(SasError::MissingField("se"))?;
        let skn = decode(skn.ok_or(SasError::MissingField("skn"))?);
        if skn != self.name {
            return Err(SasError::UnknownKeyName(skn));
        }
        let expiry: i64 = se.parse().map_err(|_| SasError::BadExpiry)?;
        if expiry <= now {
            return Err(SasError::Expired(expiry));
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(decode(sig).as_bytes())
            .map_err(|_| SasError::BadSignature)?;
        // Clients differ in how they escape the resource (`quote_plus`, lower- or upper-case hex), so accept a
        // signature over the resource exactly as sent, or over its canonical re-encoding.
        let canonical = utf8_percent_encode(&decode(sr), NON_ALPHANUMERIC).to_string();
        let matches = [sr, canonical.as_str()].iter().any(|resource| {
            // HMAC takes keys of any length, so this cannot fail.
            let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(format!("{resource}\n{se}").as_bytes());
            mac.verify_slice(&given).is_ok()
        });
        if matches {
            Ok(())
        } else {
            Err(SasError::BadSignature)
        }
    }

    /// Makes a token for `resource` valid until `expiry` (unix seconds), as the SDKs do.
    #[cfg(test)]
    pub(crate) fn sign(&self, resource: &str, expiry: i64) -> String {
        let encoded = utf8_percent_encode(resource, NON_ALPHANUMERIC).to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(format!("{encoded}\n{expiry}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!(
            "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={}",
            utf8_percent_encode(&sig, NON_ALPHANUMERIC),
            utf8_percent_encode(&self.name, NON_ALPHANUMERIC)
        )
    }
}

fn decode(value: &str) -> String {
    percent_decode_str(&value.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SasKey {
        SasKey {
            name: "RootManageSharedAccessKey".into(),
            key: "c2VjcmV0".into(),
        }
    }

    #[test]
    fn a_token_signed_with_the_key_passes_and_tampering_fails() {
        let token = key().sign("amqp://127.0.0.1/q1", 2_000);
        assert_eq!(key().verify(&token, 1_000), Ok(()));
        assert_eq!(key().verify(&token, 2_000), Err(SasError::Expired(2_000)));
        let other = SasKey {
            name: key().name,
            key: "d3Jvbmc=".into(),
        };
        assert_eq!(other.verify(&token, 1_000), Err(SasError::BadSignature));
        let renamed = SasKey {
            name: "listen".into(),
            key: key().key,
        };
        assert!(matches!(
            renamed.verify(&token, 1_000),
            Err(SasError::UnknownKeyName(_))
        ));
        assert_eq!(key().verify("Bearer abc", 1_000), Err(SasError::Malformed));
    }
}
