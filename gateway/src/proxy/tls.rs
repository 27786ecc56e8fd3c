//! TLS interception, agent side: a local CA whose leaf certificates are
//! minted per SNI. The upstream side (fully verified TLS) is `net`'s.
mod ca;

pub use ca::{LeafResolver, LocalCa};

/// TLS errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA files could not be read or written (gateway side).
    #[error("gateway CA {path}: {message}")]
    CaFiles {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// Minting or loading a certificate failed (gateway side).
    #[error("gateway certificate: {0}")]
    Cert(String),
}
