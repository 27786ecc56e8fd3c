//! Many concurrent connections relay byte-exact (bounded in count and time).
use interlock_tests::{unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::json;

#[test]
fn concurrent_connections_relay_byte_exact() {
    let cg = TestCgroup::new(&unique("load"));
    let up = Upstream::start("127.0.0.2");
    let gw = Gateway::start(&cg, GatewayOptions::default());
    const COUNT: u64 = 64;
    let r = Client::new(&cg)
        .net(json!({"op": "many", "host": "127.0.0.2", "port": up.addr.port(), "count": COUNT, "size": 512 * 1024}));
    let out = r.json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["verified"], COUNT);
    let events = gw.events();
    interlock_tests::wait_for(10, || (events.connections().len() as u64 >= COUNT).then_some(()))
        .expect("not every connection produced an event");
    for ev in events.connections() {
        assert_eq!(ev["outcome"]["kind"], "closed", "{ev}");
        assert_eq!(ev["bytes_up"], 512 * 1024);
        assert_eq!(ev["bytes_down"], 512 * 1024);
    }
    assert_eq!(gw.status().unwrap()["connections"].as_array().unwrap().len(), 0);
}
