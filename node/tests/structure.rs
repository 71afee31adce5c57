//! The shape of the code, checked: no source file over [`MAX_LINES`] lines, and no
//! import cycle at any level, neither between the top modules of a crate nor between
//! the files of one folder (a file that uses another that uses it back, directly or
//! around a longer loop). Files are read as text: `use` declarations (braces
//! expanded) and paths in the code (`crate::`, `super::`, `self::`, a child module's
//! name), test modules and comments left out.
//!
//! One kind of reference does not count towards a cycle: a file's use of the root of
//! a folder it is in (`super::Item` defined in the folder's `mod.rs`, or the crate's
//! `lib.rs`). A folder's root declares the names its files share and wires them
//! together; that is how a Rust folder is built, not a loop between peers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::source::*;

/// The most lines a source file may have.
const MAX_LINES: usize = 700;

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for src in crate_sources() {
        for f in rust_files(&src) {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            if n > MAX_LINES {
                long.push(format!("{} ({n} lines)", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn no_import_cycle_between_files_or_modules() {
    let mut found = Vec::new();
    for src in crate_sources() {
        let graph = import_graph(&src);
        assert!(
            graph.values().map(BTreeSet::len).sum::<usize>() > 0 || graph.len() < 3,
            "no imports read in {}: the checker reads nothing",
            src.display()
        );
        // Files: without the uses of a folder's own root.
        let files: BTreeMap<PathBuf, BTreeSet<PathBuf>> = graph
            .iter()
            .map(|(f, uses)| {
                let kept = uses
                    .iter()
                    .filter(|u| !is_root_of_a_folder_of(u, f))
                    .cloned()
                    .collect();
                (f.clone(), kept)
            })
            .collect();
        for c in cycles(&files) {
            found.push(format!("files: {c:?}"));
        }
        // Top modules: every file counts for the module it is in.
        let top = |f: &Path| -> PathBuf {
            module_of(&src, f)
                .first()
                .map_or_else(|| PathBuf::from("<root>"), PathBuf::from)
        };
        let mut modules: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (f, uses) in &graph {
            let from = top(f);
            let entry = modules.entry(from.clone()).or_default();
            for u in uses {
                let to = top(u);
                if to != from && to != Path::new("<root>") && from != Path::new("<root>") {
                    entry.insert(to);
                }
            }
        }
        for c in cycles(&modules) {
            found.push(format!("modules of {}: {c:?}", src.display()));
        }
    }
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

/// The checker itself: it reads `use` trees with braces and `super`, and finds a loop
/// between two files of one folder (what it is there to catch).
#[test]
fn the_checker_finds_a_cycle_between_two_files() {
    let dir = std::env::temp_dir().join(format!("sg-structure-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod x;\npub mod y;\npub struct Shared;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a/x.rs"),
        "use super::{y::Y, Shared};\npub struct X;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a/y.rs"),
        "pub struct Y;\nfn f() { let _ = super::x::X; }\n",
    )
    .unwrap();
    let graph = import_graph(&src);
    let x = src.join("a/x.rs");
    let y = src.join("a/y.rs");
    assert!(
        graph[&x].contains(&y) && graph[&y].contains(&x),
        "{graph:#?}"
    );
    assert!(graph[&x].contains(&src.join("a/mod.rs")));
    assert!(is_root_of_a_folder_of(&src.join("a/mod.rs"), &x));
    assert_eq!(cycles(&graph).len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
