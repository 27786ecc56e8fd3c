//! The gateway's modules form layers: a module may use modules of lower
//! layers only, never one of its own layer or above, so no two modules can
//! import each other (directly or round a longer loop). This test reads every
//! source file and fails on a back-edge, naming the file and both layers.
//! The README's Layout section draws the same layers.
use std::path::{Path, PathBuf};

/// The layers, lowest first. A new top-level module goes in one of them.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &["types", "uri_path", "persist", "cgroup"]),
    ("base", &["config", "net", "kernel", "detect"]),
    ("facts", &["identity", "masking", "sql", "targets", "credentials"]),
    ("decision", &["policy"]),
    ("trail", &["audit"]),
    ("holds", &["limits", "review"]),
    ("data path", &["proxy"]),
    ("front", &["listener", "control"]),
    ("operators", &["api"]),
    ("program", &["daemon", "cli", "fuzz"]),
];

/// One use of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    /// The file, relative to `src`.
    file: String,
    /// The module the file belongs to.
    from: String,
    /// The module it uses.
    to: String,
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// The source without comments (doc comments name other modules freely).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The top-level modules a path starting at `at` (just past `crate::`) names:
/// one, or several for a `{a, b::c}` group.
fn named_at(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let Some(group) = text.strip_prefix('{') else {
        return vec![ident(text)];
    };
    let mut names = Vec::new();
    let (mut depth, mut start) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                start = false;
                names.push(ident(&group[i..]));
            }
            _ => {}
        }
    }
    names
}

/// Every use of another top-level module in one file, as `crate::x` or as
/// enough `super::` to climb out of the file's module.
fn edges_of(file: &str, src: &str) -> Vec<Edge> {
    let parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    let from = parts[0].to_owned();
    let depth = parts.len();
    let src = strip_comments(src);
    let mut found = Vec::new();
    let mut push = |to: String| {
        if !to.is_empty() && to != from && to != "self" && to != "super" {
            found.push(Edge {
                file: file.to_owned(),
                from: from.clone(),
                to,
            });
        }
    };
    for (i, _) in src.match_indices("crate::") {
        let before = src[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        named_at(&src[i + "crate::".len()..]).into_iter().for_each(&mut push);
    }
    let climb = "super::".repeat(depth);
    for (i, _) in src.match_indices(climb.as_str()) {
        let before = &src[..i];
        if before.ends_with("super::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        named_at(&src[i + climb.len()..]).into_iter().for_each(&mut push);
    }
    found
}

/// The edges that point to the same or a higher layer, and modules with no layer.
fn violations(edges: &[Edge], modules: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for m in modules {
        if layer_of(m).is_none() {
            bad.push(format!(
                "module `{m}` has no layer: add it to LAYERS here and to the README's Layout"
            ));
        }
    }
    for e in edges {
        let (Some(from), Some(to)) = (layer_of(&e.from), layer_of(&e.to)) else {
            continue;
        };
        if to >= from {
            bad.push(format!(
                "{}: `{}` (layer {}, {}) uses `{}` (layer {}, {}); a module may use lower layers only: \
                 move what both need down (into `types` or `net`), or the caller up",
                e.file, e.from, from, LAYERS[from].0, e.to, to, LAYERS[to].0
            ));
        }
    }
    bad
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
            out.push((rel, text));
        }
    }
}

#[test]
fn modules_use_lower_layers_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let files: Vec<_> = files
        .into_iter()
        .filter(|(f, _)| f != "lib.rs" && f != "main.rs")
        .collect();
    let mut modules: Vec<String> = files
        .iter()
        .filter(|(f, _)| !f.contains('/'))
        .map(|(f, _)| f.trim_end_matches(".rs").to_owned())
        .collect();
    modules.sort();
    let edges: Vec<Edge> = files.iter().flat_map(|(f, s)| edges_of(f, s)).collect();
    assert!(
        edges.len() > 100,
        "found only {} uses between modules: the scan is broken",
        edges.len()
    );
    let bad = violations(&edges, &modules);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    // Every layer's modules exist, so the README's picture stays true.
    for (name, mods) in LAYERS {
        for m in *mods {
            assert!(
                modules.contains(&(*m).to_owned()),
                "layer {name} names `{m}`, which is no module"
            );
        }
    }
}

#[test]
fn the_scan_finds_back_edges_in_every_form() {
    let src = "use crate::{\n    proxy::{self, X},\n    types::OrigDst,\n};\n\
               // crate::daemon in a comment is no use\n\
               fn f() { crate::review::settle(); let _ = super::super::control::X; }\n";
    let edges = edges_of("audit/store.rs", src);
    let to: Vec<&str> = edges.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(to, ["proxy", "types", "review", "control"]);
    let modules = ["audit", "proxy", "types", "review", "control"].map(String::from);
    let bad = violations(&edges, &modules);
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].starts_with("audit/store.rs: `audit` (layer 4, trail) uses `proxy` (layer 6"));
    // A module of the same layer is a back-edge too: two of them could loop.
    let same = edges_of("limits.rs", "use crate::review::X;");
    assert_eq!(violations(&same, &["limits".into(), "review".into()]).len(), 1);
    // A module nobody placed is refused.
    assert_eq!(violations(&[], &["newthing".into()]).len(), 1);
    // `super::` within a module is not a use of another.
    assert!(edges_of("proxy/http.rs", "use super::ProxyCtx;").is_empty());
}
