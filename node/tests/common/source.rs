//! The workspace's Rust sources read as text: files, module paths, the paths each file
//! uses (`use` trees with braces, `crate::`/`super::`/`self::` and child-module paths;
//! tests, comments and literals left out), and the cycles of a graph. For the tests of
//! the code's shape (`structure.rs`) and of the docs that describe it (`docs.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first fenced code block opened by `fence` (such as "```html") after `heading`
/// in the workspace document `doc`: what a reader copies from it.
pub fn doc_code_block(doc: &str, heading: &str, fence: &str) -> String {
    let text = std::fs::read_to_string(workspace().join(doc)).unwrap();
    let section = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{doc} has no {heading:?}"))..];
    let open = format!("{fence}\n");
    let block = &section[section
        .find(&open)
        .unwrap_or_else(|| panic!("{doc}: no {fence} block after {heading:?}"))
        + open.len()..];
    block[..block.find("```").expect("the block's end")].to_string()
}

/// Every crate's `src` folder in the workspace.
pub fn crate_sources() -> Vec<PathBuf> {
    let ws = workspace();
    let mut dirs = vec![ws.join("node/src"), ws.join("bench/src")];
    for entry in std::fs::read_dir(ws.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            dirs.push(src);
        }
    }
    dirs
}

pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a file under `src` (`a/b.rs` and `a/b/mod.rs` are `[a, b]`;
/// `lib.rs` and `main.rs` are the root).
pub fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file that defines a module path, if any.
pub fn file_of(src: &Path, module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|p| p.is_file());
    }
    let base = module.iter().fold(src.to_path_buf(), |p, m| p.join(m));
    [base.with_extension("rs"), base.join("mod.rs")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The code of a file without its test module, comments and the contents of string
/// and character literals.
pub fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            chars.get(j) == Some(&'"')
        } {
            // A raw string: r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..(i + 12).min(chars.len())).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into its paths.
pub fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| {
            expand_use(p)
                .into_iter()
                .map(|sub| match sub.as_str() {
                    "self" => prefix.to_string(),
                    _ => format!("{prefix}::{sub}"),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every path a file names that may lead to another file of its crate.
pub fn paths_in(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        let Some(end) = after.find(';') else { break };
        if before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ';') {
            for p in expand_use(&after[..end]) {
                out.push(p.split("::").map(|s| s.trim().to_string()).collect());
            }
        }
        rest = &after[end..];
    }
    // Paths in the code itself.
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let at_word = (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !(bytes[i - 1] as char).is_ascii_alphanumeric() && bytes[i - 1] != b'_');
        if at_word {
            let mut j = i;
            while j < bytes.len()
                && ((bytes[j] as char).is_ascii_alphanumeric()
                    || bytes[j] == b'_'
                    || (bytes[j] == b':' && j + 1 < bytes.len() && bytes[j + 1] == b':'))
            {
                j += if bytes[j] == b':' { 2 } else { 1 };
            }
            let word = &code[i..j];
            let parts: Vec<String> = word.split("::").map(str::to_string).collect();
            let head = parts[0].as_str();
            if parts.len() > 1
                && (matches!(head, "crate" | "super" | "self") || children.contains(head))
            {
                out.push(parts);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The files of `src` and the files each one uses.
pub fn import_graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l
                    .trim()
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                l.strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
                    .map(str::to_string)
            })
            .collect();
        let is_root = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
        // `super` of a file: its module's parent.
        let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
        let mut uses = BTreeSet::new();
        for path in paths_in(&code, &children) {
            let mut target: Vec<String> = match path[0].as_str() {
                "crate" => Vec::new(),
                "super" => parent.clone(),
                "self" => module.clone(),
                _ => module.clone(),
            };
            let mut rest = &path[..];
            if matches!(path[0].as_str(), "crate" | "super" | "self") {
                rest = &path[1..];
            }
            let mut supers = rest;
            while supers.first().map(String::as_str) == Some("super") {
                target.pop();
                supers = &supers[1..];
            }
            // The deepest module of the path that is a file of this crate.
            let mut found = file_of(src, &target);
            for name in supers {
                target.push(name.clone());
                match file_of(src, &target) {
                    Some(f) => found = Some(f),
                    None => break,
                }
            }
            if let Some(f) = found {
                if f != file {
                    uses.insert(f);
                }
            }
        }
        let _ = is_root;
        graph.insert(file, uses);
    }
    graph
}

/// Whether `root` is the `mod.rs` (or `lib.rs`) of a folder that holds `file`.
pub fn is_root_of_a_folder_of(root: &Path, file: &Path) -> bool {
    let name = root.file_name().unwrap_or_default();
    (name == "mod.rs" || name == "lib.rs" || name == "main.rs")
        && file.starts_with(root.parent().unwrap())
}

/// The cycles of a graph (strongly connected components of more than one file).
pub fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}
