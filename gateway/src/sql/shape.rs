//! Statements that differ only in their literal values have the same policy
//! facts: kind, tables, WHERE-ness and statement count never depend on a
//! number or a quoted string. Agents send the same few statements with new
//! values again and again (`... WHERE aid = 4711`), so the facts are kept by
//! the statement's *shape*: its tokens, from the parser's own tokenizer (so
//! the shape sees exactly what the parser sees), with every literal value
//! replaced by its kind. Tokenising is a fraction of parsing (~11 µs per
//! short statement). Only statements that parsed at the first try, are not
//! COPY, and need nothing beyond their facts are kept.
//!
//! In front of the shape, a *sketch* ([`sketch`]): the text itself with its
//! numbers and quoted strings replaced, found in one pass over the bytes
//! (~20x cheaper than tokenising). It is made only for plain text, where a
//! literal's extent cannot be read two ways (no backslash, comment, dollar
//! quote, prefixed string or non-ASCII byte), so two texts with one sketch
//! differ only in literal values: they have one shape. A sketch only ever
//! leads to facts its shape had.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use sqlparser::{
    dialect::PostgreSqlDialect,
    tokenizer::{Token, Tokenizer},
};

use crate::types::SqlFacts as Facts;

/// Shapes kept at most; the table starts afresh when full (a workload's
/// statements come back at once).
const CAPACITY: usize = 4096;

/// Longest statement whose shape is kept (a long one is rarely repeated).
const LONGEST: usize = 4096;

type Table = Mutex<HashMap<String, Arc<Facts>>>;

/// Facts by shape.
fn shapes() -> &'static Table {
    static SHAPES: OnceLock<Table> = OnceLock::new();
    SHAPES.get_or_init(Table::default)
}

/// Facts by sketch.
fn sketches() -> &'static Table {
    static SKETCHES: OnceLock<Table> = OnceLock::new();
    SKETCHES.get_or_init(Table::default)
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
    let mut spaced = false;
    for token in &tokens {
        let text = match token {
            // Where whitespace is, not what it is: the parser reads some
            // tokens only when nothing separates them (`:name`), so texts
            // that differ there do not share facts (found by fuzzing:
            // `&:\n` took the facts of `&:x`).
            Token::Whitespace(_) if spaced => continue,
            Token::Whitespace(_) => {
                spaced = true;
                "#w".to_owned()
            }
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("copy") => return None,
            // An integer where the parser may need one (`varchar(10)`) is
            // not a decimal, nor one too large for 64 bits.
            Token::Number(n, false) if integer(n) => "#i".to_owned(),
            Token::Number(n, false) if !n.bytes().all(|b| b.is_ascii_digit()) => "#n".to_owned(),
            // Each kind of string apart: a place may take one and not another.
            Token::SingleQuotedString(_) => "#s".to_owned(),
            Token::EscapedStringLiteral(_) => "#se".to_owned(),
            Token::NationalStringLiteral(_) => "#sn".to_owned(),
            Token::UnicodeStringLiteral(_) => "#su".to_owned(),
            Token::HexStringLiteral(_) => "#sx".to_owned(),
            Token::DollarQuotedString(_) => "#s$".to_owned(),
            Token::SingleQuotedByteStringLiteral(_) => "#sb".to_owned(),
            other => other.to_string(),
        };
        if !matches!(token, Token::Whitespace(_)) {
            spaced = false;
        }
        // Length-prefixed, so no two token sequences give one shape.
        shape.push_str(&text.len().to_string());
        shape.push(':');
        shape.push_str(&text);
    }
    Some(shape)
}

/// Longest digit run that stands for any integer in a shape or sketch:
/// within 64 bits whatever its digits.
const INTEGER_DIGITS: usize = 18;

fn integer(n: &str) -> bool {
    n.len() <= INTEGER_DIGITS && n.bytes().all(|b| b.is_ascii_digit())
}

/// Stands for a replaced literal: not ASCII, so never in a sketched text.
const MARK: char = '\u{a7}';

/// A statement's sketch: its text with each number (a digit run that
/// neither continues nor runs into a word, `$n` included) and each quoted
/// string replaced by a mark;
/// `None` when the text is not plain enough to be read only one way (see
/// the module's doc), or too long.
pub(crate) fn sketch(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    if bytes.len() > LONGEST {
        return None;
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let prev = i.checked_sub(1).map(|p| bytes[p]);
        match b {
            b'\\' | b'`' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            // `$1` stays as it is; `$$`, `$tag$` (dollar quotes) are not plain.
            b'$' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            b'\'' => {
                // E'..', X'..', N'..', U&'..': prefixed strings are not plain.
                if prev.is_some_and(|p| word(p) || p == b'&' || p == b'\'') {
                    return None;
                }
                let j = closing(bytes, i)?;
                out.push(MARK);
                out.push('s');
                i = j + 1;
                continue;
            }
            b'"' => {
                // A quoted name, kept as it is.
                let j = closing(bytes, i)?;
                out.push_str(&sql[i..=j]);
                i = j + 1;
                continue;
            }
            b'0'..=b'9' if !prev.is_some_and(word) => {
                let start = i;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if bytes.get(i).is_some_and(|&c| word(c)) || i - start > INTEGER_DIGITS {
                    // Runs into a word (`0x1F`, `1_000`, `2abc`): how it
                    // tokenises may depend on the digits, so they stay; so
                    // do integers too long to be one in the shape.
                    out.push_str(&sql[start..i]);
                } else {
                    out.push(MARK);
                    out.push('n');
                }
                continue;
            }
            c if !plain(c) => return None,
            _ => out.push(b as char),
        }
        i += 1;
    }
    Some(out)
}

/// A printable ASCII byte or whitespace.
fn plain(b: u8) -> bool {
    b.is_ascii() && (!b.is_ascii_control() || b.is_ascii_whitespace())
}

/// Where the string or quoted name opened by the quote at `open` ends: a
/// doubled quote inside is the quote itself. `None` when it does not end, or
/// holds a backslash (in a string it ends the string or not, by
/// `standard_conforming_strings`) or a byte that is not plain.
fn closing(bytes: &[u8], open: usize) -> Option<usize> {
    let quote = bytes[open];
    let mut j = open + 1;
    loop {
        match *bytes.get(j)? {
            c if c == quote && bytes.get(j + 1) == Some(&quote) => j += 2,
            c if c == quote => return Some(j),
            b'\\' => return None,
            c if !plain(c) => return None,
            _ => j += 1,
        }
    }
}

/// The facts kept for `sketch`.
pub(crate) fn get_sketch(sketch: &str) -> Option<Arc<Facts>> {
    lookup(sketches(), sketch)
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

/// Files the facts of a statement (which its shape has) under its exact
/// text and, when it has one, its sketch.
pub(crate) fn remember(sql: &str, sketch: Option<String>, facts: Arc<Facts>) {
    if let Some(sketch) = sketch {
        insert(sketches(), sketch, facts.clone());
    }
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
            of("SELECT a FROM t WHERE b = 'x' AND c = 1.0"),
            of("SELECT a FROM t WHERE b = 'it''s; DROP TABLE t' AND c = 99.5")
        );
        let different = [
            // A kind of string, of number, or where whitespace is, matters
            // to the parser in some places: each is its own shape.
            "SELECT a FROM t WHERE b = $$x$$",
            "SELECT a FROM t WHERE b = 'y'",
            "SELECT a FROM t WHERE b = E'y'",
            "SELECT a FROM t WHERE b = 1.5",
            "SELECT a FROM t WHERE b = 99999999999999999999",
            "SELECT a FROM t WHERE b = 99999999999999999998",
            "SELECT a FROM t WHERE b = :x",
            "SELECT a FROM t WHERE b = :\nx",
            "SELECT a FROM t WHERE b=1",
        ];
        all_differ(&different, of);
        assert_eq!(
            of("SELECT a FROM t WHERE b = 1"),
            of("SELECT a FROM t WHERE b = 999999999999999999")
        );
        assert_eq!(of("SELECT a \n\t FROM t"), of("SELECT a /* c */ FROM t"));
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
        all_differ(&different, of);
        assert!(of("COPY t TO STDOUT").is_none());
        assert!(of("copy t from stdin").is_none());
        assert!(of(&format!("SELECT '{}'", "x".repeat(LONGEST))).is_none());
        assert!(of("SELECT 'unterminated").is_none());
    }

    /// Asserts that `f` tells every pair of `texts` apart.
    fn all_differ<T: PartialEq + std::fmt::Debug>(texts: &[&str], f: impl Fn(&str) -> T) {
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(f(a), f(b), "{a} / {b}");
            }
        }
    }

    #[test]
    fn one_sketch_means_one_shape_and_unplain_text_has_none() {
        let pairs = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12;",
            ),
            (
                "SELECT a FROM t WHERE b = 'x' AND c = 1.5",
                "SELECT a FROM t WHERE b = 'it''s; DROP TABLE t' AND c = 99.25",
            ),
            (
                "UPDATE t SET a = 'v' WHERE id = $1",
                "UPDATE t SET a = '' WHERE id = $1",
            ),
            (
                "SELECT \"we\"\"ird\" FROM t LIMIT 10",
                "SELECT \"we\"\"ird\" FROM t LIMIT 2000",
            ),
            ("SELECT 'a' 'b'", "SELECT '--' '/*'"),
            ("SELECT 1", "SELECT 999999999999999999"),
        ];
        for (a, b) in pairs {
            assert!(sketch(a).is_some(), "{a}");
            assert_eq!(sketch(a), sketch(b), "{a} / {b}");
            assert_eq!(of(a), of(b), "{a} / {b}: one sketch, two shapes");
        }
        let different = [
            "SELECT a FROM t1 WHERE b = 1",
            "SELECT a FROM t2 WHERE b = 1",
            "SELECT a FROM \"t1\" WHERE b = 1",
            "SELECT a FROM t1 WHERE b = $1",
            "SELECT a FROM t1 WHERE b = $2",
            "SELECT a FROM t1 WHERE b = 1; DELETE FROM t1",
            "SELECT a FROM t1 WHERE b = 0x1F",
            "SELECT a FROM t1 WHERE b = 5x1F",
            "SELECT a FROM t1 WHERE b = 1e5",
            "SELECT a FROM t1 WHERE b = 1e6",
            "SELECT a FROM t1 WHERE b = 1 # 2",
            "SELECT a FROM t1 WHERE b = 1 2 2",
            "SELECT a FROM t1 WHERE b = 'x'",
            "SELECT a FROM t1 WHERE b = x",
            "SELECT a FROM t1 WHERE b = 99999999999999999999",
            "SELECT a FROM t1 WHERE b = 99999999999999999998",
        ];
        all_differ(&different, sketch);
        for unplain in [
            "SELECT a FROM t WHERE b = E'x\\'y'",
            "SELECT a FROM t WHERE b = 'x\\'",
            "SELECT a FROM t WHERE b = U&'x'",
            "SELECT a FROM t WHERE b = X'1F'",
            "SELECT a FROM t WHERE b = $$x$$",
            "SELECT a FROM t WHERE b = $q$x$q$",
            "SELECT a FROM t -- WHERE b = 1",
            "SELECT a FROM t /* x */ WHERE b = 1",
            "SELECT a FROM t WHERE b = 'é'",
            "SELECT a FROM t WHERE b = 'unterminated",
            "SELECT a FROM \"unterminated",
            "SELECT a FROM t WHERE b = 1'x'",
        ] {
            assert_eq!(sketch(unplain), None, "{unplain}");
        }
        assert_eq!(sketch(&format!("SELECT '{}'", "x".repeat(LONGEST))), None);
    }
}
