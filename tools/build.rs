//! Records the git commit the binary is built from, for `opledger --version`.
//!
//! The commit comes from `git rev-parse --short HEAD` when the crate sits in
//! the opledger git checkout; anywhere else (a crates tarball, no git on the
//! machine) it is `unknown` rather than a failed build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `--version` names when there is no commit to read.
const COMMIT_UNKNOWN: &str = "unknown";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = if in_our_checkout(&manifest_dir) {
        watch_head(&manifest_dir);
        git(&manifest_dir, &["rev-parse", "--short", "HEAD"])
    } else {
        None
    };
    let commit = commit.unwrap_or_else(|| COMMIT_UNKNOWN.to_owned());
    println!("cargo:rustc-env=OPLEDGER_COMMIT={commit}");
}

/// The trimmed stdout of a successful `git ARGS` run in `dir`.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Whether `manifest_dir` is the `tools` directory of a git work tree: a
/// crate unpacked inside some other repository must not borrow its commit.
fn in_our_checkout(manifest_dir: &Path) -> bool {
    let Some(top) = git(manifest_dir, &["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    match (PathBuf::from(top).join("tools").canonicalize(), manifest_dir.canonicalize()) {
        (Ok(tools), Ok(manifest)) => tools == manifest,
        _ => false,
    }
}

/// Reruns the build script when HEAD moves: HEAD itself (a checkout), the
/// branch it points at (a commit), and packed-refs (a gc that packs it).
/// Only files that exist are named: cargo reruns a script on every build
/// while one of its named files is missing.
fn watch_head(manifest_dir: &Path) {
    let absolute = |path: String| {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            manifest_dir.join(path)
        }
    };
    let watch = |path: String| {
        let path = absolute(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    };
    if let Some(head) = git(manifest_dir, &["rev-parse", "--git-path", "HEAD"]) {
        watch(head);
    }
    if let Some(reference) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(manifest_dir, &["rev-parse", "--git-path", &reference]) {
            watch(path);
        }
    }
    if let Some(packed) = git(manifest_dir, &["rev-parse", "--git-path", "packed-refs"]) {
        watch(packed);
    }
}
