//! Statements that differ only in their literal values have the same policy
//! facts: kind, tables, WHERE-ness and statement count never depend on a
//! number or a quoted string. Agents send the same few statements with new
//! values again and again (`... WHERE aid = 4711`), so the facts are kept by
//! the statement's *shape*: its tokens, from the parser's own tokenizer (so
//! the shape sees exactly what the parser sees), with every literal value
//! replaced by its kind. Tokenising is a fraction of parsing (~11 µs per
//! short statement). Only statements that parsed at the first try, are not
//! COPY, and need nothing beyond their facts are kept.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use sqlparser::{
    dialect::PostgreSqlDialect,
    tokenizer::{Token, Tokenizer},
};

/// Shapes kept at most; the table starts afresh when full (a workload's
/// statements come back at once).
const CAPACITY: usize = 4096;

/// Longest statement whose shape is kept (a long one is rarely repeated).
const LONGEST: usize = 4096;

/// The facts of one shape (everything of `ActionKind::SqlStatement` but the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) kind: String,
    pub(crate) tables_read: Vec<String>,
    pub(crate) tables_written: Vec<String>,
    pub(crate) has_where: bool,
    pub(crate) statements: i64,
}

type Table = Mutex<HashMap<String, Arc<Facts>>>;

/// Facts by shape.
fn shapes() -> &'static Table {
    static SHAPES: OnceLock<Table> = OnceLock::new();
    SHAPES.get_or_init(Table::default)
}

/// Facts by exact text (looked up without tokenising).
fn texts() -> &'static Table {
    static TEXTS: OnceLock<Table> = OnceLock::new();
    TEXTS.get_or_init(Table::default)
}

fn lookup(table: &Table, key: &str) -> Option<Arc<Facts>> {
    table.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
}

fn insert(table: &Table, key: String, facts: Arc<Facts>) {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    if table.len() >= CAPACITY {
        table.clear();
    }
    table.insert(key, facts);
}

/// A statement's shape, or `None` when it is not to be kept (too long,
/// COPY, or the tokenizer refuses it: the parser then says why).
pub(crate) fn of(sql: &str) -> Option<String> {
    if sql.len() > LONGEST {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut shape = String::with_capacity(sql.len() + 32);
    for token in &tokens {
        let text = match token {
            Token::Whitespace(_) => continue,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("copy") => return None,
            Token::Number(..) => "#n".to_owned(),
            Token::SingleQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_) => "#s".to_owned(),
            other => other.to_string(),
        };
        // Length-prefixed, so no two token sequences give one shape.
        shape.push_str(&text.len().to_string());
        shape.push(':');
        shape.push_str(&text);
    }
    Some(shape)
}

/// The facts kept for `shape`.
pub(crate) fn get(shape: &str) -> Option<Arc<Facts>> {
    lookup(shapes(), shape)
}

/// Keeps the facts of `shape`.
pub(crate) fn keep(shape: String, facts: Facts) -> Arc<Facts> {
    let facts = Arc::new(facts);
    insert(shapes(), shape, facts.clone());
    facts
}

/// The facts kept for this exact text.
pub(crate) fn get_text(sql: &str) -> Option<Arc<Facts>> {
    lookup(texts(), sql)
}

/// Keeps the facts of this exact text (whose shape has them).
pub(crate) fn keep_text(sql: &str, facts: Arc<Facts>) {
    if sql.len() <= LONGEST {
        insert(texts(), sql.to_owned(), facts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_share_a_shape_and_nothing_else_does() {
        let same = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
            "select  abalance from pgbench_accounts where aid=12 ;",
        ];
        // Keywords are compared as written: a different case is another shape (safe, just a miss).
        assert_ne!(of(same[0]), of(same[1]));
        assert_eq!(
            of("SELECT a FROM t WHERE b = 'x' AND c = 1"),
            of("SELECT a FROM t WHERE b = 'it''s; DROP TABLE t' AND c = 99.5")
        );
        assert_eq!(
            of("SELECT a FROM t WHERE b = $$x$$"),
            of("SELECT a FROM t WHERE b = 'y'")
        );
        let different = [
            "SELECT a FROM t WHERE b = 1",
            "SELECT a FROM u WHERE b = 1",
            "SELECT a FROM \"t\" WHERE b = 1",
            "SELECT a FROM t WHERE b = 1; DELETE FROM t",
            "DELETE FROM t WHERE b = 1",
            "DELETE FROM t",
            "SELECT a FROM t WHERE b = c",
            "SELECT a FROM t WHERE b = \"x\"",
            // Tokens that would run together without the length prefix.
            "SELECT ab FROM t",
            "SELECT a b FROM t",
        ];
        for (i, a) in different.iter().enumerate() {
            for b in &different[i + 1..] {
                assert_ne!(of(a), of(b), "{a} / {b}");
            }
        }
        assert!(of("COPY t TO STDOUT").is_none());
        assert!(of("copy t from stdin").is_none());
        assert!(of(&format!("SELECT '{}'", "x".repeat(LONGEST))).is_none());
        assert!(of("SELECT 'unterminated").is_none());
    }
}
