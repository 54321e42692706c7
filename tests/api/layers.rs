//! The layers `ARCHITECTURE.md` describes, checked on the source: the `crate::` imports
//! between the top-level modules of `src/` form no cycle, and each module imports only its
//! own layer or the ones below it. A new top-level module fails here until it is given a
//! layer. The scan reads text (comments dropped), so it needs no build of the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import modules of its own layer or of a lower one;
/// `the_module_graph_has_no_cycle` keeps the imports inside one layer one-way.
const LAYERS: &[(&str, &[&str])] = &[
    // Types and tables everything shares; they import nothing above themselves.
    (
        "foundation",
        &[
            "clock",
            "ids",
            "domain",
            "error",
            "metrics",
            "telemetry",
            "batch",
        ],
    ),
    // Settings, the GCRA maths and the cryptography.
    ("primitives", &["ratelimit", "config", "auth"]),
    ("store", &["store"]),
    // One service per use case.
    (
        "services",
        &[
            "accounts",
            "keys",
            "orgs",
            "invitations",
            "widgets",
            "webhooks",
            "chat",
            "mail",
            "limits",
            "fanout",
            "credentials",
            "spend",
            "oauth",
            "external",
        ],
    ),
    // Builds the services once (`AppState::build`).
    ("assembly", &["app"]),
    ("http", &["http"]),
    // What runs: the serve loop and the command line.
    ("binary", &["server", "cli"]),
];

/// Imports forbidden beyond the layer order: (importer, imported, why).
const FORBIDDEN: &[(&str, &str, &str)] = &[(
    "cli",
    "http",
    "the CLI calls the services, so a change from it fans out like one over HTTP",
)];

/// Words that may appear only in some files: (word, allowed path prefixes under `src/`).
const CONFINED: &[(&str, &[&str])] = &[
    // Services answer with their own errors; `http/` maps them to the envelope.
    ("ApiError", &["http/", "error.rs"]),
    // No axum type below `http/`.
    ("axum", &["http/", "server.rs"]),
    // Store code runs its statements on `self.db()` or an `exec::Conn`, which know whether a
    // transaction pooler sits in between; a query given the pool itself (`&self.pool`)
    // silently names its statement and breaks behind PgBouncer. Only the executors,
    // migrations and the SQLite backup (`VACUUM INTO`, never pooled) pass the pool.
    (
        "&self.pool",
        &[
            "store/exec.rs",
            "store/write_tx.rs",
            "store/connect.rs",
            "store/backup.rs",
        ],
    ),
];

/// Words a layer must not use: (word, forbidden path prefixes under `src/`).
const BARRED: &[(&str, &[&str])] = &[
    // Handlers reach storage only through services: no `Store`, no service's `store` field,
    // no `AppState::runtime`.
    ("store::Store", &["http/"]),
    (".store", &["http/"]),
    ("runtime", &["http/"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/store/orgs.rs` → `store`), or `None` for
/// the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The text with `//` comments (doc comments included) removed, line numbers kept.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // `"…//…"` in a string (a URL) is not a comment start.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `word` occurs in `line` not as part of a longer identifier.
fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i]
            .chars()
            .last()
            .filter(|_| word.starts_with(is_ident_char));
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// The first path segments after each `crate::`, with their line numbers; a group
/// `crate::{a, b::c}` names `a` and `b`.
fn crate_imports(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `gatehouse_crate::`, not `crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && !c.is_whitespace() => {
                            start = false;
                            out.push((ident(&group[j..]).to_string(), n + 1));
                        }
                        _ => {}
                    }
                }
            } else {
                out.push((ident(rest).to_string(), n + 1));
            }
        }
    }
    out
}

/// Importer → imported → where (`path:line`), over the top-level modules of `src/`.
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn graph() -> (BTreeSet<String>, Graph) {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f.strip_prefix(&root).unwrap()))
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap();
        let Some(from) = module_of(rel) else { continue };
        let text = without_comments(&std::fs::read_to_string(file).unwrap());
        for (to, line) in crate_imports(&text) {
            if to != from && modules.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .push(format!("src/{}:{line}", rel.display()));
            }
        }
    }
    (modules, graph)
}

/// A cycle through `node`, if the depth-first walk from it finds one.
fn find_cycle(
    node: &str,
    graph: &Graph,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
        if let Some(c) = find_cycle(next, graph, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (modules, graph) = graph();
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = find_cycle(m, &graph, &mut Vec::new(), &mut done) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} at {}", w[0], w[1], graph[&w[0]][&w[1]][0]))
                .collect();
            panic!("import cycle:\n  {}", steps.join("\n  "));
        }
    }
}

#[test]
fn each_module_imports_only_its_own_layer_or_below() {
    let (modules, graph) = graph();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    let unplaced: Vec<&String> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer in LAYERS (and ARCHITECTURE.md): {unplaced:?}"
    );
    let mut wrong = Vec::new();
    for (from, tos) in &graph {
        for (to, at) in tos {
            let (lf, lt) = (layer_of[from.as_str()], layer_of[to.as_str()]);
            if lt > lf {
                wrong.push(format!(
                    "{from} ({}) imports {to} ({}) at {}",
                    LAYERS[lf].0,
                    LAYERS[lt].0,
                    at.join(", ")
                ));
            }
            if let Some((_, _, why)) = FORBIDDEN.iter().find(|(f, t, _)| f == from && t == to) {
                wrong.push(format!("{from} imports {to} ({why}) at {}", at.join(", ")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn api_errors_axum_and_storage_stay_in_their_layers() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = without_comments(&std::fs::read_to_string(file).unwrap());
        let rules = CONFINED
            .iter()
            .filter(|(_, allowed)| !allowed.iter().any(|a| rel.starts_with(a)))
            .chain(
                BARRED
                    .iter()
                    .filter(|(_, barred)| barred.iter().any(|b| rel.starts_with(b))),
            );
        for (word, _) in rules {
            for (n, line) in text.lines().enumerate() {
                if has_word(line, word) {
                    wrong.push(format!("{word} in src/{rel}:{}", n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "outside their layer:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_scan_reads_imports_as_written() {
    let text = "use crate::{a, b::{c, d}, e};\nlet x = crate::f::g(); // crate::h\nmy_crate::i";
    let found: Vec<(String, usize)> = crate_imports(&without_comments(text));
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "e", "f"]);
    assert_eq!(found[3].1, 2);
    assert!(has_word("let s = state.runtime.store.x;", ".store"));
    assert!(!has_word("state.stored", ".store") && !has_word("StoreError", "Store"));
}

/// `/openapi.json` names a schema after its Rust type (or its `#[schema(as = …)]`), and two
/// types of one name share one `components.schemas` entry: one route's body would then be
/// described by the other's. So each name is declared once.
#[test]
fn every_schema_name_is_declared_once() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        let text = without_comments(&std::fs::read_to_string(file).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if !(line.contains("derive(") && has_word(line, "ToSchema")) {
                continue;
            }
            let mut alias = None;
            for next in &lines[n + 1..] {
                let t = next.trim();
                if let Some(rest) = t.strip_prefix("#[schema(as = ") {
                    alias = Some(ident(rest.rsplit("::").next().unwrap_or(rest)).to_string());
                }
                let decl = ["pub(crate) ", "pub "]
                    .iter()
                    .fold(t, |t, p| t.strip_prefix(p).unwrap_or(t));
                let found = ["struct ", "enum "]
                    .iter()
                    .find_map(|k| decl.strip_prefix(k));
                if let Some(rest) = found {
                    let name = alias.take().unwrap_or_else(|| ident(rest).to_string());
                    names
                        .entry(name)
                        .or_default()
                        .push(format!("src/{rel}:{}", n + 1));
                    break;
                }
            }
        }
    }
    assert!(
        names.len() > 20,
        "the scan found too few schemas: {names:?}"
    );
    let twice: Vec<String> = names
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(name, at)| format!("{name} at {}", at.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "schema names declared twice (give one `#[schema(as = …)]`):\n  {}",
        twice.join("\n  ")
    );
}
