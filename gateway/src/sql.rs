//! Classifying SQL for policy with a real parser (sqlparser, PostgreSQL
//! dialect): the statement kind, the tables read and written, whether UPDATE
//! and DELETE are bounded by WHERE, and how many statements a string holds.
//! Data-modifying statements nested in CTEs count: the most dangerous kind in
//! the string is the one reported.
use std::{collections::BTreeSet, ops::ControlFlow, sync::Arc};

use sqlparser::{
    ast::{
        visit_relations, visit_statements, CopyLegacyOption, CopyOption, CopySource, CopyTarget, FromTable, Statement,
        TableFactor, TableObject, TableWithJoins,
    },
    dialect::PostgreSqlDialect,
    parser::Parser,
};

use crate::types::{ActionKind, SqlFacts};

mod fallback;
mod lexer;
mod shape;

pub use lexer::{is_empty, redact_passwords};

/// The statement could not be parsed (agent input); policy denies it by default.
#[derive(Debug, thiserror::Error)]
#[error("agent sent SQL that does not parse: {0}")]
pub struct SqlError(pub String);

/// Kinds from least to most dangerous; a string's kind is its worst statement's.
const ORDER: [&str; 9] = [
    "select",
    "cursor",
    "session",
    "transaction",
    "other",
    "insert",
    "update",
    "delete",
    "ddl",
];

fn rank(kind: &str) -> usize {
    ORDER.iter().position(|k| *k == kind).unwrap_or(3)
}

fn table_of(t: &TableWithJoins) -> Option<String> {
    match &t.relation {
        TableFactor::Table { name, .. } => Some(name.to_string()),
        _ => None,
    }
}

/// Kind, written tables and WHERE-ness of one statement.
fn classify_one(stmt: &Statement) -> (&'static str, Vec<String>, bool) {
    match stmt {
        Statement::Query(_) => ("select", Vec::new(), true),
        Statement::Insert(insert) => {
            let written = match &insert.table {
                TableObject::TableName(name) => vec![name.to_string()],
                _ => Vec::new(),
            };
            ("insert", written, true)
        }
        Statement::Update(update) => (
            "update",
            table_of(&update.table).into_iter().collect(),
            update.selection.is_some(),
        ),
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let mut written: Vec<String> = delete.tables.iter().map(ToString::to_string).collect();
            written.extend(from.iter().filter_map(table_of));
            ("delete", written, delete.selection.is_some())
        }
        Statement::Drop { names, .. } => ("ddl", names.iter().map(ToString::to_string).collect(), true),
        Statement::Copy { source, to, target, .. } => {
            let to_client = matches!(target, CopyTarget::Stdin | CopyTarget::Stdout);
            match (to, source, to_client) {
                // COPY FROM STDIN loads rows into the table.
                (false, CopySource::Table { table_name, .. }, true) => ("insert", vec![table_name.to_string()], true),
                // COPY TO STDOUT reads; its tables are counted as read below.
                (true, _, true) => ("select", Vec::new(), true),
                // Server-side files and programs.
                _ => ("other", Vec::new(), true),
            }
        }
        other => {
            // Everything else by its leading keyword, which is stable across
            // parser versions (the AST has dozens of DDL variants).
            let text = other.to_string();
            let word = text.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            let kind = match word.as_str() {
                "CREATE" | "ALTER" | "DROP" | "GRANT" | "REVOKE" | "COMMENT" | "REINDEX" | "CLUSTER" | "VACUUM"
                | "RENAME" => "ddl",
                // TRUNCATE empties tables: an unbounded delete.
                "TRUNCATE" => return ("delete", relations(other), false),
                "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "END" | "ABORT" => "transaction",
                "SET" | "SHOW" | "RESET" | "DISCARD" => "session",
                // Reading or moving through a cursor declared before (its
                // query was judged then), as `MOVE` is (see `fallback`).
                "FETCH" | "CLOSE" | "MOVE" => "cursor",
                _ => "other",
            };
            // A schema change writes whatever tables it names.
            let written = if kind == "ddl" { relations(other) } else { Vec::new() };
            (kind, written, true)
        }
    }
}

/// Every table a statement names.
fn relations(stmt: &Statement) -> Vec<String> {
    let mut names = Vec::new();
    let _ = visit_relations(stmt, |name| {
        names.push(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    names
}

/// `on`/`off` as a COPY option value (`(freeze on, header off)`).
static COPY_BOOL: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"(?i)([(,]\s*[a-z_]+\s+)(on|off)(\s*[,)])").expect("static regex"));

/// `VACUUM`/`ANALYZE` with options and table names only, which the parser
/// does not read: a schema-level change (`ddl`) of the tables named.
static MAINTENANCE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)^\s*(vacuum|analyze)\b(\s*\([a-z_\s,]*\))?((?:\s+(?:full|freeze|verbose|analyze))*)\s*([a-z_][a-z0-9_.]*(?:\s*,\s*[a-z_][a-z0-9_.]*)*)?\s*;?\s*$")
        .expect("static regex")
});

fn maintenance(sql: &str) -> Option<(ActionKind, Extras)> {
    let m = MAINTENANCE.captures(sql)?;
    let tables: Vec<String> = m
        .get(4)
        .map(|t| t.as_str().split(',').map(|n| n.trim().to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let facts = SqlFacts {
        kind: "ddl".into(),
        tables_read: Vec::new(),
        tables_written: tables,
        has_where: true,
        statements: 1,
    };
    let action = into_action(facts, sql);
    Some((action, Extras::default()))
}

/// What a string does beyond its policy facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// It copies rows out to the client (`COPY ... TO STDOUT`); `Some(true)`
    /// when in binary format.
    pub copy_out: Option<bool>,
}

/// Tables a `COPY ... TO` reads directly.
fn copy_source(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            to: true,
            ..
        } => Some(table_name.to_string()),
        _ => None,
    }
}

fn copy_out(stmt: &Statement) -> Option<bool> {
    match stmt {
        Statement::Copy {
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } => Some(
            options
                .iter()
                .any(|o| matches!(o, CopyOption::Format(f) if f.value.eq_ignore_ascii_case("binary")))
                || legacy_options.iter().any(|o| matches!(o, CopyLegacyOption::Binary)),
        ),
        _ => None,
    }
}

/// Classifies a SQL string into the `sql_statement` action for policy.
pub fn classify(sql: &str) -> Result<ActionKind, SqlError> {
    classify_with_extras(sql).map(|(action, _)| action)
}

/// [`classify`], plus what the proxy needs to know besides.
pub fn classify_with_extras(sql: &str) -> Result<(ActionKind, Extras), SqlError> {
    // The same text again (an unnamed Parse per execution, as drivers send
    // before they prepare): no tokenising either.
    if let Some(facts) = shape::get_text(sql) {
        return Ok((into_action(Arc::unwrap_or_clone(facts), sql), Extras::default()));
    }
    // A new literal in a known statement: found without tokenising. Not
    // filed under its text: every new value would churn that table (cleared
    // when full) and push out the texts that do repeat.
    let sketch = shape::sketch(sql);
    if let Some(facts) = sketch.as_deref().and_then(shape::get_sketch) {
        return Ok((into_action(Arc::unwrap_or_clone(facts), sql), Extras::default()));
    }
    let shape = shape::of(sql);
    if let Some(facts) = shape.as_deref().and_then(shape::get) {
        shape::remember(sql, sketch, facts.clone());
        return Ok((into_action(Arc::unwrap_or_clone(facts), sql), Extras::default()));
    }
    parse(sql, shape, sketch)
}

/// [`classify`] by parsing, never from the facts kept by shape (for
/// benchmarks and comparisons).
pub fn classify_uncached(sql: &str) -> Result<ActionKind, SqlError> {
    parse(sql, None, None).map(|(action, _)| action)
}

/// Parses and classifies `sql`, keeping its facts under `keep` (its shape)
/// and `sketch`.
fn parse(sql: &str, mut keep: Option<String>, sketch: Option<String>) -> Result<(ActionKind, Extras), SqlError> {
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements,
        Err(first) => {
            // Only statements that parse as they are have their facts kept.
            keep = None;
            // PostgreSQL's COPY options take on/off as booleans (pgbench sends
            // `WITH (freeze on)`); the parser knows only true/false. Only the
            // option values change, so the statement's facts stay the same.
            let copy = sql
                .trim_start()
                .get(..4)
                .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
            let fixed = copy.then(|| {
                COPY_BOOL.replace_all(sql, |c: &regex::Captures<'_>| {
                    let value = if c[2].eq_ignore_ascii_case("on") {
                        "true"
                    } else {
                        "false"
                    };
                    format!("{}{value}{}", &c[1], &c[3])
                })
            });
            match fixed.map(|f| Parser::parse_sql(&PostgreSqlDialect {}, &f)) {
                Some(Ok(statements)) => statements,
                _ => {
                    return maintenance(sql)
                        .or_else(|| fallback::classify(sql).map(|action| (action, Extras::default())))
                        .or_else(|| fallback::several(sql, |one| parse(one, None, None).ok()))
                        .ok_or_else(|| SqlError(first.to_string()))
                }
            }
        }
    };
    if statements.is_empty() {
        return Err(SqlError("no statement".into()));
    }
    let mut kind = "select";
    let mut written = BTreeSet::new();
    let mut has_where = true;
    let mut extras = Extras::default();
    let mut read = BTreeSet::new();
    let _ = visit_statements(&statements, |stmt| {
        if let Some(binary) = copy_out(stmt) {
            extras.copy_out = Some(extras.copy_out.unwrap_or(false) || binary);
        }
        read.extend(copy_source(stmt));
        let (k, w, bounded) = classify_one(stmt);
        if rank(k) > rank(kind) {
            kind = k;
        }
        if matches!(k, "update" | "delete") {
            has_where &= bounded;
        }
        written.extend(w);
        ControlFlow::<()>::Continue(())
    });
    let _ = visit_relations(&statements, |name| {
        read.insert(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    let facts = SqlFacts {
        kind: kind.to_owned(),
        tables_read: read.difference(&written).cloned().collect(),
        tables_written: written.into_iter().collect(),
        has_where,
        statements: statements.len() as i64,
    };
    // The parser takes a string literal where a table name goes (`FROM
    // 'x'`; the server refuses it): then a literal's value is in the facts,
    // and texts of one shape do not share them (found by fuzzing).
    let from_literal = |t: &String| t.contains('\'') || t.contains('$');
    let literal_names = facts.tables_read.iter().chain(&facts.tables_written).any(from_literal);
    if let Some(shape) = keep.filter(|_| extras == Extras::default() && !literal_names) {
        let kept = shape::keep(shape, facts.clone());
        shape::remember(sql, sketch, kept);
    }
    Ok((into_action(facts, sql), extras))
}

/// The action policy judges; its text, which reviewers see, has passwords
/// redacted (see [`redact_passwords`]).
fn into_action(facts: SqlFacts, sql: &str) -> ActionKind {
    ActionKind::SqlStatement {
        facts,
        sql: redact_passwords(sql).unwrap_or_else(|| sql.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sql: &str) -> (String, Vec<String>, Vec<String>, bool, i64) {
        match classify(sql).unwrap() {
            ActionKind::SqlStatement { facts: f, .. } => {
                (f.kind, f.tables_read, f.tables_written, f.has_where, f.statements)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_text_the_parser_refuses_never_takes_a_parsed_twins_facts() {
        // Found by the long sql fuzz run: the shape ignored whitespace, and
        // `:` then a name parses where `:` then a newline does not.
        for (parses, refused) in [
            ("SELECT i &:x", "SELECT i &:\nx"),
            ("CREATE TABLE t (a varchar(10))", "CREATE TABLE t (a varchar(1.5))"),
            (
                "CREATE TABLE t (a varchar(10))",
                "CREATE TABLE t (a varchar(99999999999999999999))",
            ),
        ] {
            assert!(classify_uncached(parses).is_ok(), "{parses}");
            assert!(classify_uncached(refused).is_err(), "{refused}");
            for _ in 0..2 {
                assert!(classify(parses).is_ok(), "{parses}");
                assert!(classify(refused).is_err(), "{refused} took the facts of {parses}");
            }
        }
    }

    #[test]
    fn a_string_taken_for_a_table_name_is_not_kept_by_shape() {
        // Found by the long sql fuzz run: the facts name the literal.
        assert_eq!(facts("SELECT * FROM m, 'a'").1, vec!["'a'".to_owned(), "m".into()]);
        assert_eq!(
            facts("SELECT * FROM m, 'secrets'").1,
            vec!["'secrets'".to_owned(), "m".into()]
        );
    }

    #[test]
    fn facts_kept_by_shape_are_the_parsers_and_carry_each_text() {
        let variants = [
            "UPDATE accounts SET balance = balance - 10 WHERE id = 7",
            "UPDATE accounts SET balance = balance - 99 WHERE id = 1234",
            "UPDATE accounts SET balance = balance - 5 WHERE id = 'x'' OR 1=1 --'",
        ];
        let first = facts(variants[0]);
        assert_eq!(first, ("update".into(), vec![], vec!["accounts".into()], true, 1));
        for v in variants {
            assert_eq!(facts(v), first, "{v}");
            match classify(v).unwrap() {
                ActionKind::SqlStatement { sql, .. } => assert_eq!(sql, v),
                other => panic!("{other:?}"),
            }
        }
        // Same words, other structure: not served the kept facts.
        assert!(!facts("UPDATE accounts SET balance = balance - 10").3);
        assert_eq!(facts("SELECT 1; UPDATE accounts SET balance = 1 WHERE id = 7").4, 2);
        // COPY out is never kept (its extras matter); asked twice, still there.
        for _ in 0..2 {
            let (_, extras) = classify_with_extras("COPY accounts TO STDOUT").unwrap();
            assert_eq!(extras.copy_out, Some(false));
        }
    }

    #[test]
    fn statements_are_classified() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let cases = [
            (
                "SELECT * FROM orders o JOIN users u ON u.id = o.user_id",
                ("select", s(&["orders", "users"]), s(&[]), true, 1),
            ),
            (
                "INSERT INTO audit_log (x) SELECT x FROM staging",
                ("insert", s(&["staging"]), s(&["audit_log"]), true, 1),
            ),
            (
                "UPDATE users SET name = 'x' WHERE id = 1",
                ("update", s(&[]), s(&["users"]), true, 1),
            ),
            (
                "UPDATE users SET name = 'x'",
                ("update", s(&[]), s(&["users"]), false, 1),
            ),
            ("DELETE FROM sessions", ("delete", s(&[]), s(&["sessions"]), false, 1)),
            (
                "DELETE FROM sessions WHERE expires < now()",
                ("delete", s(&[]), s(&["sessions"]), true, 1),
            ),
            ("TRUNCATE sessions", ("delete", s(&[]), s(&["sessions"]), false, 1)),
            ("CREATE TABLE t (id int)", ("ddl", s(&[]), s(&["t"]), true, 1)),
            ("DROP TABLE users", ("ddl", s(&[]), s(&["users"]), true, 1)),
            ("BEGIN", ("transaction", s(&[]), s(&[]), true, 1)),
            ("FETCH 10 FROM c", ("cursor", s(&[]), s(&[]), true, 1)),
            // Several statements the parser cannot read whole, one by one.
            (
                "begin; prepare transaction '1-foo'",
                ("transaction", s(&[]), s(&[]), true, 2),
            ),
            (
                "MOVE 1 IN c; DELETE FROM users",
                ("delete", s(&[]), s(&["users"]), false, 2),
            ),
            ("DO $$ x $$; SELECT * FROM a", ("ddl", s(&["a"]), s(&[]), true, 2)),
            ("CLOSE c", ("cursor", s(&[]), s(&[]), true, 1)),
            ("SET search_path = public", ("session", s(&[]), s(&[]), true, 1)),
            ("SELECT 1; DROP TABLE users", ("ddl", s(&[]), s(&["users"]), true, 2)),
            ("COPY items FROM STDIN", ("insert", s(&[]), s(&["items"]), true, 1)),
            ("COPY items TO STDOUT", ("select", s(&["items"]), s(&[]), true, 1)),
            (
                "COPY (SELECT * FROM users) TO STDOUT",
                ("select", s(&["users"]), s(&[]), true, 1),
            ),
            ("COPY items FROM '/etc/passwd'", ("other", s(&[]), s(&[]), true, 1)),
            (
                "vacuum analyze pgbench_branches",
                ("ddl", s(&[]), s(&["pgbench_branches"]), true, 1),
            ),
            (
                "WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone",
                ("delete", s(&["gone"]), s(&["users"]), false, 1),
            ),
        ];
        for (sql, expected) in cases {
            let (kind, read, written, has_where, n) = facts(sql);
            let (ek, er, ew, eh, en) = expected;
            assert_eq!(kind, ek, "{sql}");
            assert_eq!(written, ew, "{sql}");
            assert_eq!(has_where, eh, "{sql}");
            assert_eq!(n, en, "{sql}");
            assert_eq!(read, er, "{sql}");
        }
    }

    #[test]
    fn copy_out_is_flagged_with_its_format() {
        let extras = |sql: &str| classify_with_extras(sql).unwrap().1.copy_out;
        assert_eq!(extras("COPY items TO STDOUT"), Some(false));
        assert_eq!(extras("COPY items TO STDOUT WITH (FORMAT binary)"), Some(true));
        assert_eq!(extras("COPY items FROM STDIN"), None);
        assert_eq!(extras("SELECT 1"), None);
        assert_eq!(
            facts("copy pgbench_accounts from stdin with (freeze on)").0,
            "insert",
            "pgbench's COPY options"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(classify("SELEKT * FRUM x").is_err());
        assert!(classify("").is_err());
    }
}
