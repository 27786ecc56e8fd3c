//! The gateway's local CA. Created on first run under the state directory
//! (key mode 0600); leaf certificates are minted per name and cached.
use std::{
    collections::HashMap,
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::TlsError;

/// The local CA and its leaf cache.
pub struct LocalCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalCa")
    }
}

/// Leaves cached before the cache is cleared.
const LEAF_CACHE: usize = 1024;

fn ca_err(path: &Path) -> impl Fn(String) -> TlsError + '_ {
    move |message| TlsError::CaFiles {
        path: path.to_owned(),
        message,
    }
}

impl LocalCa {
    /// Loads `dir/ca.pem` and `dir/ca.key`, creating them if absent.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let pem = fs::read_to_string(&cert_path).map_err(|e| ca_err(&cert_path)(e.to_string()))?;
            let key_pem = fs::read_to_string(&key_path).map_err(|e| ca_err(&key_path)(e.to_string()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| ca_err(&key_path)(e.to_string()))?;
            let params = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| ca_err(&cert_path)(e.to_string()))?;
            // Re-signing the parsed parameters gives a signer with the same
            // name and key; the certificate agents trust stays the file's.
            let cert = params.self_signed(&key).map_err(|e| TlsError::Cert(e.to_string()))?;
            return Ok(Self {
                cert,
                key,
                leaves: Mutex::new(HashMap::new()),
            });
        }
        fs::create_dir_all(dir).map_err(|e| ca_err(dir)(e.to_string()))?;
        let key = KeyPair::generate().map_err(|e| TlsError::Cert(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| TlsError::Cert(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        dn.push(DnType::CommonName, format!("Interlock local CA ({host})"));
        dn.push(DnType::OrganizationName, "Interlock");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(10 * 365 * 86_400)).into();
        let cert = params.self_signed(&key).map_err(|e| TlsError::Cert(e.to_string()))?;
        let pem = cert.pem();
        // The key first, created 0600, so it is never readable by others.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(|e| ca_err(&key_path)(e.to_string()))?;
        file.write_all(key.serialize_pem().as_bytes())
            .map_err(|e| ca_err(&key_path)(e.to_string()))?;
        fs::write(&cert_path, &pem).map_err(|e| ca_err(&cert_path)(e.to_string()))?;
        tracing::info!(path = %cert_path.display(), "created the local CA; install it in agents' trust stores (`interlock ca export`)");
        Ok(Self {
            cert,
            key,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// A leaf for `name` (a DNS name or an IP address), minted once and cached.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let mut cache = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(name) {
            return Ok(hit.clone());
        }
        let err = |e: rcgen::Error| TlsError::Cert(format!("minting a certificate for {name}: {e}"));
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into().map_err(err)?),
        };
        params.subject_alt_names = vec![san];
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(30 * 86_400)).into();
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err)?;
        let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&der_key).map_err(|e| TlsError::Cert(e.to_string()))?;
        let chain = vec![cert.der().clone(), CertificateDer::from(self.cert.der().to_vec())];
        let certified = Arc::new(CertifiedKey::new(chain, signer));
        if cache.len() >= LEAF_CACHE {
            cache.clear();
        }
        cache.insert(name.to_owned(), certified.clone());
        Ok(certified)
    }
}

/// Picks the leaf by SNI (or a fixed name when the agent sent none).
#[derive(Debug)]
pub struct LeafResolver {
    /// The CA.
    pub ca: Arc<LocalCa>,
    /// Name used when the ClientHello has no SNI (the destination's address).
    pub fallback: String,
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or(&self.fallback);
        match self.ca.leaf(name) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::error!("no certificate for {name}: {e}");
                None
            }
        }
    }
}
