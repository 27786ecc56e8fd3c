//! Statement boundaries and leading words of a SQL string, by PostgreSQL's
//! own lexical rules: `--` and nested `/* */` comments, `'...'` strings
//! (`''` inside; backslash escapes only in `E'...'`), `"..."` identifiers,
//! `$tag$...$tag$` bodies, and `$` inside identifiers (`a$b$` is one name,
//! not the start of a dollar quote). Used where the parser gives up: to
//! tell an empty query from a real one, and to make sure a statement
//! classified by its leading keywords is the only one in its string.
//!
//! Where this lexer and the server could disagree, it errs towards seeing
//! more code: a plain string ends at its first lone quote, as with
//! `standard_conforming_strings = on` (with it off the server's string runs
//! further, so text this lexer reads as code the server reads as a
//! string, never the other way round), and anything it cannot close (an
//! open comment, string or dollar quote) makes it give no answer.

/// One statement of a string: its leading words, upper-cased (at most
/// [`WORDS`] of them, up to the first token that is not a bare word), and
/// where it is in the string (from its first token to the end of its last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statement {
    /// The leading keywords, upper-cased.
    pub words: Vec<String>,
    /// Its bytes in the string.
    pub span: std::ops::Range<usize>,
}

/// How many leading words are kept.
pub const WORDS: usize = 6;

/// The statements of `sql` (those with any token in them), or `None` when
/// a comment, string, identifier or dollar quote is left open.
pub fn statements(sql: &str) -> Option<Vec<Statement>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut current: Option<Statement> = None;
    // Whether the current statement's words are still being collected.
    let mut leading = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_comment_end(b, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment(b, i)?,
            b';' => {
                out.extend(current.take());
                leading = true;
                i += 1;
            }
            _ => {
                let st = current.get_or_insert_with(|| Statement {
                    words: Vec::new(),
                    span: i..i,
                });
                let (end, word) = token(b, i)?;
                match word {
                    Some(w) if leading && st.words.len() < WORDS => st.words.push(w.to_ascii_uppercase()),
                    _ => leading = false,
                }
                st.span.end = end;
                i = end;
            }
        }
    }
    out.extend(current);
    Some(out)
}

/// Whether `sql` holds no statement at all: only whitespace, comments and
/// semicolons (the server answers EmptyQueryResponse). Stops at the first
/// token, so it costs next to nothing on a real statement.
pub fn is_empty(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' | b';' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_comment_end(b, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match block_comment(b, i) {
                Some(end) => i = end,
                // An open comment: the server's syntax error, not an empty query.
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// `sql` with every string that follows the keyword `PASSWORD` (`CREATE
/// ROLE ... PASSWORD '...'`, `ALTER USER ... ENCRYPTED PASSWORD $$...$$`)
/// replaced by `'[REDACTED]'`, for the audit trail and for the people asked
/// to review it; `None` when there is nothing to redact. Text the lexer
/// cannot close after such a keyword is redacted to its end.
pub fn redact_passwords(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if !b.windows(8).any(|w| w.eq_ignore_ascii_case(b"password")) {
        return None;
    }
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut after_keyword = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_comment_end(b, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match block_comment(b, i) {
                Some(end) => i = end,
                None => break,
            },
            _ => {
                let Some((end, word)) = token(b, i) else {
                    if after_keyword {
                        spans.push(i..b.len());
                    }
                    break;
                };
                let string = word.is_none() && (b[i] == b'\'' || b[i] == b'$' || b[i].is_ascii_alphabetic());
                if after_keyword && string {
                    spans.push(i..end);
                }
                after_keyword = word.is_some_and(|w| w.eq_ignore_ascii_case("password"));
                i = end;
            }
        }
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for span in spans {
        out.push_str(&sql[at..span.start]);
        out.push_str("'[REDACTED]'");
        at = span.end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The end of the `--` comment at `i`: the server ends it at a carriage
/// return as well as a newline (`-- x\rSELECT 1` runs the SELECT).
fn line_comment_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&x| x == b'\n' || x == b'\r')
        .map_or(b.len(), |p| i + p + 1)
}

/// The end of the nested block comment opening at `i`.
fn block_comment(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// One token at `i` (not whitespace, a comment or `;`): where it ends, and
/// the word when it is a bare word.
fn token(b: &[u8], i: usize) -> Option<(usize, Option<&str>)> {
    let c = b[i];
    let next = b.get(i + 1).copied();
    // E'..', B'..', X'..', N'..' and U&'..' are strings with a prefix.
    if matches!(c, b'E' | b'e') && next == Some(b'\'') {
        return Some((quoted(b, i + 1, b'\'', true)?, None));
    }
    if matches!(c, b'B' | b'b' | b'X' | b'x' | b'N' | b'n') && next == Some(b'\'') {
        return Some((quoted(b, i + 1, b'\'', false)?, None));
    }
    if matches!(c, b'U' | b'u') && next == Some(b'&') && matches!(b.get(i + 2), Some(b'\'' | b'"')) {
        return Some((quoted(b, i + 2, b[i + 2], false)?, None));
    }
    match c {
        b'\'' | b'"' => Some((quoted(b, i, c, false)?, None)),
        b'$' => match dollar_tag(b, i) {
            Some(tag_end) => {
                let tag = &b[i..tag_end];
                let body = b[tag_end..].windows(tag.len()).position(|w| w == tag)?;
                Some((tag_end + body + tag.len(), None))
            }
            // `$1`: a parameter.
            None => Some((
                i + 1 + b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count(),
                None,
            )),
        },
        c if ident_start(c) => {
            let end = i + b[i..].iter().take_while(|&&x| ident_cont(x)).count();
            // Bytes of one identifier: valid UTF-8 as the input was, cut at ASCII.
            Some((end, std::str::from_utf8(&b[i..end]).ok()))
        }
        // Anything else is one byte of punctuation, an operator or a number.
        _ => Some((i + 1, None)),
    }
}

/// The end of a quoted token opening at `i` with `quote`; a doubled quote
/// stays inside, and with `escapes` so does a backslash and what follows.
fn quoted(b: &[u8], i: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if escapes => j += 2,
            x if x == quote => {
                if b.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return Some(j + 1);
                }
            }
            _ => j += 1,
        }
    }
    None
}

/// The end of the `$tag$` opening at `i`, when it is one (the tag is an
/// identifier without `$`, or nothing).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|&c| ident_start(c)) {
        j += 1;
        while b.get(j).is_some_and(|&c| ident_start(c) || c.is_ascii_digit()) {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Option<Vec<Vec<String>>> {
        statements(sql).map(|v| v.into_iter().map(|s| s.words).collect())
    }

    fn w(list: &[&[&str]]) -> Option<Vec<Vec<String>>> {
        Some(
            list.iter()
                .map(|s| s.iter().map(|x| (*x).to_owned()).collect())
                .collect(),
        )
    }

    #[test]
    fn empty_queries_are_whitespace_comments_and_semicolons() {
        for sql in [
            "",
            " ",
            ";",
            " ; ;\n",
            "-- note",
            "/* a /* nested */ comment */",
            "/**/;--x\n;",
        ] {
            assert!(is_empty(sql), "{sql:?}");
        }
        for sql in ["SELECT 1", "/* c */ x", "/* open", "'", ";;x", "-- c\rSELECT 1"] {
            assert!(!is_empty(sql), "{sql:?}");
        }
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(words("MOVE 1 IN c;"), w(&[&["MOVE"]]));
        assert_eq!(words("begin; drop table t"), w(&[&["BEGIN"], &["DROP", "TABLE", "T"]]));
        assert_eq!(words("SELECT ';' ; x"), w(&[&["SELECT"], &["X"]]));
        assert_eq!(words("SELECT \"a;b\""), w(&[&["SELECT"]]));
        assert_eq!(words("SELECT E'\\';' ; y"), w(&[&["SELECT"], &["Y"]]));
        assert_eq!(words("DO $$ begin; end $$"), w(&[&["DO"]]));
        assert_eq!(words("DO $f$ a $$ ; $$ b $f$; z"), w(&[&["DO"], &["Z"]]));
        assert_eq!(words("/* ; /* ; */ ; */ a -- ;\n"), w(&[&["A"]]));
        assert_eq!(words("-- x\rDROP TABLE t"), w(&[&["DROP", "TABLE", "T"]]));
        assert_eq!(words("SELECT U&'d\\0061t;a'"), w(&[&["SELECT"]]));
    }

    #[test]
    fn a_dollar_inside_a_name_opens_no_quote() {
        // The server reads `a$b$` as one identifier, then `;` ends the
        // statement; reading `$b$` as a quote would hide the second one.
        assert_eq!(
            words("SELECT a$b$; DROP TABLE t; SELECT $b$ x $b$"),
            w(&[&["SELECT", "A$B$"], &["DROP", "TABLE", "T"], &["SELECT"]])
        );
        assert_eq!(words("SELECT $1; x"), w(&[&["SELECT"], &["X"]]));
    }

    #[test]
    fn a_plain_string_ends_at_its_first_lone_quote() {
        // With standard_conforming_strings off the server would read on to
        // the last quote; here the `;` is code, so two statements are seen
        // (the string holds no hidden statement either way).
        assert_eq!(
            words("SELECT 'a\\'; DROP TABLE t; --'"),
            w(&[&["SELECT"], &["DROP", "TABLE", "T"]])
        );
    }

    #[test]
    fn spans_cover_each_statement_from_its_first_token_to_its_last() {
        let sql = " BEGIN ; /* c */ prepare transaction 'a;b' ;";
        let spans: Vec<&str> = statements(sql).unwrap().iter().map(|s| &sql[s.span.clone()]).collect();
        assert_eq!(spans, ["BEGIN", "prepare transaction 'a;b'"]);
    }

    #[test]
    fn passwords_are_redacted_whatever_their_quoting() {
        for (sql, want) in [
            (
                "CREATE USER bob PASSWORD 'hunter2'",
                "CREATE USER bob PASSWORD '[REDACTED]'",
            ),
            (
                "alter role bob with encrypted password E'a\\'b' valid until 'x'",
                "alter role bob with encrypted password '[REDACTED]' valid until 'x'",
            ),
            (
                "ALTER USER bob PASSWORD $p$s'ec$p$",
                "ALTER USER bob PASSWORD '[REDACTED]'",
            ),
            (
                "CREATE ROLE a PASSWORD /* c */ 'x'; CREATE ROLE b PASSWORD 'y'",
                "CREATE ROLE a PASSWORD /* c */ '[REDACTED]'; CREATE ROLE b PASSWORD '[REDACTED]'",
            ),
            ("ALTER USER bob PASSWORD 'open", "ALTER USER bob PASSWORD '[REDACTED]'"),
        ] {
            assert_eq!(redact_passwords(sql).as_deref(), Some(want), "{sql}");
        }
        // NULL is no secret; a column named password is not a keyword before a string.
        assert_eq!(redact_passwords("ALTER ROLE bob PASSWORD NULL"), None);
        assert_eq!(redact_passwords("SELECT password FROM users"), None);
        assert_eq!(redact_passwords("SELECT 1"), None);
    }

    #[test]
    fn anything_left_open_gives_no_answer() {
        for sql in ["SELECT 'x", "SELECT \"x", "DO $$ x", "/* x", "/* /* */", "SELECT E'\\'"] {
            assert_eq!(statements(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn leading_words_stop_at_the_first_other_token() {
        assert_eq!(
            words("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"),
            w(&[&["SET", "TRANSACTION", "ISOLATION", "LEVEL", "SERIALIZABLE"]])
        );
        assert_eq!(
            words("CREATE USER bob PASSWORD 'x'"),
            w(&[&["CREATE", "USER", "BOB", "PASSWORD"]])
        );
    }
}
