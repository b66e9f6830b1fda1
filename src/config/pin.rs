//! Upstream key pins: the `key-fp:SHA256:<base64>` / `cert-fp:SHA256:<base64>`
//! syntax, parsed into fixed-size digests.
//!
//! This file owns the textual form of a pin and nothing else. It never hashes
//! certificates and never decides whether a pin matches: that is the TLS
//! verifier's job (`src/tls/verify.rs`).

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, BASE64_NOPAD};

/// The accepted forms, quoted in every parse error.
const EXPECTED: &str = "expected key-fp:SHA256:<base64> or cert-fp:SHA256:<base64>";

/// A SHA-256 pin on an upstream's certificate chain.
///
/// With pins configured, a connection is accepted only if some certificate in
/// the presented chain matches one of them (RFC 7858 §4.2): the leaf, or a CA
/// the leaf then validates to for `tls_name` (`src/tls/verify.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pin {
    /// `key-fp:SHA256:…`: SHA-256 of the DER SubjectPublicKeyInfo. Survives
    /// certificate renewal as long as the key is kept (the RFC 7858 §4.2 pin).
    KeySha256([u8; 32]),
    /// `cert-fp:SHA256:…`: SHA-256 of the whole certificate DER. Breaks at
    /// every renewal.
    CertSha256([u8; 32]),
}

impl Pin {
    /// The 32-byte SHA-256 digest, whatever it was taken over.
    pub fn digest(&self) -> &[u8; 32] {
        match self {
            Pin::KeySha256(d) | Pin::CertSha256(d) => d,
        }
    }

    /// The pin's prefix: `"key-fp"` or `"cert-fp"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Pin::KeySha256(_) => "key-fp",
            Pin::CertSha256(_) => "cert-fp",
        }
    }
}

impl fmt::Display for Pin {
    /// The canonical form: `key-fp:SHA256:<base64 with padding>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:SHA256:{}", self.kind(), BASE64.encode(self.digest()))
    }
}

/// Why a pin string was rejected. Every variant's message starts with the
/// accepted syntax and ends with the detail in parentheses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinParseError {
    /// Not of the shape `<kind>:<hash>:<base64>`.
    #[error("{EXPECTED} (not of the form <kind>:<hash>:<base64>)")]
    Shape,
    /// The first part is neither `key-fp` nor `cert-fp`.
    #[error("{EXPECTED} (unknown pin kind {0:?})")]
    UnknownKind(String),
    /// A hash other than SHA-256.
    #[error("{EXPECTED} (only SHA256 is supported, not {0:?})")]
    UnsupportedHash(String),
    /// The digest is not standard-alphabet base64.
    #[error("{EXPECTED} (digest is not valid base64)")]
    InvalidBase64,
    /// The digest decodes, but not to 32 bytes.
    #[error("{EXPECTED} (base64 decodes to {0} bytes, need 32)")]
    WrongLength(usize),
}

impl FromStr for Pin {
    type Err = PinParseError;

    /// Parses `key-fp:SHA256:<base64>` or `cert-fp:SHA256:<base64>`. The hash
    /// name is case-insensitive; base64 padding is optional.
    fn from_str(s: &str) -> Result<Pin, PinParseError> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').ok_or(PinParseError::Shape)?;
        let (hash, b64) = rest.split_once(':').ok_or(PinParseError::Shape)?;
        let make: fn([u8; 32]) -> Pin = match kind {
            "key-fp" => Pin::KeySha256,
            "cert-fp" => Pin::CertSha256,
            other => return Err(PinParseError::UnknownKind(other.to_owned())),
        };
        if !hash.eq_ignore_ascii_case("sha256") {
            return Err(PinParseError::UnsupportedHash(hash.to_owned()));
        }
        let engine = if b64.ends_with('=') { &BASE64 } else { &BASE64_NOPAD };
        let bytes = engine.decode(b64.as_bytes()).map_err(|_| PinParseError::InvalidBase64)?;
        let digest: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| PinParseError::WrongLength(bytes.len()))?;
        Ok(make(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "INSZEZpDoWKiavosV2/xVT8O83vk/RRwS+LTiL+IpHs=";

    fn digest() -> [u8; 32] {
        BASE64.decode(B64.as_bytes()).unwrap().try_into().unwrap()
    }

    #[test]
    fn parses_key_and_cert_pins() {
        let key: Pin = format!("key-fp:SHA256:{B64}").parse().unwrap();
        assert_eq!(key, Pin::KeySha256(digest()));
        let cert: Pin = format!("cert-fp:SHA256:{B64}").parse().unwrap();
        assert_eq!(cert, Pin::CertSha256(digest()));
        assert_eq!(cert.kind(), "cert-fp");
        assert_eq!(cert.digest(), &digest());
    }

    #[test]
    fn hash_name_is_case_insensitive() {
        for hash in ["sha256", "SHA256", "Sha256", "sHA256"] {
            let pin: Pin = format!("key-fp:{hash}:{B64}").parse().unwrap();
            assert_eq!(pin, Pin::KeySha256(digest()), "{hash}");
        }
    }

    #[test]
    fn padding_is_optional() {
        let nopad = B64.trim_end_matches('=');
        let pin: Pin = format!("key-fp:SHA256:{nopad}").parse().unwrap();
        assert_eq!(pin, Pin::KeySha256(digest()));
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let pin: Pin = format!("  key-fp:SHA256:{B64}\n").parse().unwrap();
        assert_eq!(pin, Pin::KeySha256(digest()));
    }

    #[test]
    fn wrong_length_is_rejected_with_the_length() {
        // 20 bytes: a SHA-1 digest.
        let sha1 = BASE64.encode(&[7u8; 20]);
        let err = format!("key-fp:SHA256:{sha1}").parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::WrongLength(20));
        assert_eq!(
            err.to_string(),
            "expected key-fp:SHA256:<base64> or cert-fp:SHA256:<base64> \
             (base64 decodes to 20 bytes, need 32)"
        );
        let err = "key-fp:SHA256:".parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::WrongLength(0));
    }

    #[test]
    fn wrong_prefix_is_rejected() {
        let err = format!("spki:SHA256:{B64}").parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::UnknownKind("spki".into()));
        // The prefix is exact; only the hash name is case-insensitive.
        let err = format!("KEY-FP:SHA256:{B64}").parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::UnknownKind("KEY-FP".into()));
        // A bare digest, or stubby's `pin-sha256="…"` form, has no kind.
        assert_eq!(B64.parse::<Pin>().unwrap_err(), PinParseError::Shape);
        let err = format!("pin-sha256={B64}").parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::Shape);
    }

    #[test]
    fn other_hashes_are_rejected() {
        let err = format!("key-fp:sha384:{B64}").parse::<Pin>().unwrap_err();
        assert_eq!(err, PinParseError::UnsupportedHash("sha384".into()));
        assert!(err.to_string().contains("only SHA256 is supported"));
    }

    #[test]
    fn non_base64_is_rejected() {
        for bad in [
            "key-fp:SHA256:not base64!",
            // URL-safe alphabet is not accepted.
            "key-fp:SHA256:INSZEZpDoWKiavosV2_xVT8O83vk_RRwS-LTiL-IpHs=",
            // Wrong padding.
            "key-fp:SHA256:INSZEZpDoWKiavosV2/xVT8O83vk/RRwS+LTiL+IpHs==",
        ] {
            assert_eq!(bad.parse::<Pin>().unwrap_err(), PinParseError::InvalidBase64, "{bad}");
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let nopad = B64.trim_end_matches('=');
        let pin: Pin = format!("key-fp:sha256:{nopad}").parse().unwrap();
        assert_eq!(pin.to_string(), format!("key-fp:SHA256:{B64}"));
        for pin in [
            Pin::KeySha256(digest()),
            Pin::CertSha256(digest()),
            Pin::KeySha256([0; 32]),
            Pin::CertSha256([0xff; 32]),
        ] {
            assert_eq!(pin.to_string().parse::<Pin>().unwrap(), pin);
        }
    }
}
