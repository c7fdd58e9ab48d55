//! The seams of the server crate that the compiler does not enforce
//! (docs/ARCHITECTURE.md, "The server crate"): the router-side library never
//! imports the client commands (`switchyard-cli`, which only `main.rs`
//! dispatches to), the transports never import the configuration
//! (they take plain `Settings`), the cluster neither, and the router core
//! does not depend on a NATS client.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` names `path` (a whole path segment: `switchyard_cli` is
/// not `switchyard_client`).
fn names(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + path.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// The files under `src/<under>` whose code (comments aside) names `needle`.
fn offenders(under: &str, needle: &str, skip: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(under), &mut files);
    files
        .into_iter()
        .filter(|f| !skip.iter().any(|s| f.ends_with(s)))
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::trim_start)
                .filter(|l| !l.starts_with("//"))
                .any(|l| names(l, needle))
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn the_router_side_does_not_import_the_client_commands() {
    let found = offenders("", "switchyard_cli", &["src/main.rs"]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_transports_do_not_import_the_configuration() {
    let found = offenders("transport", "crate::config", &[]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_cluster_does_not_import_the_configuration() {
    // cluster/ owns its [cluster] section (cluster/config.rs); config.rs
    // embeds it, never the other way round.
    let found = offenders("cluster", "crate::config", &[]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_router_core_does_not_depend_on_nats() {
    // The cluster reaches the router through its Backplane seam only.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("router manifest");
    assert!(!text.contains("nats"), "{}", manifest.display());
}
