//! A real PostgreSQL server for tests: its own cluster in a temporary
//! directory, listening on one loopback address, password (SCRAM) login.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A running cluster; stopped and removed on drop.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

/// The superuser's password in test clusters.
pub const SUPERUSER_PASSWORD: &str = "pg-super-secret";

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (run `cargo xtask setup`)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn as_postgres(program: &Path) -> Command {
    // PostgreSQL refuses to run as root.
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    /// Creates and starts a cluster on `ip` (any free port).
    pub fn start(ip: &str) -> Self {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(crate::unique("pg"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(&dir);
        run(chown, "chown");
        let data = dir.join("data");
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "scram-sha-256", "--pwfile"])
            .arg(&pwfile);
        run(initdb, "initdb");
        let conf = format!(
            "listen_addresses = '{ip}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nlog_connections = on\n",
            dir.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).unwrap();
        all.push_str(&conf);
        std::fs::write(&conf_path, all).unwrap();
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-t", "30", "start"]);
        run(start, "pg_ctl start");
        Self {
            dir,
            bin,
            addr: format!("{ip}:{port}").parse().unwrap(),
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
