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
    Some(ActionKind::SqlStatement {
        facts: SqlFacts {
            kind: kind.into(),
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            has_where: true,
            statements: 1,
        },
        sql: sql.to_owned(),
    })
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
