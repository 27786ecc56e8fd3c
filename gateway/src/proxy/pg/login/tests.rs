//! The login on bytes alone: a fake server on an in-memory pipe plays each
//! authentication the gateway speaks, and the ways a server can go wrong.
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::md5_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{authenticate, LoginError, LoginSpec};
use crate::{
    config::{CredentialSpec, UpstreamTls},
    credentials::Credential,
    proxy::pg::wire::{self, ErrorFields, WireError},
    types::OrigDst,
};

const PASSWORD: &str = "s3cret-pw";

/// The password file, written once for all the tests (they run at once).
fn password_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("interlock-login-test-{}", std::process::id()));
        std::fs::write(&path, PASSWORD).unwrap();
        path
    })
    .clone()
}

fn credential() -> Arc<Credential> {
    let path = password_file();
    Arc::new(Credential::new(&CredentialSpec {
        header: "authorization".into(),
        scheme: None,
        env: None,
        file: Some(path),
        command: None,
        oauth2: None,
        refresh: std::time::Duration::from_secs(300),
    }))
}

fn spec(password: Option<Arc<Credential>>) -> LoginSpec<'static> {
    LoginSpec {
        addr: OrigDst("127.0.0.1:5432".parse().unwrap()),
        tls_name: "db".into(),
        tls: UpstreamTls::Disable,
        ca_file: None,
        user: "app",
        database: "shop",
        params: &[],
        password,
    }
}

fn auth(code: i32, extra: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    wire::message(&mut out, b'R', |b| {
        b.put_i32(code);
        b.put_slice(extra);
    });
    out
}

fn ready_greeting() -> BytesMut {
    let mut out = auth(0, &[]);
    wire::message(&mut out, b'S', |b| {
        wire::put_cstr(b, b"server_version");
        wire::put_cstr(b, b"15.0");
    });
    wire::message(&mut out, b'K', |b| {
        b.put_i32(4242);
        b.put_i32(-7);
    });
    wire::ready_for_query(&mut out, b'I');
    out
}

/// Reads the startup message and checks who logs in where.
async fn startup(server: &mut DuplexStream) {
    let len = server.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    server.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..4], &(3i32 << 16).to_be_bytes());
    let text = String::from_utf8_lossy(&body[4..]);
    assert!(
        text.contains("user\0app\0") && text.contains("database\0shop\0"),
        "{text:?}"
    );
}

/// Reads one tagged message from the client.
async fn client_message(server: &mut DuplexStream) -> (u8, Vec<u8>) {
    let tag = server.read_u8().await.unwrap();
    let len = server.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    server.read_exact(&mut body).await.unwrap();
    (tag, body)
}

/// Runs the login against `server`, which plays its part.
async fn login_against<F, Fut>(password: Option<Arc<Credential>>, server: F) -> Result<super::Upstream, LoginError>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, far) = tokio::io::duplex(1 << 16);
    let played = tokio::spawn(server(far));
    let spec = spec(password);
    let result = authenticate(Box::new(client), false, &spec).await;
    played.await.unwrap();
    result
}

#[tokio::test]
async fn md5_login_sends_the_hash_and_keeps_the_greeting_and_key() {
    let up = login_against(Some(credential()), |mut server| async move {
        startup(&mut server).await;
        server.write_all(&auth(5, b"salt")).await.unwrap();
        let (tag, body) = client_message(&mut server).await;
        assert_eq!(tag, b'p');
        let expected = md5_hash(b"app", PASSWORD.as_bytes(), *b"salt");
        assert_eq!(&body[..body.len() - 1], expected.as_bytes());
        server.write_all(&ready_greeting()).await.unwrap();
    })
    .await
    .unwrap();
    assert_eq!(up.key, (4242, -7));
    assert_eq!(up.greeting.len(), 1);
    assert!(!up.tls && up.buf.is_empty());
}

#[tokio::test]
async fn cleartext_login_sends_the_held_password() {
    let up = login_against(Some(credential()), |mut server| async move {
        startup(&mut server).await;
        server.write_all(&auth(3, &[])).await.unwrap();
        let (tag, body) = client_message(&mut server).await;
        assert_eq!((tag, &body[..]), (b'p', format!("{PASSWORD}\0").as_bytes()));
        server.write_all(&ready_greeting()).await.unwrap();
    })
    .await;
    assert!(up.is_ok());
}

#[tokio::test]
async fn a_refused_login_names_the_servers_sqlstate() {
    let e = login_against(Some(credential()), |mut server| async move {
        startup(&mut server).await;
        let refusal = ErrorFields::fatal("28P01", "password authentication failed for user \"app\"");
        server.write_all(&refusal.to_bytes()).await.unwrap();
    })
    .await
    .err()
    .expect("refused login succeeded");
    match e {
        LoginError::Rejected { code, message } => {
            assert_eq!(code, "28P01");
            assert!(message.contains("password authentication failed"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_password_asked_of_a_target_without_one_is_the_gateways_error() {
    let e = login_against(None, |mut server| async move {
        startup(&mut server).await;
        server.write_all(&auth(3, &[])).await.unwrap();
    })
    .await
    .err()
    .expect("login without a password succeeded");
    assert!(matches!(e, LoginError::Credential(_)), "{e}");
    assert_eq!(e.side(), crate::types::Side::Gateway);
}

#[tokio::test]
async fn methods_the_gateway_does_not_speak_are_named() {
    // GSSAPI, and SASL without SCRAM-SHA-256.
    for (code, extra) in [(7, &b""[..]), (10, &b"SCRAM-SHA-1\0\0"[..])] {
        let e = login_against(Some(credential()), move |mut server| async move {
            startup(&mut server).await;
            server.write_all(&auth(code, extra)).await.unwrap();
        })
        .await
        .err()
        .expect("unsupported method accepted");
        assert!(matches!(e, LoginError::Method(_)), "{e}");
    }
}

#[tokio::test]
async fn a_server_breaking_the_protocol_ends_the_login_as_its_fault() {
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        // SASL continue with no SASL started.
        ("sasl continue first", auth(11, b"r=abc,s=c2FsdA==,i=4096").to_vec()),
        // A result row during the login.
        ("row", {
            let mut b = BytesMut::new();
            wire::message(&mut b, b'D', |b| b.put_i16(0));
            b.to_vec()
        }),
        // A length below its own four bytes.
        ("bad length", vec![b'R', 0, 0, 0, 1]),
        // The connection closing half way.
        ("closed", auth(5, b"sa").to_vec()[..7].to_vec()),
    ];
    for (what, bytes) in hostile {
        let e = login_against(Some(credential()), move |mut server| async move {
            startup(&mut server).await;
            let _ = server.write_all(&bytes).await;
            drop(server);
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            matches!(e, LoginError::Wire(WireError::Malformed { .. } | WireError::Io { .. })),
            "{what}: {e}"
        );
        assert_eq!(e.side(), crate::types::Side::Upstream, "{what}");
    }
}
