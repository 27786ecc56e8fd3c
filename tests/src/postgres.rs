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
        Self::start_with(ip, false)
    }

    /// A cluster that takes TCP logins only over TLS, with md5 passwords for
    /// new roles; its certificate is for `ip`, from the CA in [`Self::ca_file`].
    pub fn start_tls_md5(ip: &str) -> Self {
        Self::start_with(ip, true)
    }

    /// The directory holding the cluster's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The CA of a TLS cluster's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_with(ip: &str, tls_md5: bool) -> Self {
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
        let mut conf = format!(
            // max_connections: the bench's poolers keep server connections
            // (two pgbouncers, Interlock's session pool) while 32 direct
            // clients run; 100 was not enough.
            "listen_addresses = '{ip}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nlog_connections = on\nmax_connections = 200\n",
            dir.display()
        );
        if tls_md5 {
            conf.push_str(&tls_files(ip, &dir, &data));
            conf.push_str("ssl = on\npassword_encryption = md5\n");
            let hba =
                "local all all scram-sha-256\nhostssl all all 127.0.0.0/8 md5\nhostnossl all all 127.0.0.0/8 reject\n";
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
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

    /// A `[[targets]]` entry whose upstream hop requires verified TLS.
    pub fn tls_target(&self, postgres: &[&str]) -> String {
        let mut lines = vec!["tls = \"require\""];
        lines.extend_from_slice(postgres);
        self.target(&lines).replace(
            "[targets.postgres]",
            &format!("ca_file = \"{}\"\n[targets.postgres]", self.ca_file().display()),
        )
    }

    /// Stops the server (fast shutdown); [`Self::start_again`] brings it back.
    pub fn stop(&self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// Starts a stopped server again.
    pub fn start_again(&self) {
        let mut start = as_postgres(&self.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "start"]);
        run(start, "pg_ctl start");
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// Writes a CA (in `dir`) and a server certificate for `ip` (in the data
/// directory, readable by `postgres` only); returns the config lines.
fn tls_files(ip: &str, dir: &Path, data: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let (ca, leaf, key) = crate::https::test_pki("test database CA", vec![ip.to_owned()]);
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    let (cert, key_file) = (data.join("server.crt"), data.join("server.key"));
    std::fs::write(&cert, leaf).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut chown = Command::new("chown");
    chown.arg("postgres:postgres").arg(&cert).arg(&key_file);
    run(chown, "chown");
    "ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_owned()
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

/// The password of the `app` role, which only the gateway holds.
pub const APP_PASSWORD: &str = "app-real-pw-7f3a9c";

impl PgServer {
    /// Runs SQL as the superuser, directly (not through any gateway).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", &self.addr.ip().to_string(), "-p", &self.addr.port().to_string()])
            .args(["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates the `app` role and its `shop` database: customers (with
    /// emails, SSNs and card numbers) and items.
    pub fn shop(&self) {
        self.psql("postgres", &format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"));
        self.psql("postgres", "CREATE DATABASE shop OWNER app");
        self.psql(
            "shop",
            "SET ROLE app;
             CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, note text, card_no bigint);
             INSERT INTO customers VALUES
               (1, 'Jane Doe', 'jane.doe@example.com', '123-45-6789', 'card 4111 1111 1111 1111 on file', 4111111111111111),
               (2, 'John Roe', 'john@example.org', '987-65-4321', 'no card', 42);
             CREATE TABLE items (id int, label text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10) g;",
        );
    }

    /// A `[[targets]]` entry for the `shop` database through the gateway,
    /// logging in as `app` with the password from a root-only file;
    /// `postgres` adds lines to its `[targets.postgres]` table.
    pub fn target(&self, postgres: &[&str]) -> String {
        use std::os::unix::fs::PermissionsExt;
        let secret = self.dir.join("shop-db.password");
        std::fs::write(&secret, APP_PASSWORD).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = if postgres.iter().any(|l| l.starts_with("tls ")) {
            ""
        } else {
            "tls = \"disable\"\n"
        };
        format!(
            "[[targets]]\nname = \"shop-db\"\ncidrs = [\"{}/32\"]\nports = \"{}\"\nprotocol = \"postgres\"\ncredential = {{ file = \"{}\" }}\n[targets.postgres]\nuser = \"app\"\n{tls}{}\n",
            self.addr.ip(),
            self.addr.port(),
            secret.display(),
            postgres.join("\n")
        )
    }

    /// A libpq connection string for `shop` as an agent would write it: the
    /// database's own address, and a password the gateway ignores.
    pub fn agent_dsn(&self) -> String {
        format!(
            "host={} port={} dbname=shop user=agent password=not-the-real-one connect_timeout=10",
            self.addr.ip(),
            self.addr.port()
        )
    }
}
