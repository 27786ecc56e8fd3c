//! The target and the action of a request, as policies see them.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a connection is known to speak, as policies see it in
/// `resource.protocol`: `tcp` (nothing recognised; bytes relayed), `tls`
/// (a ClientHello, judged by its name before any request is seen), `http`
/// or `https` (requests inspected one by one), `postgres` (statements
/// inspected one by one), `dns` (questions to the gateway's resolver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// Raw TCP.
    Tcp,
    /// TLS not (yet) terminated.
    Tls,
    /// Plaintext HTTP requests.
    Http,
    /// HTTP requests inside TLS the gateway terminated.
    Https,
    /// PostgreSQL statements.
    Postgres,
    /// DNS questions to the gateway's resolver.
    Dns,
}

impl Wire {
    /// As policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Http => "http",
            Self::Https => "https",
            Self::Postgres => "postgres",
            Self::Dns => "dns",
        }
    }
}

/// The destination as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetRef {
    /// Configured target name, or `ip:port` for an undeclared destination.
    pub name: String,
    /// Destination address.
    pub ip: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Host name, when known (SNI or Host header); empty otherwise.
    pub host: String,
    /// What the connection is known to speak.
    pub protocol: Wire,
}

/// What the agent is trying to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionKind {
    /// Open a connection.
    Connect,
    /// Send an HTTP request.
    HttpRequest {
        /// Method.
        method: String,
        /// Path (without the query).
        path: String,
        /// `model` from the JSON body, for LLM targets (empty otherwise).
        #[serde(default)]
        model: String,
        /// Body size in bytes when known (Content-Length or buffered), else -1.
        #[serde(default = "unknown_size")]
        body_size: i64,
    },
    /// Run a SQL statement.
    SqlStatement {
        /// What it does (serialised inline, beside `sql`).
        #[serde(flatten)]
        facts: SqlFacts,
        /// The statement text.
        sql: String,
    },
    /// Resolve a name through the gateway's resolver.
    DnsQuery {
        /// What is asked about, what it names and what the guards found.
        #[serde(flatten)]
        facts: DnsFacts,
    },
}

/// What policies know of one DNS question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsFacts {
    /// The name asked, lower case, without the final dot.
    pub name: String,
    /// The record type (`A`, `AAAA`, `TXT`, ... or `TYPE65280`).
    pub qtype: String,
    /// The declared target one of whose `hosts` the name is ("" if none).
    pub target: String,
    /// Whether policy lets this agent connect to that target.
    pub reachable: bool,
    /// Whether the name is on the operator's list (`[dns] names`).
    pub listed: bool,
    /// The exfiltration guard the query is over (`name_length`,
    /// `label_length`, `label_entropy`, `names_per_domain`), or "".
    pub guard: String,
}

/// What policies know of a SQL string besides its text; the same for every
/// text of one shape (see `sql::shape`), so decisions and classifications
/// are cached by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SqlFacts {
    /// select, insert, update, delete, ddl, other (`unparsed` when the
    /// parser could not read it).
    pub kind: String,
    /// Tables read.
    pub tables_read: Vec<String>,
    /// Tables written.
    pub tables_written: Vec<String>,
    /// UPDATE/DELETE has a WHERE.
    pub has_where: bool,
    /// Statements in the string.
    pub statements: i64,
}

fn unknown_size() -> i64 {
    -1
}

impl TargetRef {
    /// The same target, as a connection known to speak `wire` sees it.
    pub fn speaking(&self, wire: Wire) -> Self {
        Self {
            protocol: wire,
            ..self.clone()
        }
    }
}

impl ActionKind {
    /// An HTTP request with no body facts (model unknown, size unknown).
    pub fn http(method: &str, path: &str) -> Self {
        Self::HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            model: String::new(),
            body_size: -1,
        }
    }

    /// The Cedar action id.
    pub fn cedar_name(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::HttpRequest { .. } => "http_request",
            Self::SqlStatement { .. } => "sql_statement",
            Self::DnsQuery { .. } => "dns_query",
        }
    }
}
