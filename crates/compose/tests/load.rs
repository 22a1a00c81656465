//! The loader's behaviour, one statement of the reference (stacks-secrets.md §1–3)
//! per test, through the public API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_compose::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_str(yaml: &str) -> Result<Project, LoadError> {
    load_from_bytes(yaml.as_bytes(), Path::new("/work/stack"), &BTreeMap::new())
}

fn load_env(yaml: &str, e: &[(&str, &str)]) -> Result<Project, LoadError> {
    load_from_bytes(yaml.as_bytes(), Path::new("/work/stack"), &env(e))
}

fn err(yaml: &str) -> String {
    load_str(yaml).expect_err("must fail").to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn no_files() {
    let e = load(&LoadOptions::default()).expect_err("no files");
    assert_eq!(
        e.to_string(),
        "Specify a Compose file (with --compose-file)"
    );
}

#[test]
fn missing_file_names_it() {
    let opts = LoadOptions {
        files: vec!["/nonexistent/x.yml".into()],
        ..LoadOptions::default()
    };
    assert_eq!(
        load(&opts).expect_err("missing").to_string(),
        "open /nonexistent/x.yml: no such file or directory"
    );
}

#[test]
fn top_level_must_be_a_mapping_with_string_keys() {
    assert_eq!(err("- a\n"), "top-level object must be a mapping");
    // docker 28 (the oracle) reports a numeric top-level key the same way.
    assert_eq!(err("123: x\n"), "top-level object must be a mapping");
}

#[test]
fn versions() {
    assert_eq!(load_str("services: {}\n").expect("ok").version, "3.13");
    assert_eq!(
        load_str("version: '3'\nservices: {}\n")
            .expect("ok")
            .version,
        "3.13"
    );
    assert_eq!(
        load_str("version: '3.8'\nservices: {}\n")
            .expect("ok")
            .version,
        "3.8"
    );
    assert_eq!(
        err("version: 3.8\nservices: {}\n"),
        "version must be a string"
    );
    assert_eq!(
        err("version: '2'\nservices: {}\n"),
        "unsupported Compose file version: 2"
    );
    assert_eq!(
        err("version: '1.0'\n"),
        "unsupported Compose file version: 1.0"
    );
}

#[test]
fn version_mismatch_between_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = write(dir.path(), "a.yml", "version: '3.8'\nservices: {}\n");
    let b = write(dir.path(), "b.yml", "services: {}\n");
    let opts = LoadOptions {
        files: vec![a, b],
        ..LoadOptions::default()
    };
    assert_eq!(
        load(&opts).expect_err("mismatch").to_string(),
        "version mismatched between two composefiles : 3.8 and 3.13"
    );
}

#[test]
fn forbidden_keys_before_interpolation() {
    // The bad template would fail interpolation: the forbidden check comes first.
    let e = err("services:\n  web:\n    image: \"${BAD\"\n    mem_limit: 1\n    extends: x\n");
    assert_eq!(
        e,
        "Compose file contains unsupported options:\n\nextends: Support for `extends` is not implemented yet.\n\nmem_limit: Set resource limits using deploy.resources\n"
    );
    assert_eq!(
        LoadError::FORBIDDEN_SHORT,
        "Configuration contains forbidden properties"
    );
}

#[test]
fn interpolation_forms() {
    let p = load_env(
        "services:\n  web:\n    image: \"${IMG:-busybox}:${TAG-latest}\"\n    environment:\n      A: \"${EMPTY:-soft}|${EMPTY-hard}|${UNSET}|$$HOME|${lower}\"\n      H: \"${HASH}\"\n",
        &[("EMPTY", ""), ("lower", "l"), ("HASH", "$apr1$x$y")],
    )
    .expect("ok");
    let web = &p.services["web"];
    assert_eq!(web.image.as_deref(), Some("busybox:latest"));
    assert_eq!(web.environment["A"].as_deref(), Some("soft|||$HOME|l"));
    assert_eq!(web.environment["H"].as_deref(), Some("$apr1$x$y"));
}

#[test]
fn interpolation_errors() {
    assert_eq!(
        err("services:\n  web:\n    image: \"busybox:${TAG\"\n"),
        "invalid interpolation format for services.web.image: \"busybox:${TAG\"; you may need to escape any $ with another $"
    );
    assert_eq!(
        err(
            "services:\n  proxy:\n    image: x\n    deploy:\n      labels:\n        - \"a=${HASHED_PASSWORD:?Variable not set}\"\n"
        ),
        "invalid interpolation format for services.proxy.deploy.labels.[]: \"required variable HASHED_PASSWORD is missing a value: Variable not set\"; you may need to escape any $ with another $"
    );
    assert_eq!(
        load_env(
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: \"${N}\"\n",
            &[("N", "x")]
        )
        .expect_err("cast")
        .to_string(),
        "error while interpolating services.web.deploy.replicas: failed to cast to expected type: strconv.Atoi: parsing \"x\": invalid syntax"
    );
}

#[test]
fn only_the_process_env_no_dot_env_file() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), ".env", "TAG=fromdotenv\n");
    let f = write(
        dir.path(),
        "s.yml",
        "services:\n  web:\n    image: \"x:${TAG:-default}\"\n",
    );
    let p = load(&LoadOptions {
        files: vec![f],
        ..LoadOptions::default()
    })
    .expect("ok");
    assert_eq!(p.services["web"].image.as_deref(), Some("x:default"));
    assert_eq!(p.working_dir, dir.path());
}

#[test]
fn skip_interpolation_keeps_templates() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(
        dir.path(),
        "s.yml",
        "services:\n  web:\n    image: \"x:${TAG}\"\n",
    );
    let opts = LoadOptions {
        files: vec![f],
        env: env(&[("TAG", "1")]),
        skip_interpolation: true,
    };
    assert_eq!(
        load(&opts).expect("ok").services["web"].image.as_deref(),
        Some("x:${TAG}")
    );
}

#[test]
fn typed_casts() {
    let p = load_env(
        "services:\n  web:\n    image: x\n    read_only: \"${RO}\"\n    tty: \"${T:-off}\"\n    deploy:\n      replicas: \"${N:-3}\"\n      update_config:\n        max_failure_ratio: \"${R:-0.5}\"\n",
        &[("RO", "yes")],
    )
    .expect("ok");
    let web = &p.services["web"];
    assert!(web.read_only);
    assert!(!web.tty);
    let d = web.deploy.as_ref().expect("deploy");
    assert_eq!(d.replicas, Some(3));
    assert_eq!(
        d.update_config.as_ref().and_then(|u| u.max_failure_ratio),
        Some(0.5)
    );
    // A quoted number that no substitution changed is not cast: the schema refuses it.
    assert_eq!(
        err("services:\n  web:\n    image: x\n    deploy:\n      replicas: \"3\"\n"),
        "services.web.deploy.replicas must be a integer"
    );
}

#[test]
fn yaml_semantics() {
    let p = load_str(
        "x-base: &base\n  image: busybox\n  restart: no\nservices:\n  web:\n    <<: *base\n    secrets:\n      - source: s\n        mode: 0440\nsecrets:\n  s:\n    file: ./s\n",
    )
    .expect("ok");
    let web = &p.services["web"];
    assert_eq!(web.image.as_deref(), Some("busybox"));
    assert_eq!(web.restart.as_deref(), Some("no"));
    assert_eq!(web.secrets[0].mode, Some(288));
    assert!(p.extras.contains_key("x-base"));
}

#[test]
fn schema_is_strict_and_version_gated() {
    assert_eq!(
        err("services:\n  web:\n    image: x\n    foo: 1\n"),
        "services.web Additional property foo is not allowed"
    );
    assert_eq!(
        err("version: '3.2'\nconfigs: {}\n"),
        "(root) Additional property configs is not allowed"
    );
    assert_eq!(
        err("version: '3.3'\nx-foo: 1\n"),
        "(root) Additional property x-foo is not allowed"
    );
    assert_eq!(
        err("version: '3.6'\nservices:\n  web:\n    image: x\n    x-a: 1\n"),
        "services.web Additional property x-a is not allowed"
    );
    assert_eq!(
        err("secrets:\n  s:\n    environment: X\n"),
        "secrets.s Additional property environment is not allowed"
    );
    assert_eq!(
        err(
            "services:\n  backend:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n"
        ),
        "services.backend.depends_on must be a list"
    );
    assert_eq!(
        err("name: x\nservices: {}\n"),
        "(root) Additional property name is not allowed"
    );
}

#[test]
fn service_transforms() {
    let p = load_env(
        "services:\n  web:\n    image: x\n    command: sh -c \"echo hi\"\n    healthcheck:\n      test: curl -f x\n      interval: 1m30s\n    stop_grace_period: 500ms\n    labels: [a=1, b]\n    volumes:\n      - ./data:/data:ro\n      - ~/cache:/cache\n      - volume1\n    deploy:\n      resources:\n        limits:\n          memory: 128M\n",
        &[("HOME", "/home/u")],
    )
    .expect("ok");
    let web = &p.services["web"];
    assert_eq!(
        web.command,
        Some(vec!["sh".into(), "-c".into(), "echo hi".into()])
    );
    let hc = web.healthcheck.as_ref().expect("hc");
    assert_eq!(hc.test, vec!["CMD-SHELL".to_string(), "curl -f x".into()]);
    assert_eq!(hc.interval, Some(Duration::from_secs(90)));
    assert_eq!(web.stop_grace_period, Some(Duration::from_millis(500)));
    assert_eq!(web.labels["b"], "");
    assert_eq!(web.volumes[0].source.as_deref(), Some("/work/stack/data"));
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[1].source.as_deref(), Some("/home/u/cache"));
    assert_eq!(
        (
            web.volumes[2].r#type.as_str(),
            web.volumes[2].source.as_deref(),
            web.volumes[2].target.as_str()
        ),
        ("volume", None, "volume1")
    );
    let mem = web
        .deploy
        .as_ref()
        .and_then(|d| d.resources.limits.as_ref())
        .and_then(|l| l.memory);
    assert_eq!(mem, Some(134_217_728));
}

#[test]
fn environment_resolution() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "e.env",
        "FROM_FILE=1\nOVER=file\n# comment\nSHELLED\n",
    );
    let f = write(
        dir.path(),
        "s.yml",
        "services:\n  web:\n    image: x\n    env_file: e.env\n    environment:\n      OVER: mine\n      BARE:\n      EMPTY: \"\"\n      UNSET_BARE:\n",
    );
    let opts = LoadOptions {
        files: vec![f],
        env: env(&[("BARE", "b"), ("EMPTY", "e"), ("SHELLED", "s")]),
        skip_interpolation: false,
    };
    let p = load(&opts).expect("ok");
    let e = &p.services["web"].environment;
    assert_eq!(e["FROM_FILE"].as_deref(), Some("1"));
    assert_eq!(e["OVER"].as_deref(), Some("mine"));
    assert_eq!(e["BARE"].as_deref(), Some("b"));
    assert_eq!(e["EMPTY"].as_deref(), Some("e"));
    assert_eq!(e["SHELLED"].as_deref(), Some("s"));
    assert_eq!(e["UNSET_BARE"], None);
}

#[test]
fn ports_and_their_warning() {
    let p = load_str("services:\n  web:\n    image: x\n    ports:\n      - \"127.0.0.1:8001:8001\"\n      - \"9000-9001:9000-9001\"\n      - 9002\n").expect("ok");
    let ports: Vec<(u32, u32)> = p.services["web"]
        .ports
        .iter()
        .map(|p| (p.published, p.target))
        .collect();
    assert_eq!(
        ports,
        vec![(8001, 8001), (9000, 9000), (9001, 9001), (0, 9002)]
    );
    assert_eq!(
        p.warnings().loader,
        vec![
            "ignoring IP-address (127.0.0.1:8001:8001/tcp) service will listen on '0.0.0.0'"
                .to_string()
        ]
    );
}

#[test]
fn external_names() {
    let p = load_str(
        "services: {}\nnetworks:\n  pub:\n    external: true\n  old:\n    external:\n      name: real\nsecrets:\n  s:\n    external: {name: other}\n  f:\n    file: ./secret.txt\n",
    )
    .expect("ok");
    assert_eq!(p.networks["pub"].name.as_deref(), Some("pub"));
    assert_eq!(p.networks["old"].name.as_deref(), Some("real"));
    assert_eq!(p.secrets["s"].name.as_deref(), Some("other"));
    assert_eq!(
        p.secrets["f"].file.as_deref(),
        Some(Path::new("/work/stack/secret.txt"))
    );
    assert_eq!(
        p.warnings().loader,
        vec![
            "network old: network.external.name is deprecated in favor of network.name".to_string(),
            "secret s: secret.external.name is deprecated in favor of secret.name".to_string(),
        ]
    );
    assert_eq!(
        err("secrets:\n  s:\n    name: a\n    external:\n      name: b\n"),
        "secret s: secret.external.name and secret.name conflict; only use secret.name"
    );
}

#[test]
fn deploy_warnings() {
    let p = load_str("services:\n  web:\n    image: x\n    restart: always\n    build: .\n    container_name: c\n    depends_on: [db]\n").expect("ok");
    let w = p.warnings();
    assert_eq!(w.unsupported, vec!["build".to_string(), "restart".into()]);
    assert_eq!(
        w.deploy_text(),
        "Ignoring unsupported options: build, restart\n\nIgnoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.\n\n"
    );
}

#[test]
fn several_files_merge_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = write(
        dir.path(),
        "a.yml",
        "services:\n  web:\n    image: a\n    ports: [\"80:80\"]\n    environment: {A: \"1\"}\n  db:\n    image: d\n",
    );
    let b = write(
        dir.path(),
        "b.yml",
        "services:\n  web:\n    image: b\n    ports: [\"80:8080\", \"81:81\"]\n    environment: {B: \"2\"}\n",
    );
    let p = load(&LoadOptions {
        files: vec![a, b],
        ..LoadOptions::default()
    })
    .expect("ok");
    let web = &p.services["web"];
    assert_eq!(web.image.as_deref(), Some("b"));
    let ports: Vec<(u32, u32)> = web.ports.iter().map(|p| (p.published, p.target)).collect();
    assert_eq!(ports, vec![(80, 8080), (81, 81)]);
    assert_eq!(web.environment.len(), 2);
    assert!(p.services.contains_key("db"));
}
