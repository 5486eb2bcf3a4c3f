//! Records the git commit for `hallpass_build_info` (HALLPASS_COMMIT may be given instead,
//! e.g. by a container build that has no .git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HALLPASS_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if std::env::var("HALLPASS_COMMIT").is_ok() {
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=HALLPASS_COMMIT={commit}");
    }
}
