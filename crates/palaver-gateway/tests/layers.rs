//! The gateway's modules import only downward: this test reads every module
//! file's `crate::`, `super::` and `self::` paths and fails on any import
//! cycle among the modules, printing the cycle. (The layering is written down
//! in `docs/architecture.md`.)
//!
//! A module is a file: `src/api/keys.rs` is `api::keys`, a node of its own,
//! so `config` may use the API key type without depending on the API's
//! handlers. A path names the longest module it starts with
//! (`crate::api::keys::ApiKey` -> `api::keys`, `crate::api::PREFIX` -> `api`).
//! A parent's `mod child;` is not an import; a child's `super::` is one.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Module path (`api::keys`) -> source text, for every file under `src/`.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src").with_extension("");
            let name: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let name = name.join("::");
            // The crate roots are not modules anyone imports.
            if name == "lib" || name == "main" {
                continue;
            }
            modules.insert(name, fs::read_to_string(&path).expect("a readable module"));
        }
    }
    modules
}

/// The text without comments (`//` to the end of a line; doc links in
/// comments are not imports; block comments are not used in this crate) and
/// without its unit tests (the `#[cfg(test)]` module at the end of a file,
/// whose `super::` is the file's own module).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module paths `from` imports: every `crate::a::b` path and every `super::x`
/// in its code, expanded through `{ ... }` groups, resolved to known modules.
fn imports(from: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let mut found = BTreeSet::new();
    let anchors =
        [("crate::", String::new()), ("super::", parent(from)), ("self::", from.to_owned())];
    for (anchor, base) in anchors {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(anchor) {
            // `palaver_crate::` or `my_super::` are not these keywords.
            let before = rest[..at].chars().next_back();
            rest = &rest[at + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for path in expand(rest) {
                let full = if base.is_empty() { path } else { format!("{base}::{path}") };
                if let Some(module) = longest_module(&full, known)
                    && module != from
                {
                    found.insert(module);
                }
            }
        }
    }
    found
}

fn parent(module: &str) -> String {
    module.rsplit_once("::").map(|(parent, _)| parent.to_owned()).unwrap_or_default()
}

/// The paths at the start of `rest` (just after `crate::`): `a::b::C` gives
/// one, `a::{b::C, d}` gives `a::b::C` and `a::d`.
fn expand(rest: &str) -> Vec<String> {
    let prefix: String =
        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
    let after = &rest[prefix.len()..];
    if !after.starts_with('{') {
        return vec![prefix.trim_end_matches(':').to_owned()];
    }
    // Split the group at its top-level commas, recursing into nested groups.
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&after[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&after[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand(item).into_iter().map(|tail| format!("{prefix}{tail}")))
        .collect()
}

/// The longest known module `path` starts with (`self` stays with its parent).
fn longest_module(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty() && *p != "self").collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| known.contains(m))
}

/// One cycle in the graph, if there is any (depth-first search, colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules.iter().map(|(name, text)| (name.clone(), imports(name, text, &known))).collect()
}

#[test]
fn gateway_modules_import_without_cycles() {
    let graph = graph();
    assert!(graph.len() > 20, "found only {} modules; is src/ where it was?", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph.iter().map(|(m, to)| format!("  {m} -> {to:?}")).collect();
        panic!(
            "import cycle among the gateway's modules: {}\nall imports:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_reader_sees_imports_and_cycles() {
    let known: BTreeSet<String> =
        ["a", "b", "c", "api", "api::keys"].into_iter().map(String::from).collect();
    let text = "use crate::{a::X, b::{self, Y}};\n// crate::c::Z in a comment\nfn f() { crate::api::keys::K; }";
    let found = imports("c", text, &known);
    assert_eq!(found, ["a", "api::keys", "b"].into_iter().map(String::from).collect());
    assert_eq!(imports("api::keys", "use super::Z;", &known), BTreeSet::from(["api".to_owned()]));

    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
            .into_iter()
            .map(|(m, to)| (m.to_owned(), to.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
