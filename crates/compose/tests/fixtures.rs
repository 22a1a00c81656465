//! Every shared fixture loads, and (when the docker CLI is on PATH) prints the same
//! YAML value as `docker stack config -c <fixture>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_compose::{LoadOptions, load};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/stacks")
}

fn fixtures() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let mut out = Vec::new();
    for sub in [dir.clone(), dir.join("docker-cli")] {
        let entries =
            std::fs::read_dir(&sub).unwrap_or_else(|e| panic!("read {}: {e}", sub.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 5,
        "expected the shared fixtures in {}",
        dir.display()
    );
    out
}

/// The process environment: docker inherits it, so both sides interpolate alike.
fn env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[test]
fn every_fixture_loads() {
    for f in fixtures() {
        let opts = LoadOptions {
            files: vec![f.display().to_string()],
            env: env(),
            skip_interpolation: false,
        };
        let p = load(&opts).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!p.services.is_empty(), "{}: no services", f.display());
        assert_eq!(p.working_dir, f.parent().expect("dir"));
    }
}

/// A docker CLI whose `stack config` works client-side (CLI 20.10 has no such command).
fn docker_available() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let probe = dir.path().join("probe.yml");
    if std::fs::write(&probe, "services: {}\n").is_err() {
        return false;
    }
    Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(&probe)
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("version:")
        })
}

fn docker_config(f: &Path, skip: bool) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(["stack", "config", "-c"]).arg(f);
    if skip {
        cmd.arg("--skip-interpolation");
    }
    let out = cmd.output().expect("run docker");
    assert!(
        out.status.success(),
        "docker stack config {}: {}",
        f.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn to_yaml_matches_docker_stack_config() {
    if !docker_available() {
        println!(
            "note: docker CLI not on PATH; skipping the comparison with `docker stack config`"
        );
        return;
    }
    for skip in [false, true] {
        for f in fixtures() {
            let theirs = docker_config(&f, skip);
            let opts = LoadOptions {
                files: vec![f.display().to_string()],
                env: env(),
                skip_interpolation: skip,
            };
            let ours = load(&opts)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                .to_yaml();
            let a: yaml_serde::Value = yaml_serde::from_str(&ours)
                .unwrap_or_else(|e| panic!("ours {}: {e}\n{ours}", f.display()));
            let b: yaml_serde::Value = yaml_serde::from_str(&theirs).expect("theirs");
            assert_eq!(
                a,
                b,
                "{} (skip_interpolation={skip})\n--- ours\n{ours}\n--- docker\n{theirs}",
                f.display()
            );
            // Beyond the value, the text itself is docker's.
            assert_eq!(ours, theirs, "{}: same value, different text", f.display());
        }
    }
}
