//! PostgreSQL clients reach a real server through the gateway. (Until the
//! PostgreSQL gateway exists, the session is relayed as raw TCP.)
use interlock_tests::{
    postgres::{PgServer, SUPERUSER_PASSWORD},
    unique, Client, Gateway, GatewayOptions, TestCgroup,
};

#[test]
fn psql_reaches_a_real_server_through_the_gateway() {
    let cg = TestCgroup::new(&unique("psql"));
    let pg = PgServer::start("127.0.0.12");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    let mut cmd = std::process::Command::new("psql");
    cmd.args([
        "-h",
        &pg.addr.ip().to_string(),
        "-p",
        &pg.addr.port().to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tAc",
        "SELECT 40 + 2",
    ])
    .env("PGPASSWORD", SUPERUSER_PASSWORD)
    .env("PGCONNECT_TIMEOUT", "10")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let r = Client::new(&cg).run_cmd(cmd);
    assert!(r.success, "psql failed: {}\n{}", r.stderr, pg.log());
    assert_eq!(r.stdout.trim(), "42");
    let ev = gw.events().for_dst_pid(&pg.addr.to_string(), r.pid);
    assert_eq!(ev["identity"]["comm"], "psql");
    assert_eq!(ev["outcome"]["kind"], "closed");
}
