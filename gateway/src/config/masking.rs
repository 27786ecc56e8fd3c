//! The masking section: the operator's own detectors, and rules that pick
//! detectors, a style, and optionally the JSON fields they apply to.
use serde::{Deserialize, Serialize};

use crate::types::{Style, BUILTIN_NAMES};

/// `[masking]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Detectors of the operator's own.
    pub detectors: Vec<CustomDetector>,
    /// Named rules `@mask("...")` can refer to.
    pub rules: Vec<MaskRule>,
}

/// A detector from a regular expression.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Name (as findings report it).
    pub name: String,
    /// Regular expression.
    pub regex: String,
}

/// A masking rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// Name, used in `@mask("...")`.
    pub name: String,
    /// Detectors (built-in or custom).
    pub detectors: Vec<String>,
    /// How found values are replaced.
    #[serde(default)]
    pub style: Style,
    /// JSON field paths (`messages[].content`); empty means any string value.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Keep the values this rule masks in the audit trail, encrypted with
    /// the gateway's sealing key (never in plaintext).
    #[serde(default)]
    pub keep_original: bool,
}

impl MaskingConfig {
    /// Checks names, patterns and paths; errors name the entry.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names: Vec<&str> = BUILTIN_NAMES.to_vec();
        for (n, d) in self.detectors.iter().enumerate() {
            let field = format!("masking.detectors[{n}]");
            if names.contains(&d.name.as_str()) {
                return Err((field, format!("detector name `{}` is already taken", d.name)));
            }
            regex::bytes::Regex::new(&d.regex).map_err(|e| (field.clone(), format!("regex: {e}")))?;
            names.push(&d.name);
        }
        let detectors = names.clone();
        for (n, r) in self.rules.iter().enumerate() {
            let field = format!("masking.rules[{n}]");
            if names.contains(&r.name.as_str()) {
                return Err((field, format!("rule name `{}` is already taken", r.name)));
            }
            if r.detectors.is_empty() {
                return Err((field, "a rule needs detectors".into()));
            }
            if let Some(bad) = r.detectors.iter().find(|d| !detectors.contains(&d.as_str())) {
                return Err((field, format!("unknown detector `{bad}`")));
            }
            for f in &r.fields {
                crate::types::FieldPath::parse(f).map_err(|e| (field.clone(), e))?;
            }
            names.push(&r.name);
        }
        Ok(())
    }
}
