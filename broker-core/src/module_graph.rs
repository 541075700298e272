//! Checks the shape of broker-core itself: which of its modules (source files) use which, read from
//! the `crate::` paths of their code (comments and test modules left out; names the crate root
//! re-exports count as uses of the module that defines them).
//!
//! Two rules hold, so the crate reads bottom-up: no module depends on itself through others (no
//! cycle), and the error module depends only on the leaves it formats with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module's path (`lifecycle`, `time::format`) and the modules its code uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn broker_core_has_no_module_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("lifecycle") && graph.contains_key("time::format"));
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "module cycles: {cycles:?}");
}

#[test]
fn the_error_module_depends_only_on_leaves() {
    let graph = module_graph();
    let uses = &graph["error"];
    assert_eq!(
        uses.iter().map(String::as_str).collect::<Vec<_>>(),
        ["redact", "time::format"]
    );
    for leaf in uses {
        assert_eq!(graph[leaf], BTreeSet::new(), "{leaf} uses modules");
    }
}

#[test]
fn the_guard_reaches_hosts_through_the_lifecycle_and_the_lifecycle_knows_no_guard() {
    let graph = module_graph();
    assert!(graph["guard"].contains("lifecycle"), "{:?}", graph["guard"]);
    for module in ["guard", "lifecycle", "request"] {
        assert!(
            !graph[module].contains("broker"),
            "{module} uses the facade"
        );
    }
    assert!(
        !graph["lifecycle"].contains("guard"),
        "{:?}",
        graph["lifecycle"]
    );
    assert!(
        !graph["request"].contains("lifecycle"),
        "{:?}",
        graph["request"]
    );
}

#[test]
fn the_checker_sees_a_cycle_and_uses_through_groups_and_re_exports() {
    let files = [
        ("lib.rs", "mod a;\nmod b;\npub use a::{Thing, Other};\n"),
        (
            "a.rs",
            "use crate::b::{self, deep::{X}};\n// crate::c in a comment\n",
        ),
        ("b.rs", "fn f() -> crate::Thing { todo!() }\n"),
        (
            "b/deep.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
        ),
    ];
    let graph = graph_of(files.iter().map(|(p, t)| (p.to_string(), t.to_string())));
    assert_eq!(graph["a"], BTreeSet::from(["b".into(), "b::deep".into()]));
    assert_eq!(graph["b"], BTreeSet::from(["a".into()]));
    assert_eq!(graph["b::deep"], BTreeSet::new());
    assert_eq!(cycles(&graph), [vec!["a".to_owned(), "b".to_owned()]]);
}

/// The graph of broker-core's own sources.
fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect_files(&src, &src, &mut files);
    graph_of(files.into_iter())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The graph of files given as (path under `src`, text).
fn graph_of(files: impl Iterator<Item = (String, String)>) -> Graph {
    let mut code: BTreeMap<String, String> = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for (path, text) in files {
        let module = module_of(&path);
        let (production, tests) = split_tests(&text);
        for child in tests {
            test_only.insert(join_path(&module, &child));
        }
        code.insert(module, production);
    }
    code.retain(|m, _| !test_only.contains(m) && m != "module_graph");
    let re_exports = re_exports(code.get("").map_or("", String::as_str));
    let modules: BTreeSet<String> = code.keys().cloned().collect();
    code.iter()
        .filter(|(m, _)| !m.is_empty())
        .map(|(module, text)| {
            let uses = crate_paths(text)
                .into_iter()
                .filter_map(|p| resolve(&p, &modules, &re_exports))
                .filter(|used| used != module && !used.is_empty())
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// `inventory/blocks.rs` → `inventory::blocks`; `lib.rs` → the root, ``.
fn module_of(path: &str) -> String {
    let path = path.trim_end_matches(".rs");
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !matches!(*p, "lib" | "mod"))
        .collect();
    parts.join("::")
}

/// The code of a file without comments and inline test modules (which come last), and the names of
/// the child modules it declares for tests only.
fn split_tests(text: &str) -> (String, Vec<String>) {
    let mut code = String::new();
    let mut test_children = Vec::new();
    let mut after_cfg_test = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let trimmed = line.trim();
        if after_cfg_test && let Some(rest) = trimmed.strip_prefix("mod ") {
            match rest.strip_suffix(';') {
                Some(child) => test_children.push(child.trim().to_owned()),
                None => break,
            }
        }
        after_cfg_test = trimmed == "#[cfg(test)]";
        code.push_str(line);
        code.push('\n');
    }
    (code, test_children)
}

/// The names lib.rs re-exports, by the module that defines them.
fn re_exports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in paths_after(lib, "pub use ") {
        if let Some((module, name)) = path.rsplit_once("::") {
            out.insert(name.to_owned(), module.to_owned());
        }
    }
    out
}

/// Every `crate::…` path in `text`, with `{…}` groups expanded.
fn crate_paths(text: &str) -> Vec<String> {
    paths_after(text, "crate::")
}

/// The paths following each `marker`, groups expanded (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn paths_after(text: &str, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + marker.len()..];
        if !preceded_by_ident {
            let (paths, used) = parse_tree(rest);
            out.extend(paths);
            rest = &rest[used..];
        }
    }
    out
}

/// Parses a use tree at the start of `text`: its paths and how many bytes it took.
fn parse_tree(text: &str) -> (Vec<String>, usize) {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut prefix = String::new();
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if bytes.get(at) == Some(&b'{') {
            at += 1;
            let mut paths = Vec::new();
            loop {
                let (inner, used) = parse_tree(&text[at..]);
                at += used;
                paths.extend(inner.into_iter().map(|p| match p.as_str() {
                    "self" => prefix.clone(),
                    _ => join_path(&prefix, &p),
                }));
                while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                match bytes.get(at) {
                    Some(b',') => at += 1,
                    Some(b'}') => return (paths, at + 1),
                    _ => return (paths, at),
                }
                while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                if bytes.get(at) == Some(&b'}') {
                    return (paths, at + 1);
                }
            }
        }
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        let segment = &text[start..at];
        if segment.is_empty() {
            return (
                vec![prefix].into_iter().filter(|p| !p.is_empty()).collect(),
                at,
            );
        }
        prefix = join_path(&prefix, segment);
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![prefix], at);
        }
    }
}

fn join_path(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else {
        format!("{prefix}::{segment}")
    }
}

/// The module a path names or names an item of: the longest prefix that is a module, or for a name
/// re-exported at the root, the module it comes from.
fn resolve(
    path: &str,
    modules: &BTreeSet<String>,
    re_exports: &BTreeMap<String, String>,
) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    for n in (1..=segments.len()).rev() {
        let candidate = segments[..n].join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    let first = segments.first()?;
    re_exports
        .get(*first)
        .and_then(|m| resolve(m, modules, &BTreeMap::new()))
}

/// The strongly connected components with more than one module (Tarjan's algorithm), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.found
}
