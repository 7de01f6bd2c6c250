//! The modules of `proxy/src` form layers: no module imports one that imports it back, however
//! far round. A cycle is how "leaf" modules grow into one knot (telemetry importing the token
//! types, tls importing telemetry's labels), so it fails here, naming the path. Test code
//! (`tests.rs`, `tests/`, `test_support.rs` and the `test_util` module) is not a layer: it may
//! use whatever it tests.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Whether `path` holds only test code.
fn is_test(path: &Path) -> bool {
    let name = path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    matches!(name, "tests" | "test_support" | "test_util")
}

/// Every `.rs` file under `dir` that is not test code.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if is_test(&path) {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module names `line` imports as `crate::<name>`, comments left out.
fn imports(line: &str) -> impl Iterator<Item = &str> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::").map(move |(at, _)| {
        let rest = &code[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// Module → the modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_stem()?.to_str()?.to_owned();
            let rust = path.extension().is_some_and(|e| e == "rs");
            (rust && name != "lib" && !is_test(&path)).then_some(name)
        })
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = vec![src.join(format!("{module}.rs"))];
        let folder = src.join(module);
        if folder.is_dir() {
            sources(&folder, &mut files);
        }
        let mut targets = BTreeSet::new();
        for file in files {
            for line in fs::read_to_string(&file).unwrap().lines() {
                targets.extend(
                    imports(line)
                        .filter(|t| *t != module && modules.contains(*t))
                        .map(str::to_owned),
                );
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A path from `from` back to itself, if there is one.
fn cycle_through(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in &graph[path.last().unwrap()] {
        if next == from {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(cycle) = cycle_through(graph, from, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_of_the_proxy_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph["inbound"].contains("hop"), "the scan sees imports");
    for module in graph.keys() {
        let cycle = cycle_through(&graph, module, &mut vec![module.clone()]);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

#[test]
fn the_scan_finds_a_cycle_when_there_is_one() {
    let mut graph = graph();
    graph.get_mut("tls").unwrap().insert("inbound".to_owned());
    let cycle = cycle_through(&graph, "tls", &mut vec!["tls".to_owned()]);
    assert!(cycle.is_some());
}
