//! Seed 003's Docker Secret and Docker Config, end to end: `shoal secret create` and
//! `shoal config create` through the CLI, services that use them, and the files their
//! tasks read — a process task under `$SHOAL_TASK_FILES`, a container at
//! `/run/secrets/<target>` and `/<config>` — with their modes and owners, only on the
//! node that runs the task, gone with the task; `secret rm` refused while a service
//! uses it; and the payload in no file of etcd, the state dirs or the logs.
//!
//! It also prints the secret delivery latency (`service update --secret-add` until the
//! new task reads the file).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_proto::v1::Task;
use shoal_scenarios::{Stack, StackOptions, containers_of};
use shoal_testkit::docker::{busybox_image, docker_available};
use shoal_testkit::{Infra, wait_for};

const DEADLINE: Duration = Duration::from_secs(90);

fn task_id(t: &Task) -> String {
    t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// The per-task file directories the workers of `stack` hold (their default
/// `secrets_dir` is `/dev/shm/shoal-<node id>`), as (node id, task id).
fn task_dirs(stack: &Stack) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for node in stack.node_ids() {
        let root = PathBuf::from(format!("/dev/shm/shoal-{node}"));
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                found.push((node.clone(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    found.sort();
    found
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path)
                        && bytes.windows(needle.len()).any(|w| w == needle)
                    {
                        hits.push(path.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    hits
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn docker_exec(container: &str, script: &str) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// The running container of `service` whose name carries `task`.
fn container_of_task(service: &str, task: &str) -> Option<String> {
    containers_of(service)
        .ok()?
        .into_iter()
        .find(|n| n.ends_with(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_secrets_and_configs_reach_only_their_tasks() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 3,
            worker_subnet: 23,
            ..Default::default()
        },
    )
    .await?;

    // A payload nothing else contains, so finding it anywhere means it leaked.
    let payload = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let files = tempfile::tempdir()?;
    let pw_file = files.path().join("db_pw.txt");
    std::fs::write(&pw_file, &payload)?;
    let conf_file = files.path().join("app.conf.tmpl");
    std::fs::write(
        &conf_file,
        "service={{ .Service.Name }} slot={{ .Task.Slot }} greeting={{ env \"GREETING\" }}\n",
    )?;

    let id = stack
        .cli_ok(&["secret", "create", "db_pw", &pw_file.display().to_string()])
        .await?;
    assert_eq!(id.trim().len(), 25, "secret create prints the id: {id}");
    stack
        .cli_ok(&[
            "config",
            "create",
            "--template-driver",
            "golang",
            "app_conf",
            &conf_file.display().to_string(),
        ])
        .await?;
    let ls = stack.cli_ok(&["secret", "ls"]).await?;
    assert!(ls.lines().any(|l| l.contains("db_pw")), "{ls}");
    let inspect = stack.cli_ok(&["secret", "inspect", "db_pw"]).await?;
    assert!(
        !inspect.contains(&payload),
        "inspect shows no data: {inspect}"
    );

    // A process task: the files mirror the container paths under $SHOAL_TASK_FILES.
    let out = stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "sd-proc",
            "--env",
            "GREETING=hello",
            "--secret",
            "db_pw",
            "--secret",
            "source=db_pw,target=pw2,mode=0400",
            "--config",
            "source=app_conf,target=/etc/app.conf",
            "sh",
            "-c",
            "sha256sum $SHOAL_SECRETS_DIR/db_pw; stat -c 'mode=%a' $SHOAL_SECRETS_DIR/pw2; \
             cat $SHOAL_TASK_FILES/etc/app.conf; exec sleep 3600",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    let proc_task = stack.wait_running("sd-proc", 1).await?.remove(0);
    let want_sum = sha256_hex(payload.as_bytes());
    let logs = wait_for("sd-proc's output", DEADLINE, || async {
        let out = stack.cli(&["service", "logs", "sd-proc"]).await.ok()?;
        (out.stdout.contains("greeting=hello")).then_some(out.stdout)
    })
    .await?;
    assert!(logs.contains(&want_sum), "the secret's bytes: {logs}");
    assert!(logs.contains("mode=400"), "{logs}");
    assert!(
        logs.contains("service=sd-proc slot=1 greeting=hello"),
        "{logs}"
    );

    // Only the node that runs the task holds its files.
    let dirs = task_dirs(&stack);
    assert_eq!(
        dirs,
        vec![(proc_task.node_id.clone(), task_id(&proc_task))],
        "task file dirs"
    );

    // `secret rm` is refused while a service uses it, in Swarm's words.
    let rm = stack.cli(&["secret", "rm", "db_pw"]).await?;
    assert_ne!(rm.code, 0);
    assert!(
        rm.stderr
            .contains("secret 'db_pw' is in use by the following service: sd-proc"),
        "{rm:?}"
    );

    if docker_available() {
        let image = busybox_image()?;
        stack
            .cli_ok(&[
                "service",
                "create",
                "--name",
                "sd-web",
                "--env",
                "GREETING=bonjour",
                "--secret",
                "db_pw",
                "--secret",
                "source=db_pw,target=/etc/pw,uid=1000,gid=1000,mode=0400",
                "--config",
                "app_conf",
                &image,
                "sleep",
                "3600",
            ])
            .await?;
        let task = stack.wait_running("sd-web", 1).await?.remove(0);
        let container = container_of_task("sd-web", &task_id(&task))
            .ok_or_else(|| anyhow::anyhow!("no container for sd-web"))?;
        let (ok, text) = docker_exec(&container, "cat /run/secrets/db_pw")?;
        assert!(ok && text == payload, "{text}");
        let (ok, text) = docker_exec(
            &container,
            "stat -c '%a %u %g' /run/secrets/db_pw /etc/pw /app_conf",
        )?;
        assert!(ok, "{text}");
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["444 0 0", "400 1000 1000", "444 0 0"]
        );
        let (ok, text) = docker_exec(&container, "cat /app_conf")?;
        assert!(ok, "{text}");
        assert_eq!(text, "service=sd-web slot=1 greeting=bonjour\n");
        let (ok, text) = docker_exec(&container, "echo x > /run/secrets/db_pw")?;
        assert!(!ok, "the secret's mount is read-only: {text}");

        // secret-add: a new task (the spec changed) that reads the new secret.
        let extra_file = files.path().join("extra.txt");
        std::fs::write(&extra_file, "extra-value")?;
        stack
            .cli_ok(&[
                "secret",
                "create",
                "extra",
                &extra_file.display().to_string(),
            ])
            .await?;
        let started = Instant::now();
        stack
            .cli_ok(&[
                "service",
                "update",
                "-d",
                // The old task's `sleep` ignores SIGTERM: stop-first would measure the
                // stop grace period, not the delivery.
                "--update-order",
                "start-first",
                "--secret-add",
                "extra",
                "sd-web",
            ])
            .await?;
        let old = task_id(&task);
        let readable = wait_for("the added secret inside the new task", DEADLINE, || {
            let old = old.clone();
            let stack = &stack;
            async move {
                let tasks = stack.running("sd-web").await.ok()?;
                let new = tasks.iter().find(|t| task_id(t) != old)?;
                let c = container_of_task("sd-web", &task_id(new))?;
                let (ok, text) = docker_exec(&c, "cat /run/secrets/extra").ok()?;
                (ok && text == "extra-value").then_some(started.elapsed())
            }
        })
        .await?;
        println!(
            "FIGURE secret delivery (service update --secret-add to readable in the new container): {:.2} s",
            readable.as_secs_f64()
        );
        // The replaced task stays in the history, but its files go once it has stopped.
        wait_for("the replaced task's files to go", DEADLINE, || async {
            (!task_dirs(&stack).iter().any(|(_, t)| *t == old)).then_some(())
        })
        .await?;
        let history = stack.tasks_of("sd-web").await?;
        assert!(
            history.iter().any(|t| task_id(t) == old),
            "still in the history"
        );
        stack.cli_ok(&["service", "rm", "sd-web"]).await?;
    } else {
        eprintln!("NOTICE: no Docker engine answers; the container half is skipped");
    }

    stack.cli_ok(&["service", "rm", "sd-proc"]).await?;
    wait_for("every task file dir to go", DEADLINE, || async {
        task_dirs(&stack).is_empty().then_some(())
    })
    .await?;
    wait_for("db_pw to be free", DEADLINE, || async {
        let out = stack.cli(&["secret", "rm", "db_pw"]).await.ok()?;
        (out.code == 0).then_some(())
    })
    .await?;

    // The plaintext is in no file: etcd's data, the state dirs, configs and logs.
    let mut leaks = files_containing(&infra.etcd.data_dir(), payload.as_bytes());
    leaks.extend(files_containing(infra.dir.path(), payload.as_bytes()));
    assert!(leaks.is_empty(), "the payload leaked into {leaks:?}");
    Ok(())
}
