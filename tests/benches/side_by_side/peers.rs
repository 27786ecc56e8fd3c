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
    let port = free_port(ip);
    let location = if server.contains("upstream") {
        "location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }".to_owned()
    } else {
        format!("location / {{ root {}/www; }}", d.display())
    };
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
         {server}\n server {{ listen {ip}:{port}; {location} }}\n}}\n",
        d = d.display(),
    );
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/1k"), "x".repeat(1024)).unwrap();
    std::fs::write(d.join("www/64k"), "y".repeat(64 * 1024)).unwrap();
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
