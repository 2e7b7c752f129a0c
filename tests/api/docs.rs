//! docs/architecture.md's module map stays true to the tree (issue 10), as docs/rbac.md does to
//! the permission matrix: every source file is on the page, and every source path on the page
//! exists. The rule, as the page states it above its layers table:
//!
//! - a `.rs` file under `src/`, `aggregates/src/` or `projections/src/` is covered when the
//!   page names its path from the repository root, or the path of the directory holding it
//!   with a trailing `/` (the files directly in it, not in its subdirectories; the three
//!   `src/` roots themselves cover nothing);
//! - every path on the page that starts with one of those roots exists (a directory when it
//!   ends in `/`).

use std::collections::BTreeSet;
use std::path::Path;

/// The directories whose source files the map must cover, from the repository root.
const SOURCE_ROOTS: &[&str] = &["src/", "aggregates/src/", "projections/src/"];

const DOC: &str = "docs/architecture.md";

/// The source paths `doc` names: each maximal run of path characters that starts with a source
/// root, less a sentence's closing `.`. A brace list (`src/{a,b}.rs`) or a placeholder
/// (`<name>/`) breaks a path there, so write paths out in full.
fn mentioned_paths(doc: &str) -> BTreeSet<String> {
    doc.split(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
        .map(|token| token.trim_end_matches('.'))
        .filter(|token| SOURCE_ROOTS.iter().any(|root| token.starts_with(root)))
        .map(str::to_owned)
        .collect()
}

/// What is wrong with the map: the source files it does not cover, and the source paths it
/// names that do not exist (`exists(path)`: whether `path`, from the repository root, is
/// there, and a directory when it ends in `/`). Both empty when the map is right.
#[derive(Debug, Default, PartialEq, Eq)]
struct MapProblems {
    uncovered: Vec<String>,
    stale: Vec<String>,
}

fn map_problems(doc: &str, source_files: &[String], exists: impl Fn(&str) -> bool) -> MapProblems {
    let mentioned = mentioned_paths(doc);
    let covered = |file: &str| {
        let directory = &file[..=file.rfind('/').unwrap_or(0)];
        mentioned.contains(file)
            || (!SOURCE_ROOTS.contains(&directory) && mentioned.contains(directory))
    };
    MapProblems {
        uncovered: source_files
            .iter()
            .filter(|file| !covered(file))
            .cloned()
            .collect(),
        stale: mentioned.into_iter().filter(|path| !exists(path)).collect(),
    }
}

impl std::fmt::Display for MapProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.uncovered.is_empty() {
            writeln!(
                f,
                "{DOC} does not cover these source files. Add each one's path to the table of \
                 its layer (or add the path of its directory, ending in `/`):"
            )?;
            for file in &self.uncovered {
                writeln!(f, "  - `{file}`")?;
            }
        }
        if !self.stale.is_empty() {
            writeln!(
                f,
                "{DOC} names source paths that do not exist. Correct or remove them:"
            )?;
            for path in &self.stale {
                writeln!(f, "  - `{path}`")?;
            }
        }
        Ok(())
    }
}

/// Every `.rs` file under `dir`, as a path from `root` with `/` separators.
fn rust_files(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(root, &path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            let parts: Vec<_> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            found.push(parts.join("/"));
        }
    }
}

#[test]
fn the_architecture_page_maps_every_source_file_and_no_missing_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(DOC)).expect(DOC);
    let mut files = Vec::new();
    for source_root in SOURCE_ROOTS {
        rust_files(root, &root.join(source_root), &mut files);
    }
    files.sort();
    assert!(
        files.len() > 100,
        "the walk found only {} files: {files:?}",
        files.len()
    );
    let exists = |path: &str| {
        let on_disk = root.join(path);
        if path.ends_with('/') {
            on_disk.is_dir()
        } else {
            on_disk.exists()
        }
    };
    let problems = map_problems(&doc, &files, exists);
    assert!(problems == MapProblems::default(), "\n{problems}");
}

#[test]
fn the_map_check_finds_uncovered_files_and_stale_paths() {
    let files: Vec<String> = [
        "src/lib.rs",
        "src/app/mod.rs",
        "src/app/orders.rs",
        "src/http/mod.rs",
        "src/http/deep/queries.rs",
        "projections/src/log.rs",
    ]
    .map(String::from)
    .to_vec();
    let exists = |path: &str| path != "src/cli.rs" && path != "src/gone/";
    let doc = "Layers: `src/lib.rs`, `src/app/mod.rs` and `src/http/`. Also `src/`, \
               `projections/src/{log.rs}`, `src/cli.rs`, src/gone/. See src/app/orders.rs.";
    // The directory covers its own files only, a root covers nothing, braces name nothing.
    assert_eq!(
        map_problems(doc, &files, exists),
        MapProblems {
            uncovered: vec![
                "src/http/deep/queries.rs".into(),
                "projections/src/log.rs".into()
            ],
            stale: vec!["src/cli.rs".into(), "src/gone/".into()],
        }
    );

    let covered = "`src/lib.rs` `src/app/` `src/http/` `src/http/deep/queries.rs` \
                   `projections/src/log.rs`";
    assert_eq!(
        map_problems(covered, &files, |_| true),
        MapProblems::default()
    );
}
