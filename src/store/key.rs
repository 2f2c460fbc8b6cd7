//! The hashed form in which stores keep a session id.

use std::fmt;

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
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
        // An id of up to 55 bytes (the default bounds allow 128) is one padded block: hashed
        // with the compression function alone, without the `Digest` API's buffering. The same
        // SHA-256 (FIPS 180-4, 5.1.1 and 5.3.3), checked against `Sha256::digest` below.
        const INITIAL: [u32; 8] = [
            0x6a09_e667,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ];
        if id.len() > 55 {
            return SessionKey(Sha256::digest(id).into());
        }
        let mut block = [GenericArray::<u8, U64>::default()];
        block[0][..id.len()].copy_from_slice(id);
        block[0][id.len()] = 0x80;
        // The length in bits; at most 440 here.
        block[0][56..].copy_from_slice(&(id.len() as u64 * 8).to_be_bytes());
        let mut state = INITIAL;
        sha2::compress256(&mut state, &block);
        let mut hash = [0; 32];
        for (bytes, word) in hash.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        SessionKey(hash)
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
    fn one_block_ids_hash_as_the_digest_api_does() {
        // Every length around the one-block limit (55 bytes) and the block size.
        for len in 0..=130 {
            let id: Vec<u8> = (0..len).map(|i| b'!' + (i * 7 % 94) as u8).collect();
            let expected: [u8; 32] = Sha256::digest(&id).into();
            assert_eq!(
                SessionKey::from_id_bytes(&id).as_bytes(),
                &expected,
                "{len} bytes"
            );
        }
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
