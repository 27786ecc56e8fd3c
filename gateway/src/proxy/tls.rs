//! TLS interception: a local CA whose leaf certificates are minted per SNI
//! for the agent side, and fully verified TLS (system roots plus a target's
//! own CA) for the upstream side.
mod ca;
mod upstream;

pub use ca::{LeafResolver, LocalCa};
pub use upstream::{upstream_config, UpstreamTls};

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
    /// A target's extra CA bundle is unusable (operator input).
    #[error("CA bundle {path}: {message}")]
    Bundle {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
}
