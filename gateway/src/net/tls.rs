//! Upstream TLS: full verification against the system roots plus the
//! target's own CA bundle. A failed verification is an error, never a
//! silent downgrade.
use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};

/// Why an upstream TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A target's extra CA bundle is unusable (operator input).
    #[error("CA bundle {path}: {message}")]
    Bundle {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// The TLS library refused the configuration (gateway side).
    #[error("gateway TLS configuration: {0}")]
    Config(String),
}

/// A client configuration per CA bundle (shared by all targets without one).
pub type UpstreamTls = Arc<ClientConfig>;

/// Builds a client config trusting the system roots and `extra_ca`.
pub fn upstream_config(extra_ca: Option<&Path>) -> Result<UpstreamTls, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!("system trust store: {err}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system roots loaded");
    if let Some(path) = extra_ca {
        let bundle_err = |message: String| TlsConfigError::Bundle {
            path: path.to_owned(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bundle_err(e.to_string()))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| bundle_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(bundle_err("no certificates in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bundle_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
