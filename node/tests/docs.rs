//! The documents that describe the code, held against the code: ARCHITECTURE.md's
//! module table (every module of the node, and the modules each one imports), its
//! table of unsafe code (every file with an `unsafe` block), docs/configuration.md's
//! table (every key, with its default, as the configuration types define them), and
//! the README's links into docs/ (each one there, each document linked). A change that
//! makes one of them untrue fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::source::*;

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap()
}

/// The rows of the first markdown table after the line that starts with `header`:
/// each row's cells, trimmed.
fn table_after(text: &str, header: &str) -> Vec<Vec<String>> {
    let start = text
        .find(header)
        .unwrap_or_else(|| panic!("no table headed {header:?}"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The names in backticks in a cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// Each top module of the node's library and the other top modules it imports.
fn node_modules() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("node/src");
    let top = |f: &Path| module_of(&src, f).first().cloned();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, uses) in import_graph(&src) {
        let Some(from) = top(&file) else { continue };
        if from == "main" {
            continue;
        }
        let entry = out.entry(from.clone()).or_default();
        for u in uses {
            if let Some(to) = top(&u) {
                if to != from {
                    entry.insert(to);
                }
            }
        }
    }
    out
}

#[test]
fn architecture_lists_every_module_with_what_it_imports() {
    let code = node_modules();
    let rows = table_after(
        &read("ARCHITECTURE.md"),
        "| module | owns | imports (crate modules) |",
    );
    let mut documented = BTreeMap::new();
    for row in &rows {
        let name = backticked(&row[0])[0].trim_end_matches('/').to_string();
        let imports: BTreeSet<String> = if row[2] == "none" {
            BTreeSet::new()
        } else {
            backticked(&row[2]).into_iter().collect()
        };
        documented.insert(name, imports);
    }
    let missing: Vec<_> = code
        .keys()
        .filter(|m| !documented.contains_key(*m))
        .collect();
    let gone: Vec<_> = documented
        .keys()
        .filter(|m| !code.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "ARCHITECTURE.md's module table lacks {missing:?} and lists modules that do not exist: {gone:?}"
    );
    let wrong: Vec<String> = code
        .iter()
        .filter(|(m, imports)| documented[*m] != **imports)
        .map(|(m, imports)| {
            format!(
                "{m}: the table says {:?}, the code imports {imports:?}",
                documented[m]
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md's imports column: {wrong:#?}"
    );
}

#[test]
fn architecture_names_every_file_with_unsafe_code() {
    let arch = read("ARCHITECTURE.md");
    let section = &arch[arch.find("## Unsafe code").expect("an Unsafe code section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut unnamed = Vec::new();
    let mut found = 0;
    for src in crate_sources() {
        for file in rust_files(&src) {
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            if ["unsafe {", "unsafe fn", "unsafe impl"]
                .iter()
                .any(|u| code.contains(u))
            {
                found += 1;
                let rel = file
                    .strip_prefix(&src)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                if !section.contains(&format!("`{rel}`")) {
                    unnamed.push(file.display().to_string());
                }
            }
        }
    }
    assert!(
        found > 0,
        "the search found no unsafe code at all: it reads nothing"
    );
    assert!(
        unnamed.is_empty(),
        "files with unsafe code that ARCHITECTURE.md's Unsafe code table does not name: {unnamed:?}"
    );
}

/// A default as docs/configuration.md shows it: TOML's value, strings without quotes (`""` for an
/// empty one).
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if s.is_empty() => "\"\"".into(),
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_configuration_table_is_the_configuration() {
    let defaults = toml::Value::try_from(streamgate::config::Config::default()).unwrap();
    let mut keys = BTreeMap::new();
    for (section, table) in defaults.as_table().unwrap() {
        for (key, value) in table.as_table().unwrap() {
            keys.insert(format!("{section}.{key}"), shown(value));
        }
    }
    let rows = table_after(
        &read("docs/configuration.md"),
        "| key | default | meaning |",
    );
    let mut documented = BTreeMap::new();
    for row in &rows {
        let names = backticked(&row[0]);
        assert_eq!(names.len(), 1, "one key a row: {row:?}");
        let default = backticked(&row[1]).into_iter().next().unwrap_or_default();
        assert!(
            documented.insert(names[0].clone(), default).is_none(),
            "{} twice",
            names[0]
        );
        assert!(row[2].len() > 3, "{} says what it does", names[0]);
    }
    let missing: Vec<_> = keys
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let unknown: Vec<_> = documented
        .keys()
        .filter(|k| !keys.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md's table lacks {missing:?} and lists keys that do not exist: {unknown:?}"
    );
    let wrong: Vec<String> = keys
        .iter()
        .filter(|(k, v)| documented[*k] != **v)
        .map(|(k, v)| {
            format!(
                "{k}: docs/configuration.md says {:?}, the default is {v:?}",
                documented[k]
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's defaults: {wrong:#?}"
    );
}

/// The LICENSE file is the license Cargo.toml names.
#[test]
fn the_license_file_is_the_one_cargo_toml_names() {
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("license = \"Apache-2.0\""),
        "Cargo.toml's license changed: update LICENSE"
    );
    let license = read("LICENSE");
    assert!(
        license.trim_start().starts_with("Apache License")
            && license.contains("Version 2.0, January 2004"),
        "LICENSE is not the Apache License 2.0 that Cargo.toml names"
    );
}

/// The README stays what a newcomer needs, and links every document of docs/; every
/// relative link of the documents names a file that exists.
#[test]
fn the_readme_is_short_and_every_document_is_linked() {
    let readme = read("README.md");
    assert!(
        readme.lines().count() <= 120,
        "README.md has {} lines: the rest belongs in docs/",
        readme.lines().count()
    );
    for section in [
        "## The two commands",
        "## Go live in one minute",
        "## Read next",
    ] {
        assert!(readme.contains(section), "README lacks {section}");
    }
    let mut docs: Vec<String> = std::fs::read_dir(workspace().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 7, "{docs:?}");
    for doc in &docs {
        assert!(
            readme.contains(&format!("](docs/{doc})")),
            "README does not link docs/{doc}"
        );
    }
    for (file, dir) in std::iter::once(("README.md".to_string(), "".to_string())).chain(
        docs.iter()
            .map(|d| (format!("docs/{d}"), "docs/".to_string())),
    ) {
        for target in markdown_links(&read(&file)) {
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.contains("://") {
                continue;
            }
            assert!(
                workspace().join(&dir).join(path).exists(),
                "{file} links {target}, which does not exist"
            );
        }
    }
}

/// The targets of the markdown links `[text](target)` of `text`.
fn markdown_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// `rust-version` in Cargo.toml is the real minimum: no lower than the highest minimum
/// any crate the node builds with declares (what a toolchain older than that fails
/// on), and no higher (what the node itself needs from std is held to it by clippy's
/// `incompatible_msrv` lint, which reads the same field).
#[test]
fn rust_version_is_the_highest_minimum_of_the_node_and_its_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&cargo)
            .args(args)
            .current_dir(workspace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let tree = run(&[
        "tree",
        "--offline",
        "-p",
        "streamgate",
        "-e",
        "normal,build",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--prefix",
        "none",
        "-f",
        "{p}",
    ]);
    let built: std::collections::BTreeSet<String> = tree
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(format!(
                "{} {}",
                w.next()?,
                w.next()?.trim_start_matches('v')
            ))
        })
        .collect();
    let metadata: serde_json::Value =
        serde_json::from_str(&run(&["metadata", "--offline", "--format-version", "1"])).unwrap();
    let version = |v: &str| -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap_or(0))
    };
    let (highest, by) = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        // The crates.io ones (the workspace's own crates inherit the field under test).
        .filter(|p| !p["source"].is_null())
        .filter(|p| {
            built.contains(&format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            ))
        })
        .filter_map(|p| {
            Some((
                version(p["rust_version"].as_str()?),
                p["name"].as_str().unwrap().to_string(),
            ))
        })
        .max()
        .unwrap();
    assert!(built.len() > 100, "{}", built.len());
    let manifest = read("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    assert_eq!(
        version(declared),
        highest,
        "Cargo.toml says rust-version = {declared}; the highest minimum among the node's crates is {}.{} ({by})",
        highest.0,
        highest.1
    );
}
