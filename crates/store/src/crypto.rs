//! Per-source-record data keys: personal data in the log is sealed with its record's key,
//! so deleting the key makes that data unreadable while the log stays append-only.

use std::cell::RefCell;

use chacha20poly1305::aead::rand_core::SeedableRng;
use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand_chacha::ChaCha20Rng;

use crate::StoreError;

const NONCE_LEN: usize = 24;
/// Poly1305's tag, after the ciphertext.
const TAG_LEN: usize = 16;

thread_local! {
    /// Keys and nonces come from a ChaCha20 generator seeded from the operating system once
    /// per thread: a cryptographically secure stream without a system call per key or per
    /// sealed value.
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_rng(OsRng).expect("the operating system's random numbers"));
}

/// A 256-bit XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct DataKey(Key);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        DataKey(RNG.with(|rng| XChaCha20Poly1305::generate_key(&mut *rng.borrow_mut())))
    }

    /// The key's bytes, for storage in the keys tree.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// A key read back from storage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != 32 {
            return Err(StoreError::Crypto(format!(
                "key of {} bytes, want 32",
                bytes.len()
            )));
        }
        Ok(DataKey(*Key::from_slice(bytes)))
    }

    /// Encrypts and authenticates; the output is nonce ‖ ciphertext (with its tag), built
    /// in one buffer.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = RNG.with(|rng| XChaCha20Poly1305::generate_nonce(&mut *rng.borrow_mut()));
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = XChaCha20Poly1305::new(&self.0)
            .encrypt_in_place_detached(&nonce, b"", &mut sealed[NONCE_LEN..])
            .map_err(|e| StoreError::Crypto(e.to_string()))?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// Decrypts what [`DataKey::seal`] produced; fails if anything was altered.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Crypto(
                "sealed value shorter than its nonce".into(),
            ));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        XChaCha20Poly1305::new(&self.0)
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| StoreError::Crypto("cannot open: wrong key or altered data".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_hides_plaintext_and_opens_only_with_its_key() {
        let key = DataKey::generate();
        let sealed = key.seal(b"ann.lee@example.org").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"ann"));
        assert_eq!(key.open(&sealed).unwrap(), b"ann.lee@example.org");
        assert!(DataKey::generate().open(&sealed).is_err());
        assert_ne!(
            DataKey::generate().as_bytes(),
            DataKey::generate().as_bytes()
        );
        assert_ne!(
            key.seal(b"x").unwrap()[..NONCE_LEN],
            key.seal(b"x").unwrap()[..NONCE_LEN]
        );
        let restored = DataKey::from_bytes(key.as_bytes()).unwrap();
        assert_eq!(restored.open(&sealed).unwrap(), b"ann.lee@example.org");
        // Nonce, then exactly what the cipher's own `encrypt` gives for it.
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let encrypted = XChaCha20Poly1305::new(&key.0)
            .encrypt(XNonce::from_slice(nonce), &b"ann.lee@example.org"[..])
            .unwrap();
        assert_eq!(rest, encrypted.as_slice());
        assert_eq!(sealed.len(), NONCE_LEN + 19 + TAG_LEN);
        assert_eq!(key.open(&key.seal(b"").unwrap()).unwrap(), b"");
    }
}
