//! Sealing masked originals. Where a masking rule keeps originals, the
//! values it replaced are stored encrypted (AES-256-GCM, a fresh random
//! nonce each) with a key only the gateway's state directory holds; they
//! are never written in plaintext. `interlock audit show` opens them for
//! whoever can read that key.
use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    rand::{SecureRandom, SystemRandom},
};

use super::{
    keys::KeyError,
    record::{hex, unhex},
};

/// The sealing key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Sealer {
    /// The key file name in the state directory.
    pub const FILE: &'static str = "audit-seal.key";

    /// Loads the key from `dir`, creating it (0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(Self::FILE);
        let rng = SystemRandom::new();
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            let mut raw = [0u8; 32];
            rng.fill(&mut raw).map_err(|_| file_err(&path, "no randomness"))?;
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| file_err(&path, e))?;
            f.write_all(&raw)
                .and_then(|()| f.sync_all())
                .map_err(|e| file_err(&path, e))?;
        }
        Self::load(&path)
    }

    /// Loads an existing key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path).map_err(|e| file_err(path, e))?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| KeyError::Invalid(path.display().to_string()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts a value: hex of nonce, ciphertext and tag. `None` only if
    /// the kernel gives no randomness (then nothing is kept).
    pub fn seal(&self, value: &[u8]) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = value.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(hex(&out))
    }

    /// Decrypts what [`seal`](Self::seal) made; `None` if it was altered or the key differs.
    pub fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        let raw = unhex(sealed)?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut data).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_unaltered_and_with_the_key() {
        let dir = std::env::temp_dir().join(format!("interlock-seal-{}", std::process::id()));
        let sealer = Sealer::load_or_create(&dir).unwrap();
        let sealed = sealer.seal(b"jane@example.com").unwrap();
        assert!(!sealed.contains(&hex(b"jane")));
        assert_eq!(sealer.open(&sealed).unwrap(), b"jane@example.com");
        let mut altered = sealed.clone();
        altered.replace_range(40..42, if &sealed[40..42] == "00" { "01" } else { "00" });
        assert!(sealer.open(&altered).is_none());
        std::fs::remove_file(dir.join(Sealer::FILE)).unwrap();
        let other = Sealer::load_or_create(&dir).unwrap();
        assert!(other.open(&sealed).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
