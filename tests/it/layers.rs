//! The layers of `src/` point one way. Every path to another top-level module (`crate::x`, or
//! `super::…::x` that climbs to the crate root) is an edge between top-level modules; the graph
//! must have no cycle, and the bottom layers (`cloud`, `policy`, `ledger`, `config`) must never
//! reach up to the daemon or the commands. Across crates: the emulator (`crates/ecs-emulator`)
//! stands beside the product and may use only the shared wire crate (`crates/ecs-wire`); the
//! library never uses the emulator (only the binary's demo, bench and `emulator` command do).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → what it may never use.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "cloud",
        &[
            "policy",
            "ledger",
            "config",
            "reconcile",
            "daemon",
            "commands",
            "metrics",
            "accounts",
        ],
    ),
    (
        "policy",
        &[
            "ledger",
            "config",
            "reconcile",
            "daemon",
            "commands",
            "metrics",
            "accounts",
        ],
    ),
    (
        "ledger",
        &[
            "config",
            "reconcile",
            "daemon",
            "commands",
            "metrics",
            "accounts",
        ],
    ),
    (
        "config",
        &[
            "ledger",
            "reconcile",
            "daemon",
            "commands",
            "metrics",
            "accounts",
        ],
    ),
    (
        "accounts",
        &["ledger", "reconcile", "daemon", "commands", "metrics"],
    ),
    ("reconcile", &["daemon", "commands"]),
    ("daemon", &["commands"]),
    ("metrics", &["daemon", "commands", "reconcile", "accounts"]),
];

/// One use of another top-level module: where, and which.
struct Use {
    file: PathBuf,
    line: usize,
    target: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file below `src/` (`policy/decide.rs` → [policy, decide];
/// `daemon/admin/mod.rs` → [daemon, admin]).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every top-level module a file's paths reach, with the line.
fn uses_in(file: &Path, module: &[String], tops: &BTreeSet<String>) -> Vec<Use> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let target = ident(&rest[at + 7..]);
            if tops.contains(target) {
                found.push(Use {
                    file: file.to_owned(),
                    line: n + 1,
                    target: target.to_owned(),
                });
            }
            rest = &rest[at + 7..];
        }
        // `super::super::x` from depth 2 (or `super::x` from depth 1) names crate::x.
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            let mut tail = &rest[at..];
            let mut climbs = 0;
            while let Some(next) = tail.strip_prefix("super::") {
                climbs += 1;
                tail = next;
            }
            if climbs >= module.len() {
                let target = ident(tail);
                if tops.contains(target) {
                    found.push(Use {
                        file: file.to_owned(),
                        line: n + 1,
                        target: target.to_owned(),
                    });
                }
            }
            rest = &rest[at + 7 * climbs..];
        }
    }
    found
}

/// Top-level module → the top-level modules it uses.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate whose sources are in `src` and every use behind each edge
/// (with the module it is in); the binary's files (`bin/`) and `lib.rs` are left out.
fn graph_of(src: &Path) -> (Edges, Vec<(String, Use)>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .map(|f| module_path(f.strip_prefix(src).unwrap())[0].clone())
        .filter(|m| m != "bin" && m != "lib")
        .collect();
    let mut edges = Edges::new();
    let mut uses = Vec::new();
    for file in &files {
        let module = module_path(file.strip_prefix(src).unwrap());
        let top = module[0].clone();
        if top == "bin" || top == "lib" {
            continue;
        }
        for found in uses_in(file, &module, &tops) {
            if found.target != top {
                edges
                    .entry(top.clone())
                    .or_default()
                    .insert(found.target.clone());
                uses.push((top.clone(), found));
            }
        }
    }
    (edges, uses)
}

/// The daemon's module graph.
fn graph() -> (Edges, Vec<(String, Use)>) {
    graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// A cycle through `start`, if there is one.
fn cycle_from(edges: &Edges, start: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    for next in edges.get(path.last().unwrap()).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(edges, start, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (edges, _) = graph();
    assert!(edges.len() >= 8, "the scan found the modules: {edges:?}");
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&edges, start, &mut path) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_emulators_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/ecs-emulator/src");
    let (edges, _) = graph_of(&src);
    assert!(edges.len() >= 8, "the scan found the modules: {edges:?}");
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&edges, start, &mut path) {
            panic!("emulator module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_layer_reaches_up() {
    let (_, uses) = graph();
    let mut wrong = Vec::new();
    for (from, found) in &uses {
        let forbidden = FORBIDDEN
            .iter()
            .find(|(m, _)| m == from)
            .is_some_and(|(_, never)| never.contains(&found.target.as_str()));
        if forbidden {
            wrong.push(format!(
                "{}:{}: {from} uses {}",
                found.file.display(),
                found.line,
                found.target
            ));
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_an_upward_import_when_there_is_one() {
    // The scanner itself: a path to the emulator from the policy layer, written both ways.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decide.rs");
    std::fs::write(
        &file,
        "use crate::emulator::world::x;\nfn f() { super::super::daemon::g() } // crate::commands\n",
    )
    .unwrap();
    let tops: BTreeSet<String> = ["emulator", "daemon", "commands", "policy"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let module = vec!["policy".to_owned(), "decide".to_owned()];
    let found: Vec<(usize, String)> = uses_in(&file, &module, &tops)
        .into_iter()
        .map(|u| (u.line, u.target))
        .collect();
    assert_eq!(
        found,
        [(1, "emulator".to_owned()), (2, "daemon".to_owned())],
        "a comment does not count"
    );
}

/// The `[dependencies]` section of a manifest, as text.
fn dependencies_of(manifest: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest)).unwrap();
    let start = text
        .find("[dependencies]")
        .expect("a [dependencies] section");
    let rest = &text[start + "[dependencies]".len()..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
}

#[test]
fn the_emulator_stands_apart_from_the_product() {
    // The emulator and the wire crate never depend on the daemon; the wire crate not on the
    // emulator either (the emulator is built on it, not the other way round).
    let emulator = dependencies_of("crates/ecs-emulator/Cargo.toml");
    assert!(emulator.contains("ecs-wire"), "{emulator}");
    assert!(!emulator.contains("ecs-renewd"), "{emulator}");
    let wire = dependencies_of("crates/ecs-wire/Cargo.toml");
    assert!(
        !wire.contains("ecs-renewd") && !wire.contains("ecs-emulator"),
        "{wire}"
    );
    // No source of the emulator or the wire crate names the daemon's library.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    assert!(
        files.len() >= 10,
        "the scan found the crates' files: {files:?}"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("ecs_renewd"),
            "{} names ecs_renewd",
            file.display()
        );
    }
    // The library (all of src/ but the binary) never names the emulator: the product does not
    // carry it, and no decision can depend on it.
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let library: Vec<_> = files
        .iter()
        .filter(|f| !f.starts_with(root.join("src/bin")))
        .collect();
    assert!(
        library.len() >= 30,
        "the scan found the library: {library:?}"
    );
    let wrong: Vec<String> = library
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.split("//").next().unwrap_or("").contains("ecs_emulator"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(wrong.is_empty(), "the library uses the emulator: {wrong:?}");
}

/// The phases of a pass, in the order the roof (`pass/mod.rs`) runs them.
const PHASES: &[&str] = &[
    "observe",
    "settle",
    "price_and_belts",
    "act",
    "verify_and_auto_renew",
    "forecast",
    "publish",
];

/// Every path a file names after `prefix` (e.g. `super::`), each as its segments: `use
/// super::{a::B, c}` gives `[a, B]` and `[c]`. Comments and the unit tests (from
/// `#[cfg(test)]` on, where `super::` is the file itself) do not count.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let code_end = text.find("#[cfg(test)]").unwrap_or(text.len());
    for line in text[..code_end].lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            found.extend(expand(rest));
        }
    }
    found
}

/// The paths at the start of `text`: `a::b::C`, or `a::{B, c::D}` (one level of braces).
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut head = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            return inner
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    let mut path = head.clone();
                    path.extend(item.split("::").map(|s| ident(s.trim()).to_owned()));
                    path
                })
                .collect();
        }
        let name = ident(rest);
        if name.is_empty() {
            return vec![head];
        }
        head.push(name.to_owned());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => return vec![head],
        }
    }
}

/// The file stems (module names) of the `.rs` files directly in `dir`, `mod` left out.
fn modules_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "mod")
        .collect()
}

/// What is wrong with the imports of one file under `src/reconcile/`, given its tier.
fn tier_problems(file: &str, text: &str, steps: &BTreeSet<String>, leaves: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let phase = file
        .strip_prefix("pass/")
        .map(|f| f.trim_end_matches(".rs"));
    let facade = |name: &str| !steps.contains(name) && name != "pass";
    for path in paths_after(text, "crate::reconcile::") {
        let first = path.first().map(String::as_str).unwrap_or("");
        if first == "pass" && file != "pass/mod.rs" {
            problems.push(format!(
                "{file}: names the pass (`crate::reconcile::{}`)",
                path.join("::")
            ));
        } else if facade(first) {
            problems.push(format!(
                "{file}: uses the facade's `{first}` instead of its module"
            ));
        }
    }
    for path in paths_after(text, "super::") {
        let first = path.first().map(String::as_str).unwrap_or("");
        match phase {
            None if !steps.contains(first) && first != "*" => {
                problems.push(format!("{file}: uses `super::{first}`, not a step module"));
            }
            Some("mod") | None => {}
            Some(me) if first == "*" => {
                problems.push(format!("{file}: glob import from the roof in phase {me}"));
            }
            Some(me) => {
                let earlier = |p: &str| {
                    let index = |x: &str| PHASES.iter().position(|q| *q == x);
                    matches!((index(p), index(me)), (Some(a), Some(b)) if a < b)
                };
                if leaves.contains(&first) {
                    continue;
                }
                if !PHASES.contains(&first) {
                    problems.push(format!("{file}: uses the roof's `{first}` (a phase may use only leaves and earlier phases)"));
                } else if !earlier(first) {
                    problems.push(format!("{file}: uses the phase {first}, which runs later"));
                } else if let Some(item) =
                    path.get(1).filter(|i| !i.starts_with(char::is_uppercase))
                {
                    problems.push(format!("{file}: uses `{first}::{item}`, a function of another phase (a phase takes only an earlier phase's output types)"));
                }
            }
        }
    }
    problems
}

#[test]
fn inside_reconcile_the_arrows_point_down_phase_to_step_to_policy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/reconcile");
    let steps = modules_in(&dir);
    let in_pass = modules_in(&dir.join("pass"));
    // No name twice: a step and a phase never share a file name.
    let twice: Vec<&String> = steps.intersection(&in_pass).collect();
    assert!(
        twice.is_empty(),
        "file names used twice under src/reconcile/: {twice:?}"
    );
    let leaves: Vec<&str> = in_pass
        .iter()
        .map(String::as_str)
        .filter(|m| !PHASES.contains(m))
        .collect();
    assert!(
        PHASES.iter().all(|p| in_pass.contains(*p)),
        "every phase has its file: {in_pass:?}"
    );
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    for path in &files {
        let file = path
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        if file == "mod.rs" {
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                let definition = ["fn ", "struct ", "enum ", "impl ", "type ", "const "]
                    .iter()
                    .any(|k| line.contains(k));
                if definition {
                    problems.push(format!("mod.rs is a facade, yet defines: {line}"));
                }
            }
            continue;
        }
        problems.extend(tier_problems(&file, &text, &steps, &leaves));
    }
    assert!(
        problems.is_empty(),
        "arrows that point up inside src/reconcile/:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_tier_check_sees_an_arrow_up_when_there_is_one() {
    let steps: BTreeSet<String> = ["scan", "renew", "context"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let leaves = ["summary", "status_updates"];
    let phase = "use super::{earliest, summary::PassSummary};\nuse super::act::move_state;\nuse super::publish::Published;\nuse super::observe::Observed; // super::act::x\nuse crate::reconcile::PassContext;\n";
    assert_eq!(
        tier_problems("pass/verify_and_auto_renew.rs", phase, &steps, &leaves),
        [
            "pass/verify_and_auto_renew.rs: uses the facade's `PassContext` instead of its module",
            "pass/verify_and_auto_renew.rs: uses the roof's `earliest` (a phase may use only leaves and earlier phases)",
            "pass/verify_and_auto_renew.rs: uses `act::move_state`, a function of another phase (a phase takes only an earlier phase's output types)",
            "pass/verify_and_auto_renew.rs: uses the phase publish, which runs later",
        ]
    );
    let step = "use super::context::PassContext;\nuse crate::reconcile::pass::summary::PassSummary;\nuse super::Rows;\n";
    assert_eq!(
        tier_problems("renew.rs", step, &steps, &leaves),
        [
            "renew.rs: names the pass (`crate::reconcile::pass::summary::PassSummary`)",
            "renew.rs: uses `super::Rows`, not a step module",
        ]
    );
}
