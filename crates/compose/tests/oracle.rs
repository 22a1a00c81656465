//! The loader against the real `docker stack config` (CLI 28, client-side, no swarm
//! needed) on small probes: the same output on success, the same message on failure.
//! Skipped with a note when the docker CLI is not on PATH.

use std::path::Path;
use std::process::Command;

use shoal_compose::{LoadError, LoadOptions, load};

/// (file name, content), each probing a few behaviours; `m1`–`m3` are merged in
/// `merges_match_docker`. (YAML syntax errors are left out: the parsers word them
/// differently.)
const PROBES: &[(&str, &str)] = &[
    (
        "f.yml",
        r##"services:
  web:
    image: x
    extends: a
    mem_limit: 1
"##,
    ),
    (
        "m1.yml",
        r##"version: "3.8"
services:
  web:
    image: a
    ports: ["80:80", "81:81"]
    environment: {A: "1", B: "2"}
    cap_add: [X]
    secrets: [s1]
    deploy:
      replicas: 2
      placement: {constraints: [a]}
    labels: {l1: a}
    networks:
      n1:
        aliases: [x]
  db:
    image: d
networks:
  n1: {driver: overlay}
secrets:
  s1: {file: ./a}
x-one: 1
"##,
    ),
    (
        "m2.yml",
        r##"version: "3.8"
services:
  web:
    image: b
    ports: ["8080:80"]
    environment: {A: "9", C: "3"}
    cap_add: [Y]
    secrets: [{source: s1, target: t}]
    deploy:
      placement: {constraints: [b]}
    labels: [l2=b]
    networks:
      n1:
        aliases: [y]
  cache:
    image: c
networks:
  n1: {driver: bridge}
secrets:
  s2: {file: ./b}
x-two: 2
"##,
    ),
    (
        "m3.yml",
        r##"services:
  web:
    image: x
"##,
    ),
    (
        "p01.yml",
        r##"services:
  web:
    image: busybox
    ports:
      - "127.0.0.1:8001:8001"
      - 9000
      - "9000-9001:9000-9001/udp"
      - target: 80
        published: 8080
        mode: host
    command: sh -c "echo hi; sleep 1"
    entrypoint: ["/bin/sh"]
    environment:
      - A=1
      - B
      - HOME
      - EMPTY=
    labels:
      a: 1
      b: null
    extra_hosts:
      - "h1:1.2.3.4"
      - "h2=::1"
    healthcheck:
      test: curl -f x
      interval: 1m30s
      start_period: 500ms
    stop_grace_period: 1h
    ulimits:
      nproc: 65535
      nofile: {soft: 1, hard: 2}
    volumes:
      - ./data:/data:ro
      - ~/x:/x
      - vol:/v:nocopy
      - type: tmpfs
        target: /t
        tmpfs:
          size: 1000
    restart: "no"
    privileged: true
    container_name: c
    expose: [80, "81"]
    secrets:
      - s
      - source: s
        target: /etc/s
        mode: 0440
        uid: "1"
    deploy:
      mode: replicated
      replicas: 2
      labels: [x=y]
      update_config:
        parallelism: 0
        delay: 10s
        max_failure_ratio: 0.3
        order: start-first
      resources:
        limits: {cpus: "0.5", memory: 1.5G, pids: 10}
        reservations:
          memory: 64M
          generic_resources:
            - discrete_resource_spec: {kind: gpu, value: 2}
      restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s}
      placement:
        constraints: [node.role == manager]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 1
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: 3}
    x-foo: bar
    sysctls: [net.core.somaxconn=1024]
    init: true
    user: "1000:1000"
    dns: 8.8.8.8
networks:
  ext:
    external:
      name: real
  n2:
    driver: overlay
    attachable: true
    ipam:
      config:
        - subnet: 10.0.0.0/24
    x-a: 1
volumes:
  vol:
    driver: local
  ev:
    external: true
secrets:
  s:
    file: ./s.txt
    x-z: 1
  e:
    external:
      name: other
configs:
  c:
    file: /abs/c
    template_driver: golang
x-top: {a: 1}
"##,
    ),
    (
        "p02.yml",
        r##"version: "3.4"
services:
  web:
    image: x
volumes:
  v:
    external:
      name: real
"##,
    ),
    (
        "p03.yml",
        r##"services:
  web:
    image: "${IMG:-busybox}:${TAG-latest}"
    environment:
      P: "$$HOME ${HOME} $HOME"
      Q: "${UNSET}"
    deploy:
      replicas: "${REPL:-3}"
"##,
    ),
    (
        "p04.yml",
        r##"services:
  web:
    image: "x${BAD"
"##,
    ),
    (
        "p05.yml",
        r##"services:
  web:
    image: x
    deploy:
      labels:
        - "a=${NOPE:?must be set}"
"##,
    ),
    (
        "p06.yml",
        r##"services:
  web:
    image: x
    read_only: "${RO:-yes}"
    tty: "${TTY:-maybe}"
"##,
    ),
    (
        "p07.yml",
        r##"networks:
  n:
    name: a
    external:
      name: b
services:
  web:
    image: x
"##,
    ),
    (
        "p08.yml",
        r##"services:
  web:
    image: x
    env_file: ./e.env
"##,
    ),
    (
        "p09.yml",
        r##"services:
  web:
    build: .
    image: x
    links: [a]
    expose: [1]
"##,
    ),
    (
        "p10.yml",
        r##"version: "3.1"
services:
  web:
    image: x
configs: {}
"##,
    ),
    (
        "p11.yml",
        r##"services:
  web:
    image: x
    volumes:
      - type: bind
        target: /x
"##,
    ),
    (
        "p12.yml",
        r##"services:
  web:
    image: x
    command: ["a", 1]
"##,
    ),
    (
        "p13.yml",
        r##"services:
  web:
    image: x
    ports:
      - "80:80:80:80"
"##,
    ),
    (
        "p14.yml",
        r##"secrets:
  s:
    driver: d
    file: x
services:
  web:
    image: x
"##,
    ),
    (
        "p15.yml",
        r##"services:
  web:
    image: x
    healthcheck:
      disable: true
    environment:
      N: 1.50
      M: 100
      T: "true"
"##,
    ),
    (
        "p16.yml",
        r##"version: "3.0"
services:
  web:
    image: x
    volumes:
      - type: volume
"##,
    ),
    (
        "p17.yml",
        r##"volumes:
  v:
    external: true
    driver: x
services:
  web:
    image: x
"##,
    ),
    (
        "p18.yml",
        r##"services:
  web:
    image: x
    networks: [a, b]
    tmpfs: /run
    depends_on: [db]
"##,
    ),
    (
        "p19.yml",
        r##"services:
  web:
    image: x
    logging:
      options:
        a: ~
"##,
    ),
    (
        "p20.yml",
        r##"services:
  web:
    image: x
    environment:
      LONG: |
        line1
        line2
      Q: "it's: here"
      S: "{{.Node.ID}}"
      U: "- x"
      V: "#x"
      W: "a #b"
      X: "@x"
      Y: "1:20"
      Z: "0x1F"
"##,
    ),
    (
        "r01.yml", r##"
"##,
    ),
    (
        "r02.yml",
        r##"services:
"##,
    ),
    (
        "r03.yml",
        r##"services:
  web:
"##,
    ),
    (
        "r04.yml",
        r##"services:
  web:
    image: x
    deploy:
networks:
  n:
volumes:
  v:
"##,
    ),
    (
        "r06.yml",
        r##"services:
  web:
    image: x
    environment:
      1: x
"##,
    ),
    (
        "r07.yml",
        r##"services:
  web:
    image: x
    ports:
      - "80:80/xyz"
"##,
    ),
    (
        "r08.yml",
        r##"services:
  web:
    image: x
    ports:
      - target: 80
        published: "${P}"
"##,
    ),
    (
        "r09.yml",
        r##"version: "3.3"
services:
  web:
    image: x
    healthcheck:
      interval: 10
"##,
    ),
    (
        "r10.yml",
        r##"services:
  web:
    image: x
    command: "echo \"unterminated"
"##,
    ),
    (
        "r11.yml",
        r##"services:
  web:
    image: x
    environment:
      - A=1
      - 5
    labels:
      n: 1.0
      m: 12345678901
volumes:
  v:
    x-q: 1
    driver_opts: {a: 1}
"##,
    ),
    (
        "r12.yml",
        r##"services:
  web:
    image: x
    ulimits:
      nofile: "${U:-10}"
"##,
    ),
    (
        "r13.yml",
        r##"services:
  web:
    image: "héllo wörld"
    hostname: "{{.Node.Hostname}}"
    command: ["a b", "c:d", "- e", "[x]", "", " lead", "trail ", "null", "1.5", "-1", "0o7"]
"##,
    ),
    (
        "r14.yml",
        r##"services:
  web:
    image: x
    volumes:
      - /a:/b:c:d
"##,
    ),
    (
        "r16.yml",
        r##"services:
  web:
    image: x
    networks:
      n:
        aliases: [a]
        ipv4_address: 1.2.3.4
networks:
  n:
    labels: [a=b]
    driver_opts:
      com.docker.network.driver.mtu: 1400
"##,
    ),
    (
        "r17.yml",
        r##"services:
  web:
    image: x
    deploy:
      resources:
        limits:
          memory: lots
"##,
    ),
    (
        "r18.yml",
        r##"version: "3.0"
services:
  web:
    image: x
    ports: ["80:80"]
    volumes: ["/a:/b"]
"##,
    ),
    (
        "r19.yml",
        r##"services:
  web:
    image: x
    extra_hosts:
      h1: 1.2.3.4
      h2: "[::1]"
"##,
    ),
    (
        "r20.yml",
        r##"services:
  web:
    image: x
    secrets: [a, a]
"##,
    ),
    (
        "r21.yml",
        r##"services:
  web:
    image: x
    volumes: ["a::b"]
"##,
    ),
    (
        "r22.yml",
        r##"services:
  web:
    image: x
    env_file: nope.env
"##,
    ),
    (
        "r23.yml",
        r##"services:
  web:
    image: x
    volumes: ["/a::b"]
"##,
    ),
];

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

fn docker(dir: &Path, files: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.current_dir(dir).args(["stack", "config"]);
    for f in files {
        cmd.arg("-c").arg(dir.join(f));
    }
    let out = cmd.output().expect("run docker");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}

fn ours(dir: &Path, files: &[&str]) -> Result<String, String> {
    let opts = LoadOptions {
        files: files
            .iter()
            .map(|f| dir.join(f).display().to_string())
            .collect(),
        env: std::env::vars().collect(),
        skip_interpolation: false,
    };
    match load(&opts) {
        Ok(p) => Ok(p.to_yaml()),
        // `stack config` prints the short form of this one.
        Err(LoadError::Forbidden { .. }) => Err(LoadError::FORBIDDEN_SHORT.to_string()),
        Err(e) => Err(e.to_string().trim_end().to_string()),
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text) in PROBES {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    std::fs::write(dir.path().join("e.env"), "X=1\n# c\nY\n  Z=3\nHOME\n").expect("env");
    dir
}

fn same(dir: &Path, files: &[&str]) {
    let (theirs, mine) = (docker(dir, files), ours(dir, files));
    match (&theirs, &mine) {
        (Ok(t), Ok(m)) => {
            let a: yaml_serde::Value = yaml_serde::from_str(m).expect("ours parses");
            let b: yaml_serde::Value = yaml_serde::from_str(t).expect("theirs parses");
            assert_eq!(a, b, "{files:?}\n--- ours\n{m}\n--- docker\n{t}");
            assert_eq!(m, t, "{files:?}: same value, different text");
        }
        (Err(t), Err(m)) => assert_eq!(m, t, "{files:?}"),
        _ => panic!("{files:?}: docker {theirs:?}, ours {mine:?}"),
    }
}

#[test]
fn probes_match_docker() {
    if !docker_available() {
        println!("note: docker CLI not on PATH; skipping the `docker stack config` probes");
        return;
    }
    let dir = setup();
    for (name, _) in PROBES {
        same(dir.path(), &[name]);
    }
}

#[test]
fn merges_match_docker() {
    if !docker_available() {
        println!("note: docker CLI not on PATH; skipping the `docker stack config` merges");
        return;
    }
    let dir = setup();
    same(dir.path(), &["m1.yml", "m2.yml"]);
    same(dir.path(), &["m1.yml", "m3.yml"]);
    same(dir.path(), &["m3.yml", "m1.yml"]);
    same(dir.path(), &["missing.yml"]);
}
