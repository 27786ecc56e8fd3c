//! Loading policy files: one Cedar schema and any number of policy files,
//! each validated against the schema. Errors name the file and line (and the
//! policy id when there is one). Nothing is returned unless everything loads.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    str::FromStr,
};

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// Errors in policy files (operator input).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or the directory could not be read.
    #[error("policy {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The directory has no `*.cedarschema` file, or more than one.
    #[error("policy directory {dir}: {message}")]
    Layout {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The schema does not parse.
    #[error("schema {file}:{line}: {message}")]
    Schema {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A policy file does not parse.
    #[error("policy {file}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// A policy does not fit the schema.
    #[error("policy {file}:{line}: policy `{policy}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// Policy id.
        policy: String,
        /// Validator message.
        message: String,
    },
    /// Two policies have the same id.
    #[error("policy id `{id}` is used twice: {first} and {second}")]
    Duplicate {
        /// The id.
        id: String,
        /// First place (file:line).
        first: String,
        /// Second place.
        second: String,
    },
    /// An annotation has a value the gateway does not understand.
    #[error("policy {file}:{line}: policy `{policy}`: {message}")]
    Annotation {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// Policy id.
        policy: String,
        /// What is wrong.
        message: String,
    },
}

/// What the gateway knows about one policy beyond Cedar's view of it.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// File it came from.
    pub file: String,
    /// 1-based line where it starts.
    pub line: usize,
    /// permit or forbid.
    pub effect: Effect,
    /// `@review`: a match holds the request for approval instead of deciding.
    pub review: bool,
    /// `@reason("...")`: shown to the agent and in the audit trail.
    pub reason: Option<String>,
    /// `@mask("a,b")`: masking rules that apply when this policy allows.
    pub mask: Vec<String>,
    /// How a review this policy opens is run (`@review` policies only).
    pub review_rules: ReviewRules,
}

/// `@approvers("2")`, `@no_self_approval`, `@review_timeout("10m")` and
/// `@webhook("https://...")` on a `@review` policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewRules {
    /// Distinct people who must approve (at least 1).
    pub approvers: u32,
    /// A person may not approve requests of agents running as themselves.
    pub no_self_approval: bool,
    /// How long the request is held before it is refused.
    pub timeout: Option<std::time::Duration>,
    /// Where to announce the review.
    pub webhook: Option<String>,
}

fn review_rules(policy: &cedar_policy::Policy, review: bool) -> Result<ReviewRules, String> {
    let mut rules = ReviewRules {
        approvers: 1,
        ..ReviewRules::default()
    };
    let given = ["approvers", "no_self_approval", "review_timeout", "webhook"]
        .iter()
        .filter(|a| policy.annotation(a).is_some())
        .count();
    if given > 0 && !review {
        return Err("@approvers, @no_self_approval, @review_timeout and @webhook need @review".into());
    }
    if let Some(n) = policy.annotation("approvers") {
        rules.approvers = n
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 10)
            .ok_or_else(|| format!("@approvers takes a number from 1 to 10, not {n:?}"))?;
    }
    rules.no_self_approval = match policy.annotation("no_self_approval") {
        None => false,
        Some("" | "true") => true,
        Some(other) => return Err(format!("@no_self_approval takes no value, not {other:?}")),
    };
    if let Some(t) = policy.annotation("review_timeout") {
        rules.timeout = Some(humantime::parse_duration(t).map_err(|e| format!("@review_timeout {t:?}: {e}"))?);
    }
    if let Some(url) = policy.annotation("webhook") {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("@webhook must be an http(s) URL, not {url:?}"));
        }
        rules.webhook = Some(url.to_owned());
    }
    Ok(rules)
}

/// A validated policy set, ready for decisions.
pub struct LoadedPolicies {
    /// Read by the test that checks requests against it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) schema: Schema,
    pub(super) all: PolicySet,
    /// `all` minus the `@review` forbids: tells whether a held request could be allowed.
    pub(super) without_review: PolicySet,
    pub(super) meta: HashMap<String, PolicyMeta>,
    /// Where the set came from (a directory, or the embedded defaults).
    pub source: String,
    /// True if a policy that can apply to `connect` reads `context` (connect
    /// decisions then depend on the time, and are not cached).
    pub reads_context: bool,
    /// True if any policy may read the time from the context (`time`,
    /// `hour`, `weekday`, or the context as a whole): decisions then change
    /// with the clock and are not cached.
    pub reads_time: bool,
    /// True if any policy may read `context.sql`, the statement's text.
    /// Otherwise a statement's decision depends only on its classification
    /// (kind, tables, WHERE, count), and is cached by that: the text of
    /// `... WHERE id = 1` and `... WHERE id = 2` differ, their facts do not.
    pub reads_sql: bool,
    /// True if any policy may read `context.body_size`; otherwise HTTP
    /// decisions are cached regardless of it.
    pub reads_body_size: bool,
    /// Distinct for every set loaded in this process: cached decisions name
    /// the set that made them.
    pub generation: u64,
}

impl LoadedPolicies {
    /// Number of policies.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when there are no policies (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Ids of every policy.
    pub fn meta_ids(&self) -> impl Iterator<Item = &String> {
        self.meta.keys()
    }

    /// Metadata of a policy.
    pub fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }

    /// The review rules of a held decision's policies, combined: the most
    /// approvers any asks for, self-approval barred if any bars it, the
    /// shortest timeout, every webhook.
    pub fn review_rules(&self, ids: &[String]) -> (ReviewRules, Vec<String>) {
        let mut merged = ReviewRules {
            approvers: 1,
            ..ReviewRules::default()
        };
        let mut webhooks = Vec::new();
        for r in ids.iter().filter_map(|id| self.meta(id)).map(|m| &m.review_rules) {
            merged.approvers = merged.approvers.max(r.approvers);
            merged.no_self_approval |= r.no_self_approval;
            merged.timeout = match (merged.timeout, r.timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            webhooks.extend(r.webhook.clone());
        }
        (merged, webhooks)
    }
}

/// The schema and example policies shipped in `policies/`.
const EMBEDDED: &[(&str, &str)] = &[
    ("base.cedar", include_str!("../../../policies/base.cedar")),
    ("llm-api.cedar", include_str!("../../../policies/llm-api.cedar")),
    (
        "read-only-db.cedar",
        include_str!("../../../policies/read-only-db.cedar"),
    ),
];
const EMBEDDED_SCHEMA: (&str, &str) = (
    "interlock.cedarschema",
    include_str!("../../../policies/interlock.cedarschema"),
);

/// Policy texts before parsing: the schema, the policy files, and where they came from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// (file name, text) of the schema.
    pub schema: (String, String),
    /// (file name, text) of each policy file.
    pub files: Vec<(String, String)>,
    /// A directory, or `embedded default policies`.
    pub origin: String,
    /// Names `@mask` may use (detectors and rules).
    pub mask_names: Vec<String>,
}

impl Sources {
    /// Parses and validates these sources plus `extra` generated files.
    pub fn load_with(&self, extra: &[(String, String)]) -> Result<LoadedPolicies, PolicyError> {
        let mut files = self.files.clone();
        files.extend(extra.iter().cloned());
        load_sources(self.schema.clone(), &files, self.origin.clone(), &self.mask_names)
    }
}

/// The shipped policies (default deny).
pub fn embedded_sources() -> Sources {
    let (schema_name, schema) = EMBEDDED_SCHEMA;
    Sources {
        schema: (format!("<embedded>/{schema_name}"), schema.to_owned()),
        files: EMBEDDED
            .iter()
            .map(|(n, t)| (format!("<embedded>/{n}"), (*t).to_owned()))
            .collect(),
        origin: "embedded default policies".into(),
        mask_names: crate::types::BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect(),
    }
}

/// The shipped policies, loaded.
pub fn load_embedded() -> Result<LoadedPolicies, PolicyError> {
    embedded_sources().load_with(&[])
}

/// Loads `dir`: exactly one `*.cedarschema` and every `*.cedar`, in name order.
pub fn load_dir(dir: &Path) -> Result<LoadedPolicies, PolicyError> {
    read_dir_sources(dir)?.load_with(&[])
}

/// Reads `dir` without parsing.
pub fn read_dir_sources(dir: &Path) -> Result<Sources, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PolicyError::Io { path, source }
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let schemas: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cedarschema"))
        .collect();
    let [schema_path] = schemas.as_slice() else {
        return Err(PolicyError::Layout {
            dir: dir.to_owned(),
            message: format!("expected exactly one *.cedarschema file, found {}", schemas.len()),
        });
    };
    let schema = (
        schema_path.display().to_string(),
        std::fs::read_to_string(schema_path).map_err(io(schema_path))?,
    );
    let mut files = Vec::new();
    for path in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "cedar")) {
        files.push((
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(io(path))?,
        ));
    }
    Ok(Sources {
        schema,
        files,
        origin: dir.display().to_string(),
        mask_names: crate::types::BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect(),
    })
}

/// 1-based (line, column) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Offset of a diagnostic's first label, if it has one.
fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut labels| labels.next()).map(|l| l.offset())
}

/// Loads a schema and policy texts (name, text).
pub fn load_sources(
    schema: (String, String),
    files: &[(String, String)],
    source: String,
    mask_names: &[String],
) -> Result<LoadedPolicies, PolicyError> {
    let (schema_file, schema_text) = schema;
    let parsed_schema = Schema::from_cedarschema_str(&schema_text).map_err(|e| PolicyError::Schema {
        line: first_offset(&e).map_or(0, |o| line_col(&schema_text, o).0),
        file: schema_file.clone(),
        message: e.to_string(),
    })?;
    let schema = parsed_schema.0;
    let validator = Validator::new(schema.clone());
    let mut all = PolicySet::new();
    let mut without_review = PolicySet::new();
    let mut meta: HashMap<String, PolicyMeta> = HashMap::new();
    let mut reads_context = false;
    let mut reads_time = false;
    let (mut reads_sql, mut reads_body_size) = (false, false);
    for (file, text) in files {
        let set = PolicySet::from_str(text).map_err(|e| {
            let offset = e.iter().next().and_then(|pe| first_offset(pe)).unwrap_or(0);
            let (line, column) = line_col(text, offset);
            PolicyError::Parse {
                file: file.clone(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        // Where each policy starts, for ids and errors.
        let mut cursor = 0;
        let mut lines: HashMap<PolicyId, usize> = HashMap::new();
        for policy in set.policies() {
            let body = policy.to_string();
            let at = text[cursor..].find(body.as_str()).map_or(cursor, |i| cursor + i);
            cursor = at + body.len().min(text.len() - at);
            lines.insert(policy.id().clone(), line_col(text, at).0);
        }
        let result = validator.validate(&set, ValidationMode::Strict);
        if let Some(err) = result.validation_errors().next() {
            let line = first_offset(err)
                .map(|o| line_col(text, o).0)
                .or_else(|| lines.get(err.policy_id()).copied())
                .unwrap_or(0);
            let policy = set
                .policy(err.policy_id())
                .and_then(|p| p.annotation("id").map(str::to_owned))
                .unwrap_or_else(|| format!("{}:{line}", short(file)));
            return Err(PolicyError::Invalid {
                file: file.clone(),
                line,
                policy,
                message: err.to_string(),
            });
        }
        for policy in set.policies() {
            let line = lines.get(policy.id()).copied().unwrap_or(0);
            let id = policy
                .annotation("id")
                .map_or_else(|| format!("{}:{line}", short(file)), str::to_owned);
            let place = format!("{file}:{line}");
            if let Some(existing) = meta.get(&id) {
                return Err(PolicyError::Duplicate {
                    id,
                    first: format!("{}:{}", existing.file, existing.line),
                    second: place,
                });
            }
            let annotation_err = |message: String| PolicyError::Annotation {
                file: file.clone(),
                line,
                policy: id.clone(),
                message,
            };
            let review = match policy.annotation("review") {
                None => false,
                Some("" | "true") => true,
                Some(other) => {
                    return Err(annotation_err(format!(
                        "@review takes no value or \"true\", not {other:?}"
                    )))
                }
            };
            let mask: Vec<String> = policy
                .annotation("mask")
                .map(|m| {
                    m.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(bad) = mask.iter().find(|name| !mask_names.contains(name)) {
                return Err(annotation_err(format!(
                    "@mask names `{bad}`, which is no detector or masking rule"
                )));
            }
            if !mask.is_empty() && policy.effect() != Effect::Permit {
                return Err(annotation_err("@mask only makes sense on a permit".into()));
            }
            let review_rules = review_rules(policy, review).map_err(annotation_err)?;
            let text = policy.to_string();
            reads_context |= text.contains("context") && may_apply_to_connect(policy);
            reads_time |= may_read(&text, &TIME_ATTRS);
            reads_sql |= may_read(&text, &["sql"]);
            reads_body_size |= may_read(&text, &["body_size"]);
            let renamed = policy.new_id(PolicyId::new(id.clone()));
            if !(review && policy.effect() == Effect::Forbid) {
                without_review
                    .add(renamed.clone())
                    .map_err(|e| annotation_err(e.to_string()))?;
            }
            all.add(renamed).map_err(|e| annotation_err(e.to_string()))?;
            meta.insert(
                id,
                PolicyMeta {
                    file: file.clone(),
                    line,
                    effect: policy.effect(),
                    review,
                    reason: policy.annotation("reason").map(str::to_owned),
                    mask,
                    review_rules,
                },
            );
        }
    }
    Ok(LoadedPolicies {
        schema,
        all,
        without_review,
        meta,
        source,
        reads_context,
        reads_time,
        reads_sql,
        reads_body_size,
        generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    })
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Context attributes that change from one request to the next without the
/// request being any different to a policy that ignores them.
pub(super) const TIME_ATTRS: [&str; 3] = ["time", "hour", "weekday"];

/// Whether a policy's text may read any of `names` from the context. Errs
/// towards yes: every `context` must be followed by `.name` with a name
/// other than those (a string that happens to say "context" only costs the
/// cache; `context["x"]`, `context has x` or the context as a whole count
/// as reading everything).
pub(super) fn may_read(text: &str, names: &[&str]) -> bool {
    text.match_indices("context").any(|(at, word)| {
        let rest = text[at + word.len()..].trim_start();
        let Some(attr) = rest.strip_prefix('.') else {
            return true;
        };
        let name: String = attr
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        name.is_empty() || names.contains(&name.as_str())
    })
}

/// Whether a policy's action scope can include `connect`.
fn may_apply_to_connect(policy: &cedar_policy::Policy) -> bool {
    let is_connect = |uid: &cedar_policy::EntityUid| uid.id().unescaped() == "connect";
    match policy.action_constraint() {
        cedar_policy::ActionConstraint::Any => true,
        cedar_policy::ActionConstraint::Eq(uid) => is_connect(&uid),
        cedar_policy::ActionConstraint::In(uids) => uids.iter().any(is_connect),
    }
}

/// File name without directories, for generated policy ids.
fn short(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}
