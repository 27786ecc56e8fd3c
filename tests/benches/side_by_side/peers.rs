//! The peers Interlock is measured against, each started from a config of
//! its own in a temporary directory and stopped on drop: an nginx origin,
//! haproxy and nginx as HTTP proxies, pgbouncer in session mode.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A process stopped (and its directory removed) on drop.
pub struct Proc {
    child: Child,
    dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master takes its workers down with it (a
        // SIGKILL would leave them running).
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = interlock_tests::wait_for(5, || self.child.try_wait().ok().flatten());
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(interlock_tests::unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let up = interlock_tests::wait_for(10, || std::net::TcpStream::connect(addr).ok());
    assert!(up.is_some(), "{what} did not start listening on {addr}");
}

fn spawn(mut cmd: Command, dir: PathBuf, addr: SocketAddr, what: &str) -> Proc {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e} (run `cargo xtask bench`, which installs it)"));
    wait_listening(addr, what);
    Proc { child, dir, addr }
}

fn nginx(tag: &str, ip: &str, server: &str) -> Proc {
    let d = dir(tag);
    let location = if server.contains("upstream") {
        "location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }".to_owned()
    } else {
        format!("location / {{ root {}/www; }}", d.display())
    };
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/1k"), "x".repeat(1024)).unwrap();
    std::fs::write(d.join("www/64k"), "y".repeat(64 * 1024)).unwrap();
    nginx_with(d, ip, server, &location, false)
}

/// Starts nginx in `d` with `server`-level directives (in `http`) and one
/// server block listening on `ip` (with TLS when `tls`).
fn nginx_with(d: PathBuf, ip: &str, server: &str, location: &str, tls: bool) -> Proc {
    let port = free_port(ip);
    let ssl = if tls { " ssl" } else { "" };
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
         {server}\n server {{ listen {ip}:{port}{ssl}; {location} }}\n}}\n",
        d = d.display(),
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(d.join("nginx.conf")).arg("-p").arg(&d);
    let addr = format!("{ip}:{port}").parse().unwrap();
    spawn(cmd, d, addr, "nginx")
}

/// The origin: nginx serving `/1k` and `/64k`.
pub fn origin(ip: &str) -> Proc {
    nginx("bench-origin", ip, "")
}

/// Events in the origin's `/events` stream.
pub const SSE_EVENTS: usize = 20_000;

/// Files of a TLS peer: its certificate, key and the CA that signed it.
pub struct Pki {
    /// CA certificate (PEM file), the only trust anchor the others get.
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a certificate for `ip` (as an IP address SAN) in `dir`.
pub fn pki(dir: &Path, ip: &str) -> Pki {
    let (ca, cert, key) = interlock_tests::https::test_pki("bench CA", vec![ip.to_owned()]);
    let files = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, ca).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

/// The TLS origin: nginx serving `/1k`, `/64k` and `/events` (an SSE
/// stream of [`SSE_EVENTS`] events) over HTTPS, with its own CA.
pub fn tls_origin(ip: &str) -> (Proc, PathBuf) {
    let d = dir("bench-tls-origin");
    let files = pki(&d, ip);
    let mut events = String::new();
    for i in 0..SSE_EVENTS {
        events.push_str(&format!(
            "id: {i}\ndata: {{\"delta\":\"token {i} of the streamed answer\"}}\n\n"
        ));
    }
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/events"), events).unwrap();
    std::fs::write(d.join("www/1k"), "x".repeat(1024)).unwrap();
    std::fs::write(d.join("www/64k"), "y".repeat(64 * 1024)).unwrap();
    let server = format!(
        "ssl_certificate {}; ssl_certificate_key {}; types {{ text/event-stream events; }}",
        files.cert.display(),
        files.key.display()
    );
    let location = format!(
        "location /events {{ root {d}/www; default_type text/event-stream; }} location / {{ root {d}/www; }}",
        d = d.display()
    );
    let ca = files.ca.clone();
    (nginx_with(d, ip, &server, &location, true), ca)
}

/// nginx terminating TLS (its own CA), adding the credential header and
/// re-encrypting to the origin (verified against `origin_ca`).
pub fn nginx_tls_injector(ip: &str, origin: SocketAddr, origin_ca: &Path, header: &str) -> Proc {
    let d = dir("bench-nginx-tls");
    let files = pki(&d, ip);
    let server = format!(
        "ssl_certificate {}; ssl_certificate_key {}; upstream origin {{ server {origin}; keepalive 64; }}",
        files.cert.display(),
        files.key.display()
    );
    let location = format!(
        "location / {{ proxy_pass https://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_set_header Authorization \"{header}\"; proxy_buffering off; proxy_ssl_verify on; \
         proxy_ssl_trusted_certificate {}; proxy_ssl_name {}; proxy_ssl_session_reuse on; }}",
        origin_ca.display(),
        origin.ip()
    );
    nginx_with(d, ip, &server, &location, true)
}

/// mitmproxy (mitmdump) as a reverse proxy to the origin, with an addon
/// that sets the credential header; responses streamed, not buffered.
pub fn mitmproxy(ip: &str, origin: SocketAddr, origin_ca: &Path, header: &str) -> Proc {
    let d = dir("bench-mitmproxy");
    let port = free_port(ip);
    let addon = d.join("inject.py");
    std::fs::write(
        &addon,
        format!(
            "class Inject:\n    def request(self, flow):\n        flow.request.headers[\"authorization\"] = {header:?}\n\naddons = [Inject()]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("mitmdump");
    cmd.arg("--mode")
        .arg(format!("reverse:https://{origin}"))
        .args(["--listen-host", ip, "--listen-port", &port.to_string(), "-q"])
        .arg("-s")
        .arg(&addon)
        .arg("--set")
        .arg(format!("confdir={}", d.display()))
        .arg("--set")
        .arg(format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display()))
        .args(["--set", "stream_large_bodies=64k"]);
    let addr = format!("{ip}:{port}").parse().unwrap();
    spawn(cmd, d, addr, "mitmdump")
}

/// nginx as a reverse proxy (keep-alive upstream connections).
pub fn nginx_proxy(ip: &str, origin: SocketAddr) -> Proc {
    nginx(
        "bench-nginx",
        ip,
        &format!("upstream origin {{ server {origin}; keepalive 64; }}"),
    )
}

/// haproxy in HTTP mode.
pub fn haproxy(ip: &str, origin: SocketAddr) -> Proc {
    let d = dir("bench-haproxy");
    let port = free_port(ip);
    let conf = format!(
        "global\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\
         frontend f\n  bind {ip}:{port}\n  default_backend b\nbackend b\n  server o {origin}\n"
    );
    std::fs::write(d.join("haproxy.cfg"), conf).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(d.join("haproxy.cfg")).arg("-db");
    let addr = format!("{ip}:{port}").parse().unwrap();
    spawn(cmd, d, addr, "haproxy")
}

/// pgbouncer in session or transaction mode in front of `db` (database
/// `shop`, role `app`).
pub fn pgbouncer(ip: &str, db: SocketAddr, password: &str, mode: &str) -> Proc {
    let d = dir("bench-pgbouncer");
    let port = free_port(ip);
    let conf = format!(
        "[databases]\nshop = host={} port={} dbname=shop user=app password={password}\n\
         [pgbouncer]\nlisten_addr = {ip}\nlisten_port = {port}\nauth_type = any\npool_mode = {mode}\n\
         max_client_conn = 1000\ndefault_pool_size = 64\nunix_socket_dir =\nlogfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
        db.ip(),
        db.port(),
        d = d.display(),
    );
    std::fs::write(d.join("pgbouncer.ini"), conf).unwrap();
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&d).status();
    // pgbouncer refuses to run as root: run it as postgres itself (not
    // under runuser, which would outlive a kill).
    let uid: u32 = String::from_utf8_lossy(&Command::new("id").args(["-u", "postgres"]).output().unwrap().stdout)
        .trim()
        .parse()
        .expect("uid of postgres");
    let gid: u32 = String::from_utf8_lossy(&Command::new("id").args(["-g", "postgres"]).output().unwrap().stdout)
        .trim()
        .parse()
        .expect("gid of postgres");
    let mut cmd = Command::new("pgbouncer");
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    cmd.arg(d.join("pgbouncer.ini"));
    let addr = format!("{ip}:{port}").parse().unwrap();
    spawn(cmd, d, addr, "pgbouncer")
}

/// True when `path` exists (a peer binary is installed).
pub fn installed(path: &str) -> bool {
    Path::new(path).exists()
}
