//! The signature of a delivery, in the scheme Stripe uses: `Bazaar-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint's secret>`, with a second `v1` while a
//! rotated-out secret still signs. A receiver recomputes the MAC over the raw body with its
//! secret, compares in constant time, and refuses a `t` too far from its clock (a replay).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "bazaar-signature";

/// A fresh endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header's value for `body` sent at `timestamp`, signed by every secret in `secrets`.
pub fn header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for secret in secrets {
        value.push_str(",v1=");
        value.push_str(&sign(secret, timestamp, body));
    }
    value
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `t=` or no `v1=` in the header.
    #[error("malformed signature header")]
    Malformed,
    /// `t` is further than the tolerance from now.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No `v1` matches.
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a header as a receiver does: some `v1` is `secret`'s MAC of `body` at `t`, and `t`
/// is within `tolerance_secs` of `now` (unix seconds).
pub fn verify(value: &str, secret: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), Refused> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", mac)) => signatures.push(mac),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return Err(Refused::Malformed) };
    if signatures.is_empty() {
        return Err(Refused::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Refused::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let matches = |hex_mac: &&str| hex::decode(hex_mac).is_ok_and(|bytes| constant_time_eq(&bytes, &expected));
    if signatures.iter().any(matches) {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: the MAC underneath is the standard one.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // And what is signed is exactly "<t>.<body>", the secret's text as the key.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_x").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(sign("whsec_x", 1_700_000_000, b"{\"a\":1}"), hex::encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn a_receiver_accepts_its_signature_and_refuses_every_tampering() {
        let body = br#"{"id":"e1","type":"OrderPaid"}"#;
        let value = header(&["whsec_new", "whsec_old"], 1_700_000_000, body);
        assert!(value.starts_with("t=1700000000,v1="));
        assert_eq!(value.matches("v1=").count(), 2);
        // Either secret verifies while both sign: a receiver may switch at its own pace.
        assert_eq!(verify(&value, "whsec_new", body, 1_700_000_010, 300), Ok(()));
        assert_eq!(verify(&value, "whsec_old", body, 1_700_000_010, 300), Ok(()));
        assert_eq!(verify(&value, "whsec_other", body, 1_700_000_010, 300), Err(Refused::Mismatch));
        assert_eq!(verify(&value, "whsec_new", b"{}", 1_700_000_010, 300), Err(Refused::Mismatch));
        assert_eq!(verify(&value, "whsec_new", body, 1_700_000_301, 300), Err(Refused::Stale));
        // A timestamp moved forward no longer matches the MAC.
        let moved = value.replace("t=1700000000", "t=1700000100");
        assert_eq!(verify(&moved, "whsec_new", body, 1_700_000_100, 300), Err(Refused::Mismatch));
        assert_eq!(verify("v1=00", "whsec_new", body, 0, 300), Err(Refused::Malformed));
        assert_eq!(verify("t=1", "whsec_new", body, 1, 300), Err(Refused::Malformed));
    }

    #[test]
    fn secrets_are_fresh_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
    }
}
