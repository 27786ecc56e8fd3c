//! Statements the parser cannot read that PostgreSQL clients send every
//! day, classified by their leading keywords. Only a string holding exactly
//! one statement (by [`lexer`](super::lexer), which follows the server's
//! quoting rules) is classified here: `BEGIN; DROP TABLE t` gets no kind
//! from its first word. What is not listed stays unparsed.
//!
//! | statement | kind |
//! |---|---|
//! | `MOVE` (server-side cursors) | `cursor` |
//! | `BEGIN`, `START TRANSACTION`, `SET TRANSACTION` with modes the parser lacks (`DEFERRABLE`) | `transaction` |
//! | `PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED` (two-phase commit) | `transaction` |
//! | `SET SESSION CHARACTERISTICS AS TRANSACTION ...` | `session` |
//! | `DO` (an anonymous code block: it can run anything) | `ddl` |
//! | `CREATE`/`ALTER`/`DROP` `ROLE`/`USER`/`GROUP` with options the parser lacks | `ddl` |
//!
//! A string of several statements is read one statement at a time when the
//! parser cannot read it whole (`begin; prepare transaction '1'`); it then
//! gets the worst kind among them, as a string the parser reads does.
//!
//! A code block and role management are `ddl`, the kind the parser gives
//! role statements it can read, so a rule written for schema changes
//! (the shipped `ddl-needs-review`) covers them too.
use super::lexer;
use crate::types::{ActionKind, SqlFacts};

/// The facts of `sql` by its leading keywords, when it is one statement of
/// a kind listed above.
pub fn classify(sql: &str) -> Option<ActionKind> {
    let statements = lexer::statements(sql)?;
    let [one] = statements.as_slice() else {
        return None;
    };
    let words: Vec<&str> = one.words.iter().map(String::as_str).collect();
    let kind = match words.as_slice() {
        ["MOVE", ..] => "cursor",
        ["BEGIN", ..] | ["START", "TRANSACTION", ..] | ["SET", "TRANSACTION", ..] => "transaction",
        // Two-phase commit.
        ["PREPARE", "TRANSACTION"] | ["COMMIT" | "ROLLBACK", "PREPARED"] => "transaction",
        ["SET", "SESSION", "CHARACTERISTICS", ..] => "session",
        ["DO", ..] => "ddl",
        ["CREATE" | "ALTER" | "DROP", "ROLE" | "USER" | "GROUP", ..] => "ddl",
        _ => return None,
    };
    let facts = SqlFacts {
        kind: kind.into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        has_where: true,
        statements: 1,
    };
    Some(super::into_action(facts, sql))
}

/// A string of several statements the parser cannot read as a whole, each
/// of which `one` can read alone (the parser, or the table above): the
/// string gets its worst statement's kind, every table any of them names,
/// and WHERE only if every UPDATE and DELETE has it. `None` when any one
/// cannot be read, or the string is one statement.
pub fn several(
    sql: &str,
    one: impl Fn(&str) -> Option<(ActionKind, super::Extras)>,
) -> Option<(ActionKind, super::Extras)> {
    let statements = lexer::statements(sql)?;
    if statements.len() < 2 {
        return None;
    }
    let mut all = SqlFacts {
        kind: "select".into(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        has_where: true,
        statements: 0,
    };
    let mut extras = super::Extras::default();
    for st in &statements {
        let (ActionKind::SqlStatement { facts, .. }, more) = one(&sql[st.span.clone()])? else {
            return None;
        };
        if super::rank(&facts.kind) > super::rank(&all.kind) {
            all.kind = facts.kind;
        }
        all.has_where &= facts.has_where;
        all.statements += facts.statements;
        all.tables_read.extend(facts.tables_read);
        all.tables_written.extend(facts.tables_written);
        if let Some(binary) = more.copy_out {
            extras.copy_out = Some(extras.copy_out.unwrap_or(false) || binary);
        }
    }
    all.tables_written.sort();
    all.tables_written.dedup();
    all.tables_read.sort();
    all.tables_read.dedup();
    all.tables_read.retain(|t| !all.tables_written.contains(t));
    Some((super::into_action(all, sql), extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Option<String> {
        match classify(sql)? {
            ActionKind::SqlStatement { facts, .. } => Some(facts.kind),
            _ => None,
        }
    }

    #[test]
    fn everyday_statements_get_their_kind() {
        for (sql, want) in [
            ("MOVE FORWARD 5 IN cur", "cursor"),
            ("move absolute -1 from \"Cur\";", "cursor"),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", "transaction"),
            ("START TRANSACTION READ ONLY, DEFERRABLE", "transaction"),
            (
                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
                "transaction",
            ),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION DEFERRABLE", "session"),
            ("PREPARE TRANSACTION '42_Z3RyaWQ=_YnF1YWw='", "transaction"),
            ("COMMIT PREPARED 'x'", "transaction"),
            ("rollback prepared 'x'", "transaction"),
            ("DO $$ BEGIN PERFORM 1; END $$", "ddl"),
            ("do language plpgsql 'begin null; end'", "ddl"),
            ("CREATE USER bob PASSWORD 'x'", "ddl"),
            ("ALTER ROLE bob WITH PASSWORD NULL", "ddl"),
            ("/* c */ DROP GROUP g", "ddl"),
        ] {
            assert_eq!(kind(sql).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn a_second_statement_or_an_unlisted_one_stays_unparsed() {
        for sql in [
            "BEGIN; DROP TABLE t",
            "MOVE 1 IN c; DELETE FROM t",
            "DO $$ x $$; DELETE FROM t",
            "SELEC 1",
            "BEGIN 'open",
            "",
            "CREATE TABLE t (",
            "SET search_path = x y",
            "PREPARE TRANSACTION x y",
        ] {
            assert_eq!(kind(sql), None, "{sql}");
        }
    }
}
