//! The hashed form in which stores keep a session id.

use std::fmt;

use sha2::{Digest, Sha256};

/// The SHA-256 of a session id: what every store keeps instead of the id.
///
/// A dump of a store therefore holds no token that could be replayed as a cookie. Its
/// `Debug` and `Display` show only the first 8 hex digits, short enough to log and to
/// correlate log lines, and useless to an attacker.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// Hashes a session id as it appears in the cookie.
    pub fn from_id(id: &str) -> Self {
        Self::from_id_bytes(id.as_bytes())
    }

    /// [`from_id`](SessionKey::from_id) for an id the layer holds as the cookie's bytes.
    pub(crate) fn from_id_bytes(id: &[u8]) -> Self {
        SessionKey(Sha256::digest(id).into())
    }

    /// Wraps a hash a store read back.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey(bytes)
    }

    /// The 32 bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash as 64 lowercase hex digits, for stores that key by text (Redis).
    pub fn to_hex(&self) -> String {
        let mut hex = String::with_capacity(64);
        for byte in self.0 {
            push_hex_byte(&mut hex, byte);
        }
        hex
    }

    /// Reads [`to_hex`](SessionKey::to_hex)'s form back: exactly 64 lowercase hex digits, so
    /// that one key has one text form.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            if pair.iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            *byte = (high * 16 + low) as u8;
        }
        Some(SessionKey(bytes))
    }

    /// The first 8 hex digits, the form used in logs.
    pub fn short(&self) -> String {
        let mut hex = String::with_capacity(8);
        for byte in &self.0[..4] {
            push_hex_byte(&mut hex, *byte);
        }
        hex
    }
}

fn push_hex_byte(out: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
    out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.short())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_sha256() {
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            SessionKey::from_id("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn reads_back_only_the_lowercase_hex_it_writes() {
        let key = SessionKey::from_id("abc");
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(SessionKey::from_hex(&key.to_hex().to_uppercase()), None);
        assert_eq!(SessionKey::from_hex("abc"), None);
        assert_eq!(SessionKey::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let key = SessionKey::from_id("abc");
        assert_eq!(format!("{key:?}"), "SessionKey(ba7816bf)");
        assert_eq!(key.to_string(), "ba7816bf");
    }
}
