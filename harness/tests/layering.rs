//! The house's layering, read from the source: every `crate::<module>` a top-level module
//! of `harness/src` names (outside comments) is an edge. Fails on any cycle, on any import
//! of `cli`, and on scenario, engine or plan reaching up into actions, reporter, history or
//! ci.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let re = regex::Regex::new(r"crate::([a-z_][a-z0-9_]*)").unwrap();
    let mut g = Graph::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let edges = g.entry(top.clone()).or_default();
            for m in re.captures_iter(&code).map(|c| c[1].to_string()) {
                edges.insert(m);
            }
            for m in grouped(&code) {
                edges.insert(m);
            }
            edges.remove(&top);
        }
    }
    g
}

/// The top-level modules named in `use crate::{a, b::c, d as e, ...}` groups.
fn grouped(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::{") {
        let body = &rest[i + "crate::{".len()..];
        let mut depth = 1;
        let mut end = body.len();
        let mut flat = String::new();
        for (j, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ if depth == 1 => flat.push(ch),
                _ => {}
            }
        }
        for item in flat.split(',') {
            let first = item
                .trim()
                .split("::")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            if !first.is_empty() && first != "self" {
                out.push(first.to_string());
            }
        }
        rest = &body[end.min(body.len())..];
    }
    out
}

/// A cycle through `from`, if there is one, as the path of modules.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "read too few modules: {:?}", g.keys());
    if let Some(c) = cycle(&g) {
        panic!("module cycle: {}", c.join(" -> "));
    }
}

#[test]
fn nothing_imports_the_cli() {
    let g = graph();
    let users: Vec<&String> = g
        .iter()
        .filter(|(_, e)| e.contains("cli"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "these modules import cli: {users:?}");
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let g = graph();
    let mut wrong = Vec::new();
    for low in ["scenario", "engine", "plan"] {
        for high in ["actions", "reporter", "history", "ci"] {
            if g.get(low).is_some_and(|e| e.contains(high)) {
                wrong.push(format!("{low} -> {high}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[test]
fn grouped_imports_are_edges_too() {
    let code = "use crate::{matrix, paths, plan::{self, Stage}, reporter as r};\nuse crate::{\n    cni::Catalog,\n};";
    assert_eq!(
        grouped(code),
        ["matrix", "paths", "plan", "reporter", "cni"]
    );
}

#[test]
fn the_checks_see_a_planted_cycle() {
    // The checker itself can fail: a graph with a cycle is caught.
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(cycle(&g).is_none());
}
