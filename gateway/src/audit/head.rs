//! The head file (`<state_dir>/audit-head`): the last record this gateway
//! stored, with its hash, signed like a checkpoint. It covers the records
//! after the newest checkpoint on the gateway's own host, and because it
//! is signed it cannot be rewritten along with them by whoever can write
//! the store (or the file) without the signing key.
use std::{collections::HashMap, path::Path};

use super::keys;

/// A head as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// Its chain.
    pub instance: String,
    /// The last record's seq.
    pub seq: i64,
    /// That record's hash.
    pub hash: String,
    /// (key id, signature) over (instance, seq, hash); absent in head files
    /// written before heads were signed.
    pub signature: Option<(String, String)>,
}

impl SignedHead {
    /// Signs a head with the gateway's key.
    pub fn new(identity: &keys::Identity, instance: &str, seq: i64, hash: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            seq,
            hash: hash.to_owned(),
            signature: Some(identity.sign(instance, seq, hash)),
        }
    }

    /// The file's line.
    pub fn line(&self) -> String {
        match &self.signature {
            Some((key, sig)) => format!("{} {} {} {key} {sig}", self.instance, self.seq, self.hash),
            None => format!("{} {} {}", self.instance, self.seq, self.hash),
        }
    }

    /// Parses a head file's text; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        let instance = parts.next()?.to_owned();
        let seq = parts.next()?.parse().ok()?;
        let hash = parts.next()?.to_owned();
        let signature = match (parts.next(), parts.next()) {
            (Some(key), Some(sig)) => Some((key.to_owned(), sig.to_owned())),
            _ => None,
        };
        Some(Self {
            instance,
            seq,
            hash,
            signature,
        })
    }

    /// Reads a head file, if there is a readable one.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Checks the signature against the trusted keys (by key id).
    pub fn check(&self, trusted: &HashMap<String, &[u8]>) -> Result<(), String> {
        let Some((key, sig)) = &self.signature else {
            return Err("the head file is not signed (written by an older version, or rewritten)".into());
        };
        let Some(public) = trusted.get(key) else {
            return Err(format!("the head file is signed by key {key}, which is not trusted"));
        };
        if keys::verify(public, &self.instance, self.seq, &self.hash, sig) {
            Ok(())
        } else {
            Err("the head file's signature is not valid (rewritten)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_head_reads_back_and_a_rewritten_one_does_not_verify() {
        let dir = std::env::temp_dir().join(format!("interlock-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let id = keys::Identity::load_or_create(&dir).unwrap();
        let public = keys::read_public(&dir.join("audit-signing.pub")).unwrap();
        let trusted: HashMap<String, &[u8]> = [(keys::key_id(&public), public.as_slice())].into();
        let head = SignedHead::new(&id, &id.instance, 42, "ab12");
        let back = SignedHead::parse(&format!("{:<300}\n", head.line())).unwrap();
        assert_eq!(back, head);
        assert!(back.check(&trusted).is_ok());
        let forged = SignedHead {
            hash: "cd34".into(),
            ..back.clone()
        };
        assert!(forged.check(&trusted).unwrap_err().contains("not valid"));
        let old = SignedHead::parse("inst 7 ab12").unwrap();
        assert!(old.check(&trusted).unwrap_err().contains("not signed"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
