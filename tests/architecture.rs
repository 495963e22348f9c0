//! The dependency rule, checked on the sources: the payment core uses no proxy, HTTP client or
//! runtime types, and the top-level modules form no cycle. Test code (`*_tests.rs` files and
//! `#[cfg(test)] mod tests` blocks) and comments are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MODULES: &[&str] = &[
    "buyer",
    "config",
    "demo",
    "facilitator",
    "metrics",
    "ops",
    "payment",
    "ports",
    "pricing",
    "proxy",
    "state",
    "store",
    "time",
    "x402",
];

/// The pure core: what a request costs and every decision about its money.
const CORE: &[&str] = &["x402", "pricing", "payment"];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        files.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.to_string_lossy().ends_with("_tests.rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    files
}

/// The non-test, non-comment lines of a source file.
fn code_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("a readable source file");
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    code.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
        .map(str::to_string)
        .collect()
}

fn uses_of_other_modules(module: &str) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    for file in sources(module) {
        for line in code_lines(&file) {
            for other in MODULES.iter().filter(|m| **m != module) {
                if line.contains(&format!("crate::{other}::"))
                    || line.contains(&format!("crate::{other};"))
                    || line.contains(&format!("crate::{other}::{{"))
                {
                    used.insert(*other);
                }
            }
        }
    }
    used
}

#[test]
fn the_payment_core_uses_no_proxy_client_or_runtime_types() {
    for module in CORE {
        let files = sources(module);
        assert!(!files.is_empty(), "no sources found for {module}");
        for file in files {
            for line in code_lines(&file) {
                for forbidden in ["pingora", "reqwest", "tokio::", "hyper::"] {
                    assert!(
                        !line.contains(forbidden) || line.contains("tokio::test"),
                        "{} uses {forbidden}: {line}",
                        file.display()
                    );
                }
            }
        }
        for adapter in ["proxy", "ops", "facilitator", "store", "state"] {
            assert!(
                !uses_of_other_modules(module).contains(adapter),
                "the core module {module} depends on the adapter {adapter}"
            );
        }
    }
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let graph: BTreeMap<&str, BTreeSet<&str>> = MODULES
        .iter()
        .map(|m| (*m, uses_of_other_modules(m)))
        .collect();
    // Depth-first search for a path back to where it started.
    fn reaches<'a>(
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        from: &'a str,
        target: &str,
        seen: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> bool {
        for next in graph.get(from).into_iter().flatten() {
            path.push(next);
            if *next == target || (seen.insert(next) && reaches(graph, next, target, seen, path)) {
                return true;
            }
            path.pop();
        }
        false
    }
    for module in MODULES {
        let mut path = vec![*module];
        assert!(
            !reaches(&graph, module, module, &mut BTreeSet::new(), &mut path),
            "a cycle between modules: {}",
            path.join(" -> ")
        );
    }
    // The leaves stay leaves.
    assert!(graph["time"].is_empty(), "time: {:?}", graph["time"]);
    assert!(
        graph["metrics"].iter().all(|m| CORE.contains(m)),
        "metrics: {:?}",
        graph["metrics"]
    );
}
