//! The module tree is the architecture (docs/ARCHITECTURE.md, src/lib.rs):
//! imports point down the layers, nothing imports from `cli`, and no two
//! modules import each other, directly or around a loop. Before this test
//! existed the tree had three such cycles (backend ↔ gc ↔ sync,
//! daemon → systemd → fstab → daemon, keyring ↔ vault) and eight modules
//! imported items back from `main.rs`.
//!
//! Edges are read from the source text: every `crate::a::b` path and every
//! `use crate::{…}` group outside comments and `#[cfg(test)] mod tests`. A
//! module's references to its own parent or children are not edges (a
//! folder module and its files are one unit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rank of each layer: a module may import only from lower ranks or from
/// its own layer (where the file-level graph must stay acyclic).
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("progress", 0),
    ("logging", 0),
    ("vault::keys", 0),
    ("vault::config", 0),
    ("chunk", 1),
    ("index", 2),
    ("store", 3),
    ("vault", 4),
    ("fs", 5),
    ("remote", 6),
    ("maintenance", 7),
    ("mount", 8),
    ("cli", 9),
];

fn rank(module: &str) -> u32 {
    LAYERS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// Every module of the library: path `a::b` → file.
fn modules() -> BTreeMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] || parts.last().is_some_and(|l| l == "tests") {
                continue;
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The source without line comments and without the unit-test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Module paths referenced as `crate::…`, including `crate::{a, b::c}`.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim().split(" as ").next().unwrap().trim();
                let path: String = item
                    .chars()
                    .take_while(|&c| is_ident(c) || c == ':')
                    .collect();
                if !path.is_empty() {
                    out.insert(path.trim_end_matches(':').to_string());
                }
            }
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|&c| is_ident(c) || c == ':')
            .collect();
        out.insert(path.trim_end_matches(':').to_string());
    }
    out
}

/// Module → the modules it imports from (the longest module prefix of each
/// reference), without its own ancestors and descendants.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges = BTreeMap::new();
    for (m, path) in &mods {
        let mut to = BTreeSet::new();
        for r in references(&code_of(path)) {
            let parts: Vec<&str> = r.split("::").collect();
            let Some(target) = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|t| mods.contains_key(t))
            else {
                continue;
            };
            let related = target == *m
                || m.starts_with(&format!("{target}::"))
                || target.starts_with(&format!("{m}::"));
            if !related {
                to.insert(target);
            }
        }
        edges.insert(m.clone(), to);
    }
    edges
}

#[test]
fn nothing_outside_cli_imports_from_it() {
    let bad: Vec<String> = graph()
        .iter()
        .filter(|(m, _)| top(m) != "cli")
        .flat_map(|(m, to)| {
            to.iter()
                .filter(|t| top(t) == "cli")
                .map(move |t| format!("{m} → {t}"))
        })
        .collect();
    assert!(bad.is_empty(), "imports from cli/: {bad:#?}");
}

#[test]
fn imports_point_down_the_layers() {
    let bad: Vec<String> = graph()
        .iter()
        .flat_map(|(m, to)| {
            to.iter()
                .filter(|t| top(t) != top(m) && rank(t) >= rank(m))
                .map(move |t| format!("{m} (layer {}) → {t} (layer {})", rank(m), rank(t)))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "imports that point up or sideways: {bad:#?}"
    );
}

#[test]
fn no_import_cycles() {
    let g = graph();
    // Tarjan's strongly connected components.
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        cycles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.g[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.cycles.push(comp);
            }
        }
    }
    let mut s = State {
        g: &g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    assert!(s.cycles.is_empty(), "import cycles: {:#?}", s.cycles);
}

/// The reference reader sees grouped and nested paths, and a module takes
/// the rank of its longest listed prefix.
#[test]
fn the_checker_sees_grouped_imports() {
    let refs = references("use crate::{fs::FsCore, index, vault::keys::Subkeys as K};\nx(crate::store::packstore::PackStore)");
    let want: BTreeSet<String> = [
        "fs::FsCore",
        "index",
        "vault::keys::Subkeys",
        "store::packstore::PackStore",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(refs, want);
    assert_eq!(rank("vault::keys"), 0);
    assert_eq!(rank("vault"), 4);
    assert_eq!(rank("mount::fstab"), 8);
}
