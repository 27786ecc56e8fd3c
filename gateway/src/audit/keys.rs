//! The gateway's audit identity: a stable instance id (its chain's name) and
//! an Ed25519 key that signs checkpoints. Both live in the state directory,
//! root-only; the public key is also written beside them so `audit verify`
//! can check signatures without the private key.
use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use ring::{
    rand::SystemRandom,
    signature::{self, Ed25519KeyPair, KeyPair},
};

use super::record::{hex, unhex};

/// Why the audit identity is unavailable (gateway side).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key or id file could not be read or written.
    #[error("audit key file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The key file does not hold a usable key.
    #[error("audit key file {0} is not a valid Ed25519 key")]
    Invalid(String),
}

/// The instance id and signing key.
pub struct Identity {
    /// The instance's chain name.
    pub instance: String,
    key: Ed25519KeyPair,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(path, e))
}

impl Identity {
    /// Loads the identity from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let id_path = dir.join("audit-instance");
        if !id_path.exists() {
            let rng = SystemRandom::new();
            let mut raw = [0u8; 8];
            ring::rand::SecureRandom::fill(&rng, &mut raw).map_err(|_| file_err(&id_path, "no randomness"))?;
            write_private(&id_path, hex(&raw).as_bytes())?;
        }
        let instance = std::fs::read_to_string(&id_path)
            .map_err(|e| file_err(&id_path, e))?
            .trim()
            .to_owned();
        let key_path = dir.join("audit-signing.pk8");
        if !key_path.exists() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| file_err(&key_path, "key generation failed"))?;
            write_private(&key_path, pkcs8.as_ref())?;
        }
        let pkcs8 = std::fs::read(&key_path).map_err(|e| file_err(&key_path, e))?;
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid(key_path.display().to_string()))?;
        let pub_path = dir.join("audit-signing.pub");
        let public = hex(key.public_key().as_ref());
        if std::fs::read_to_string(&pub_path)
            .map(|t| t.trim().to_owned())
            .ok()
            .as_deref()
            != Some(public.as_str())
        {
            std::fs::write(&pub_path, format!("{public}\n")).map_err(|e| file_err(&pub_path, e))?;
        }
        Ok(Self { instance, key })
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs (instance, seq, hash): a checkpoint's or a head's statement
    /// that the record `seq` of `instance` has `hash`. Returns (key id, signature) in hex.
    pub fn sign(&self, instance: &str, seq: i64, hash: &str) -> (String, String) {
        let sig = self.key.sign(&checkpoint_message(instance, seq, hash));
        (key_id(self.key.public_key().as_ref()), hex(sig.as_ref()))
    }
}

/// What a checkpoint signature covers.
fn checkpoint_message(instance: &str, seq: i64, hash: &str) -> Vec<u8> {
    format!("interlock-audit-checkpoint\n{instance}\n{seq}\n{hash}").into_bytes()
}

/// A short id for a public key.
pub fn key_id(public: &[u8]) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8])
}

/// Reads a public key file written by [`Identity::load_or_create`].
pub fn read_public(path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    unhex(text.trim()).ok_or_else(|| KeyError::Invalid(path.display().to_string()))
}

/// Checks a checkpoint signature.
pub fn verify(public: &[u8], instance: &str, seq: i64, hash: &str, signature_hex: &str) -> bool {
    let Some(sig) = unhex(signature_hex) else { return false };
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(&checkpoint_message(instance, seq, hash), &sig)
        .is_ok()
}
