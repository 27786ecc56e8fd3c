//! A real HTTPS upstream on loopback, with a CA of its own that only the
//! gateway is told about (the agent trusts the gateway's CA instead).
use std::{
    io::BufRead,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// The running server and its files.
pub struct HttpsUpstream {
    child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its CA certificate (PEM file).
    pub ca_file: PathBuf,
    dir: PathBuf,
}

/// A fresh CA and a leaf certificate for `names` signed by it, as PEM:
/// (CA certificate, leaf certificate, leaf key).
pub fn test_pki(ca_name: &str, names: Vec<String>) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

impl HttpsUpstream {
    /// Starts a server for `host` on `ip`, accepting only `Bearer real_key`.
    pub fn start(ip: &str, host: &str, real_key: &str) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("https"));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, leaf, key) = test_pki("test upstream CA", vec![host.to_owned(), ip.to_owned()]);
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_file = write("ca.pem", ca);
        let cert = write("cert.pem", leaf);
        let key_file = write("key.pem", key);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/https_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([ip, cert.to_str().unwrap(), key_file.to_str().unwrap(), real_key])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the HTTPS test server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HTTPS test server said {line:?}"));
        Self {
            child,
            addr: format!("{ip}:{port}").parse().unwrap(),
            ca_file,
            dir,
        }
    }
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
