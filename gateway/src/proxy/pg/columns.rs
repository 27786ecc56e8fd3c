//! Column rules: which result columns are masked, found by the table and
//! column each result column comes from (RowDescription carries the table's
//! oid and the column's number, so aliases do not hide a column), and how
//! a masked value is replaced. Value detectors from the masking engine run
//! on the other text values.
use std::{collections::HashMap, sync::Arc};

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::DataRowBody;

use super::wire::{self, WireError};
use crate::{
    config::{ColumnPattern, ColumnRule, ColumnStyle},
    masking::Masker,
    types::Side,
};

const TEXT_OID: u32 = 25;
/// Types whose text and binary forms are both plain UTF-8 text.
const TEXTUAL: [u32; 6] = [25, 1043, 1042, 19, 114, 705];
/// Numeric types: a detector hit keeps the digits' shape so the value still parses.
const NUMERIC: [u32; 4] = [20, 21, 23, 1700];
/// Types a computed column may keep when its statement touches masked
/// columns: counts, sums, flags and times carry no masked text.
const SAFE_COMPUTED: [u32; 11] = [16, 20, 21, 23, 26, 700, 701, 1082, 1114, 1184, 1700];
/// jsonb: its text format is JSON text.
const JSONB: u32 = 3802;
/// The first oid PostgreSQL gives to user objects.
const FIRST_USER_OID: u32 = 16_384;

/// The rules of one target, parsed.
#[derive(Debug, Clone, Default)]
pub struct ColumnRules(Vec<(ColumnPattern, ColumnStyle, Arc<str>)>);

impl ColumnRules {
    /// From validated config.
    pub fn new(rules: &[ColumnRule]) -> Self {
        Self(
            rules
                .iter()
                .filter_map(|r| Some((r.pattern().ok()?, r.style, Arc::from(r.column.as_str()))))
                .collect(),
        )
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The catalog query naming every column a rule may cover.
    pub fn lookup_sql(&self) -> String {
        let mut names: Vec<String> = self
            .0
            .iter()
            .map(|(p, _, _)| format!("'{}'", p.column.replace('\'', "''")))
            .collect();
        names.sort();
        names.dedup();
        format!(
            "SELECT c.oid::int8, a.attnum::int4, n.nspname, c.relname, a.attname, \
             (SELECT max(oid)::int8 FROM pg_catalog.pg_class) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attname IN ({})",
            names.join(", ")
        )
    }

    fn rule_for(&self, schema: Option<&str>, table: Option<&str>, column: &str) -> Option<(ColumnStyle, Arc<str>)> {
        self.0
            .iter()
            .find(|(p, _, _)| {
                p.column == column
                    && match (&p.table, table) {
                        (None, _) => true,
                        (Some(want), Some(t)) => want == t && p.schema.as_deref().is_none_or(|s| Some(s) == schema),
                        // Table unknown (created after the lookup): a rule
                        // that names the column masks it (fail closed).
                        (Some(_), None) => true,
                    }
            })
            .map(|(_, style, label)| (*style, label.clone()))
    }
}

/// The masked columns of one database, from the catalog at session start.
#[derive(Debug, Clone, Default)]
pub struct MaskedColumns {
    rules: ColumnRules,
    by_attr: HashMap<(u32, i16), (ColumnStyle, Arc<str>)>,
    /// Tables with masked columns, as `table` and `schema.table`.
    tables: std::collections::HashSet<String>,
    /// Highest relation oid when the catalog was read; newer tables are
    /// judged by column name alone.
    max_oid: u32,
}

impl MaskedColumns {
    /// From the lookup's rows: oid, attnum, schema, table, column, max oid.
    pub fn from_rows(rules: ColumnRules, rows: &[Vec<Option<String>>]) -> Result<Self, String> {
        let mut by_attr = HashMap::new();
        let mut tables: std::collections::HashSet<String> =
            rules.0.iter().filter_map(|(p, _, _)| p.table.clone()).collect();
        let mut max_oid = u32::MAX;
        for row in rows {
            let field = |i: usize| row.get(i).and_then(|v| v.as_deref()).unwrap_or_default();
            let oid: u32 = field(0).parse().map_err(|_| format!("bad oid `{}`", field(0)))?;
            let attnum: i16 = field(1).parse().map_err(|_| format!("bad attnum `{}`", field(1)))?;
            max_oid = field(5).parse().map_err(|_| format!("bad max oid `{}`", field(5)))?;
            if let Some(hit) = rules.rule_for(Some(field(2)), Some(field(3)), field(4)) {
                by_attr.insert((oid, attnum), hit);
                tables.insert(field(3).to_owned());
                tables.insert(format!("{}.{}", field(2), field(3)));
            }
        }
        Ok(Self {
            rules,
            by_attr,
            tables,
            max_oid,
        })
    }

    /// Whether a table named in SQL (`customers`, `public."Customers"`) has masked columns.
    pub fn covers(&self, name: &str) -> bool {
        let name = name.replace('"', "").to_ascii_lowercase();
        let last = name.rsplit('.').next().unwrap_or(&name);
        self.tables.contains(&name) || self.tables.contains(last)
    }

    /// No rules apply to this database.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn rule(&self, table_oid: u32, column: i16, name: &str) -> Option<(ColumnStyle, Arc<str>)> {
        if let Some(hit) = self.by_attr.get(&(table_oid, column)) {
            return Some(hit.clone());
        }
        if table_oid >= FIRST_USER_OID && table_oid > self.max_oid {
            return self.rules.rule_for(None, None, &name.to_ascii_lowercase());
        }
        None
    }
}

/// One result column, as masking sees it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column rule, if one covers it.
    pub rule: Option<(ColumnStyle, Arc<str>)>,
    /// The type the upstream sends.
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// The columns of one result.
#[derive(Debug, Clone, Default)]
pub struct Shape(pub Vec<Column>);

impl Shape {
    /// Reads a RowDescription and writes the one the agent gets: masked
    /// columns (except NULL style) turn into `text`, since their values no
    /// longer parse as the original type.
    /// With `computed`, the statement touches masked columns: a computed
    /// column (no table behind it) is masked whole unless its type cannot
    /// carry text (`upper(email)`, `row_to_json(c)` are; `count(*)` is not).
    pub fn describe(
        body: &[u8],
        masked: &MaskedColumns,
        computed: bool,
        encoding: super::encoding::ClientEncoding,
        out: &mut BytesMut,
    ) -> Result<Self, WireError> {
        // Read here rather than by postgres-protocol, which wants UTF-8
        // names: a column's name is in the session's client_encoding.
        let mut c = wire::Cursor::new(body, Side::Upstream);
        let count = c.i16()? as u16;
        let mut cols = Vec::new();
        let mut rewritten = BytesMut::new();
        for _ in 0..count {
            let name_bytes = c.cbytes()?;
            let (table_oid, column_id) = (c.i32()? as u32, c.i16()?);
            let (type_oid, type_size, type_modifier, format) = (c.i32()? as u32, c.i16()?, c.i32()?, c.i16()?);
            let name = encoding
                .decode(name_bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(name_bytes));
            let derived = computed && table_oid == 0 && !SAFE_COMPUTED.contains(&type_oid);
            let rule = if derived {
                Some((ColumnStyle::Full, Arc::from("computed from masked columns")))
            } else {
                masked.rule(table_oid, column_id, &name)
            };
            let as_text = matches!(rule, Some((style, _)) if style != ColumnStyle::Null);
            wire::put_cstr(&mut rewritten, name_bytes);
            rewritten.put_u32(table_oid);
            rewritten.put_i16(column_id);
            if as_text {
                rewritten.put_u32(TEXT_OID);
                rewritten.put_i16(-1);
                rewritten.put_i32(-1);
            } else {
                rewritten.put_u32(type_oid);
                rewritten.put_i16(type_size);
                rewritten.put_i32(type_modifier);
            }
            rewritten.put_i16(format);
            cols.push(Column { rule, type_oid, format });
        }
        c.end()?;
        wire::message(out, b'T', |b| {
            b.put_u16(cols.len() as u16);
            b.put_slice(&rewritten);
        });
        Ok(Self(cols))
    }

    /// True when no value of this result can change.
    pub fn passes(&self, detectors: Option<&Masker>) -> bool {
        detectors.is_none() && self.0.iter().all(|c| c.rule.is_none())
    }

    /// Writes the DataRow the agent gets; counts what was masked.
    pub fn mask_row(
        &self,
        row: &DataRowBody,
        detectors: Option<&Masker>,
        counts: &mut HashMap<String, u64>,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let bad = |e: std::io::Error| WireError::malformed(Side::Upstream, format!("DataRow: {e}"));
        let buffer = row.buffer();
        let mut ranges = row.ranges();
        let mut values: Vec<Option<std::borrow::Cow<'_, [u8]>>> = Vec::new();
        let mut i = 0;
        while let Some(range) = ranges.next().map_err(bad)? {
            let Some(range) = range else {
                values.push(None);
                i += 1;
                continue;
            };
            let value = &buffer[range];
            let col = self.0.get(i);
            i += 1;
            let masked = match col {
                Some(Column {
                    rule: Some((style, label)),
                    format,
                    type_oid,
                }) => {
                    *counts.entry(format!("column {label}")).or_default() += 1;
                    let textual = *format == 0 || TEXTUAL.contains(type_oid);
                    replace_column(value, *style, textual).map(std::borrow::Cow::Owned)
                }
                Some(col) => Some(detect(value, col, detectors, counts)),
                // More values than described columns: nothing is known about them.
                None => {
                    return Err(WireError::malformed(
                        Side::Upstream,
                        "DataRow has more values than columns",
                    ))
                }
            };
            values.push(masked);
        }
        wire::message(out, b'D', |b| {
            b.put_u16(values.len() as u16);
            for v in &values {
                match v {
                    None => b.put_i32(-1),
                    Some(v) => {
                        b.put_i32(v.len() as i32);
                        b.put_slice(v);
                    }
                }
            }
        });
        Ok(())
    }
}

/// Runs the detectors on a value of a type they can read.
fn detect<'a>(
    value: &'a [u8],
    col: &Column,
    detectors: Option<&Masker>,
    counts: &mut HashMap<String, u64>,
) -> std::borrow::Cow<'a, [u8]> {
    let Some(masker) = detectors else {
        return value.into();
    };
    // Text in either format, or jsonb and user types (domains, enums) in text format.
    let text_format_only = col.format == 0 && (col.type_oid == JSONB || col.type_oid >= FIRST_USER_OID);
    if TEXTUAL.contains(&col.type_oid) || text_format_only {
        let (out, found) = masker.mask(value);
        if found.is_empty() {
            return value.into();
        }
        for f in found {
            *counts.entry(format!("detector {}", f.detector)).or_default() += 1;
        }
        return out.into();
    }
    if NUMERIC.contains(&col.type_oid) && col.format == 0 {
        let spans = masker.spans(value, 0);
        if let Some((_, _, name)) = spans.first() {
            *counts.entry(format!("detector {name}")).or_default() += 1;
            // Digits become 0: the value keeps its shape and still parses.
            return value
                .iter()
                .map(|b| if b.is_ascii_digit() { b'0' } else { *b })
                .collect::<Vec<u8>>()
                .into();
        }
    }
    value.into()
}

/// A masked column's replacement (`None` is NULL). Binary values of
/// non-text types cannot be shown in part: they are replaced whole.
fn replace_column(value: &[u8], style: ColumnStyle, textual: bool) -> Option<Vec<u8>> {
    match style {
        ColumnStyle::Null => None,
        ColumnStyle::Full => Some(b"[REDACTED]".to_vec()),
        ColumnStyle::Partial if !textual => Some(b"[REDACTED]".to_vec()),
        ColumnStyle::Partial => Some(partial(&String::from_utf8_lossy(value)).into_bytes()),
    }
}

/// `jane@example.com` -> `j***@example.com`; others keep their last four
/// characters (none when shorter than eight).
pub fn partial(value: &str) -> String {
    if let Some((local, domain)) = value.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = value.chars().collect();
    let keep = if chars.len() >= 8 { 4 } else { 0 };
    let hidden = chars.len() - keep;
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < hidden && c.is_alphanumeric() { '*' } else { *c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_shape_not_content() {
        assert_eq!(partial("jane.doe@example.com"), "j***@example.com");
        assert_eq!(partial("4111-1111-1111-1234"), "****-****-****-1234");
        assert_eq!(partial("abc"), "***");
    }

    #[test]
    fn rules_match_table_schema_and_wildcards() {
        let rule = |c: &str| ColumnRule {
            column: c.into(),
            style: ColumnStyle::Full,
        };
        let rules = ColumnRules::new(&[rule("customers.email"), rule("*.ssn"), rule("hr.staff.salary")]);
        assert!(rules.rule_for(Some("public"), Some("customers"), "email").is_some());
        assert!(rules.rule_for(Some("public"), Some("orders"), "email").is_none());
        assert!(rules.rule_for(Some("x"), Some("anything"), "ssn").is_some());
        assert!(rules.rule_for(Some("hr"), Some("staff"), "salary").is_some());
        assert!(rules.rule_for(Some("public"), Some("staff"), "salary").is_none());
        assert!(rules.lookup_sql().contains("IN ('email', 'salary', 'ssn')"));
    }
}
