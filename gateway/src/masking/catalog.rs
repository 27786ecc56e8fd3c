//! What `@mask("...")` can name: the built-in detectors, the operator's own
//! detectors, and rules that pick detectors, a style, and optionally the JSON
//! fields they apply to. A plan is built per set of names and cached.
use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

use super::{Detector, Finding, MaskError, Masker, Style, BUILTIN_NAMES};
use crate::config::MaskingConfig;
use crate::types::{FieldPath, PathSegment as Segment};

/// How to mask one exchange: detectors for any value, and detectors for named fields.
#[derive(Debug, Clone, Default)]
pub struct MaskPlan {
    /// Applied to every string (and to non-JSON text).
    pub any: Option<Arc<Masker>>,
    /// Applied to the string values at these paths of JSON bodies.
    pub fields: Vec<(FieldPath, Arc<Masker>)>,
}

impl MaskPlan {
    /// True when nothing would be masked.
    pub fn is_empty(&self) -> bool {
        self.any.is_none() && self.fields.is_empty()
    }

    /// Masks a JSON document in place; returns what fired.
    pub fn mask_json(&self, value: &mut Value) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut path = Vec::new();
        self.walk(value, &mut path, &mut findings);
        findings
    }

    fn walk(&self, value: &mut Value, path: &mut Vec<Segment>, findings: &mut Vec<Finding>) {
        match value {
            Value::String(s) => {
                let mut text = std::mem::take(s).into_bytes();
                let field = self.fields.iter().filter(|(p, _)| p.matches(path)).map(|(_, m)| m);
                for masker in self.any.iter().chain(field) {
                    let (out, found) = masker.mask(&text);
                    text = out;
                    let at = render(path);
                    findings.extend(found.into_iter().map(|f| Finding {
                        field: Some(at.clone()),
                        ..f
                    }));
                }
                *s = String::from_utf8_lossy(&text).into_owned();
            }
            Value::Array(items) => {
                path.push(Segment::Any);
                for item in items {
                    self.walk(item, path, findings);
                }
                path.pop();
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    path.push(Segment::Key(key.clone()));
                    self.walk(item, path, findings);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// `messages[].content` for a walk path.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Any => out.push_str("[]"),
        }
    }
    out
}

/// The operator's detectors and rules.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    custom: HashMap<String, String>,
    rules: HashMap<String, crate::config::MaskRule>,
}

impl Catalog {
    /// From validated config.
    pub fn new(config: &MaskingConfig) -> Self {
        Self {
            custom: config
                .detectors
                .iter()
                .map(|d| (d.name.clone(), d.regex.clone()))
                .collect(),
            rules: config.rules.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        }
    }

    /// Every name `@mask` may use.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect();
        names.extend(self.custom.keys().cloned());
        names.extend(self.rules.keys().cloned());
        names
    }

    fn detector(&self, name: &str) -> Result<Detector, MaskError> {
        match self.custom.get(name) {
            Some(regex) => Detector::custom(name, regex),
            None => Detector::builtin(name),
        }
    }

    /// The plan for `@mask` names, plus an exact secret to scrub everywhere.
    pub fn plan(&self, names: &[String], secret: Option<&str>) -> Result<MaskPlan, MaskError> {
        let mut any: Vec<(Detector, Style)> = Vec::new();
        let mut keep: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for name in names {
            match self.rules.get(name) {
                Some(rule) => {
                    if rule.keep_original {
                        keep.extend(rule.detectors.iter().cloned());
                    }
                    let detectors = rule
                        .detectors
                        .iter()
                        .map(|d| Ok((self.detector(d)?, rule.style)))
                        .collect::<Result<Vec<_>, MaskError>>()?;
                    if rule.fields.is_empty() {
                        any.extend(detectors);
                    } else {
                        let masker = Arc::new(Masker::from_parts(detectors).keeping(keep.clone()));
                        for f in &rule.fields {
                            fields.push((FieldPath::parse(f).map_err(MaskError::Field)?, masker.clone()));
                        }
                    }
                }
                None => any.push((self.detector(name)?, Style::Redact)),
            }
        }
        if let Some(secret) = secret {
            any.push((Detector::literal("credential_echo", secret)?, Style::Redact));
        }
        let any = (!any.is_empty()).then(|| Arc::new(Masker::from_parts(any).keeping(keep)));
        Ok(MaskPlan { any, fields })
    }
}
