//! `shoal stack` end to end: real compose files (../shared/fixtures/stacks) deployed
//! on a real cluster, their networks, secrets, configs and services checked object by
//! object; an unchanged redeploy replaces no task; `--prune`; `stack ls/services/ps`;
//! `stack rm` in docker's order; bad files refused with docker's words and nothing
//! created. Every image a fixture names is a local stub (busybox that sleeps and
//! ignores its arguments): nothing is pulled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    ListFilters, ListNetworksRequest, ListSecretsRequest, ListTasksRequest, Network, Service, Task,
    TaskState,
};
use shoal_scenarios::stack_objects::*;
use shoal_scenarios::{
    Stack, StackOptions, no_stack_containers, remove_stack_leftovers, stub_images,
};
use shoal_testkit::docker::docker_available;
use shoal_testkit::{Infra, wait_for};
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(90);

fn labels_of(s: &Service) -> HashMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.labels.clone())
        .unwrap_or_default()
}

async fn networks(c: &mut ControlClient<Channel>, ns: &str) -> anyhow::Result<Vec<Network>> {
    Ok(c.list_networks(ListNetworksRequest {
        filters: Some(by_label(ns)),
    })
    .await?
    .into_inner()
    .networks)
}

async fn tasks(c: &mut ControlClient<Channel>, service_id: &str) -> anyhow::Result<Vec<Task>> {
    Ok(c.list_tasks(ListTasksRequest {
        filters: Some(ListFilters {
            service_ids: vec![service_id.to_string()],
            ..Default::default()
        }),
    })
    .await?
    .into_inner()
    .tasks)
}

/// Live tasks of a service whose spec is the service's current one.
fn current_live(s: &Service, ts: &[Task]) -> BTreeSet<String> {
    ts.iter()
        .filter(|t| t.desired_state == TaskState::Running as i32)
        .filter(|t| shoal_proto::task_is_current(t, s))
        .map(|t| id_of(t.meta.as_ref()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The stacks this scenario deploys.
const STACKS: &[&str] = &["vote", "pr", "ghost", "named", "sec", "bad"];
/// The address pool of this scenario's cluster (no other test uses it), so Docker
/// networks a crashed earlier run left behind are recognisably ours.
const POOL: &str = "10.161.0.0/16";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_deploy_update_prune_and_remove() -> anyhow::Result<()> {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; the stack scenario is skipped");
        return Ok(());
    }
    stub_images(&[
        "redis:alpine",
        "postgres:15-alpine",
        "dockersamples/examplevotingapp_vote",
        "dockersamples/examplevotingapp_result",
        "dockersamples/examplevotingapp_worker",
        "ghost:alpine",
        "mysql:5.7",
        "registry:5000/alpine:frozen",
    ])?;
    remove_stack_leftovers(STACKS, POOL)?;
    let infra = Infra::start().await?;
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 2,
            worker_subnet: 71,
            default_addr_pool: vec![POOL.into()],
            ..Default::default()
        },
    )
    .await?;
    let mut control = stack.control().await?;
    let scratch = tempfile::tempdir()?;

    // ---- Bad inputs: docker's message, non-zero exit, nothing created.
    for (file, text, want) in [
        (
            "schema.yml",
            "version: '3.8'\nservices:\n  web:\n    image: busybox\n    foo: 1\n",
            "services.web Additional property foo is not allowed",
        ),
        (
            "required.yml",
            "version: '3.8'\nservices:\n  web:\n    image: \"busybox:${SHOAL_STACK_TEST_TAG:?tag required}\"\n",
            "required variable SHOAL_STACK_TEST_TAG is missing a value",
        ),
        (
            "external.yml",
            "version: '3.8'\nservices:\n  web:\n    image: busybox\n    networks: [public]\nnetworks:\n  public:\n    external: true\n",
            "network \"public\" is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed",
        ),
    ] {
        let path = write(scratch.path(), file, text);
        let out = stack.cli(&["stack", "deploy", "-c", &path, "bad"]).await?;
        assert_ne!(out.code, 0, "{file}");
        assert!(out.stderr.contains(want), "{file}: {out:?}");
    }
    assert!(services(&mut control, "bad").await?.is_empty());
    assert!(networks(&mut control, "bad").await?.is_empty());
    let out = stack.cli(&["stack", "ls"]).await?;
    assert_eq!(out.stdout, "NAME      SERVICES\n", "{out:?}");

    // ---- voting-app: networks, services, aliases, replicas.
    let voting = fixture("voting-app.yml");
    let out = stack
        .cli(&["stack", "deploy", "-c", &voting, "vote"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "Since --detach=false was not specified, tasks will be created in the background."
        ),
        "{out:?}"
    );
    assert_eq!(
        lines(&out.stdout),
        set(&[
            "Creating network vote_backend",
            "Creating network vote_frontend",
            "Creating service vote_db",
            "Creating service vote_redis",
            "Creating service vote_result",
            "Creating service vote_vote",
            "Creating service vote_worker",
        ])
    );
    let nets = networks(&mut control, "vote").await?;
    let mut names: Vec<&str> = nets.iter().map(net_name).collect();
    names.sort();
    assert_eq!(names, vec!["vote_backend", "vote_frontend"]);
    for n in &nets {
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.driver_config.as_ref().unwrap().name, "overlay");
    }
    let all = services(&mut control, "vote").await?;
    assert_eq!(all.len(), 5);
    let ids_to_names = network_names(&mut control).await?;
    for (key, want_replicas) in [
        ("db", 1),
        ("redis", 1),
        ("result", 1),
        ("vote", 2),
        ("worker", 2),
    ] {
        let s = service(&all, &format!("vote_{key}"));
        assert_eq!(replicas(s), Some(want_replicas), "{key}");
        let labels = labels_of(s);
        assert_eq!(labels.get(NAMESPACE).map(String::as_str), Some("vote"));
        assert!(labels.contains_key("com.docker.stack.image"));
        let c = container(s);
        assert_eq!(c.labels.get(NAMESPACE).map(String::as_str), Some("vote"));
    }
    assert_eq!(
        attachments(service(&all, "vote_worker"), &ids_to_names),
        vec![
            ("vote_backend".to_string(), vec!["worker".to_string()]),
            ("vote_frontend".to_string(), vec!["worker".to_string()]),
        ]
    );
    assert_eq!(
        attachments(service(&all, "vote_redis"), &ids_to_names),
        vec![("vote_frontend".to_string(), vec!["redis".to_string()])]
    );
    assert_eq!(
        container(service(&all, "vote_db")).mounts[0].source,
        "vote_db-data"
    );
    for (name, n) in [
        ("vote_db", 1),
        ("vote_redis", 1),
        ("vote_result", 1),
        ("vote_vote", 2),
        ("vote_worker", 2),
    ] {
        stack.wait_running(name, n).await?;
    }

    // ---- An unchanged redeploy: only updates, and every running task stays current.
    let mut before = HashMap::new();
    for s in &all {
        let ts = tasks(&mut control, &id_of(s.meta.as_ref())).await?;
        before.insert(name_of(s).to_string(), current_live(s, &ts));
    }
    let out = stack
        .cli_ok(&["stack", "deploy", "-c", &voting, "--detach", "vote"])
        .await?;
    let expected: BTreeSet<String> = all
        .iter()
        .map(|s| {
            format!(
                "Updating service {} (id: {})",
                name_of(s),
                id_of(s.meta.as_ref())
            )
        })
        .collect();
    assert_eq!(lines(&out), expected);
    for s in services(&mut control, "vote").await? {
        let ts = tasks(&mut control, &id_of(s.meta.as_ref())).await?;
        assert_eq!(
            current_live(&s, &ts),
            before[name_of(&s)],
            "{}: the redeploy changed its tasks",
            name_of(&s)
        );
    }

    // ---- ls, services, ps.
    let out = stack.cli_ok(&["stack", "ls"]).await?;
    assert_eq!(out, "NAME      SERVICES\nvote      5\n");
    let out = stack.cli_ok(&["stack", "services", "vote"]).await?;
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("REPLICAS"),
        "{out}"
    );
    assert_eq!(rows.len(), 6, "{out}");
    assert!(
        rows[4].contains("vote_vote") && rows[4].contains("2/2"),
        "{out}"
    );
    assert!(out.contains("*:8080->80/tcp"), "{out}");
    let out = stack.cli_ok(&["stack", "services", "-q", "vote"]).await?;
    assert_eq!(out.lines().count(), 5);
    let out = stack
        .cli_ok(&["stack", "ps", "-f", "desired-state=running", "vote"])
        .await?;
    assert_eq!(out.lines().count(), 8, "{out}");
    assert!(out.contains("vote_vote.2"), "{out}");

    // ---- --prune removes only the services the file no longer has.
    let two = write(
        scratch.path(),
        "two.yml",
        "version: '3.8'\nservices:\n  a:\n    image: redis:alpine\n  b:\n    image: redis:alpine\n    restart: always\n    container_name: x\n",
    );
    let one = write(
        scratch.path(),
        "one.yml",
        "version: '3.8'\nservices:\n  a:\n    image: redis:alpine\n",
    );
    // `--detach=false` follows each service with the service progress display.
    let out = stack
        .cli(&["stack", "deploy", "--detach=false", "-c", &two, "pr"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("Creating network pr_default\n"),
        "{out:?}"
    );
    assert_eq!(
        out.stdout.matches("verify: Service converged").count(),
        2,
        "{out:?}"
    );
    // The ignored keys are warned about, as docker does; the detach notice is not
    // shown when --detach is given.
    assert_eq!(
        out.stderr,
        "Ignoring unsupported options: restart\n\n\
         Ignoring deprecated options:\n\n\
         container_name: Setting the container name is not supported.\n\n"
    );
    let pr = services(&mut control, "pr").await?;
    let a_id = id_of(service(&pr, "pr_a").meta.as_ref());
    let out = stack
        .cli_ok(&["stack", "deploy", "--prune", "-c", &one, "pr"])
        .await?;
    assert_eq!(
        out,
        format!("Removing service pr_b\nUpdating service pr_a (id: {a_id})\n")
    );
    let left: Vec<String> = services(&mut control, "pr")
        .await?
        .iter()
        .map(|s| name_of(s).to_string())
        .collect();
    assert_eq!(left, vec!["pr_a"]);
    let out = stack.cli_ok(&["stack", "ls"]).await?;
    assert_eq!(out, "NAME      SERVICES\npr        1\nvote      5\n");

    // ---- dogvscat: an external network, a named secret, dnsrr, deploy labels.
    stack
        .cli_ok(&["network", "create", "--driver", "overlay", "proxy"])
        .await?;
    let out = stack
        .cli(&[
            "stack",
            "deploy",
            "-c",
            &fixture("dogvscat-ghost.yml"),
            "ghost",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        set(&[
            "Creating network ghost_ghost",
            "Creating secret db-password",
            "Creating service ghost_db",
            "Creating service ghost_db-backup",
            "Creating service ghost_ghost",
        ])
    );
    let all = services(&mut control, "ghost").await?;
    let ids_to_names = network_names(&mut control).await?;
    let ghost = service(&all, "ghost_ghost");
    assert_eq!(
        labels_of(ghost)
            .get("traefik.http.routers.ghost.entryPoints")
            .map(String::as_str),
        Some("websecure")
    );
    assert_eq!(
        attachments(ghost, &ids_to_names),
        vec![
            ("ghost_ghost".to_string(), vec!["ghost".to_string()]),
            ("proxy".to_string(), vec!["ghost".to_string()]),
        ]
    );
    let db = service(&all, "ghost_db");
    let endpoint = db.spec.as_ref().unwrap().endpoint.as_ref().unwrap();
    assert_eq!(
        endpoint.mode,
        shoal_proto::v1::endpoint_spec::ResolutionMode::Dnsrr as i32
    );
    let secret = control
        .list_secrets(ListSecretsRequest {
            filters: Some(ListFilters {
                names: vec!["db-password".into()],
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .secrets;
    assert_eq!(secret.len(), 1);
    let refs = container(db).secrets;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].secret_name, "db-password");
    assert_eq!(refs[0].secret_id, id_of(secret[0].meta.as_ref()));
    assert_eq!(refs[0].target, "db-password");
    assert_eq!(
        (refs[0].uid.as_str(), refs[0].gid.as_str(), refs[0].mode),
        ("0", "0", Some(0o444))
    );
    // Redeploy: the identical secret is accepted silently.
    let out = stack
        .cli_ok(&[
            "stack",
            "deploy",
            "-c",
            &fixture("dogvscat-ghost.yml"),
            "ghost",
        ])
        .await?;
    assert!(
        out.lines().all(|l| l.starts_with("Updating service ")),
        "{out}"
    );

    // A changed secret file is refused by the manager, in docker's words.
    std::fs::write(scratch.path().join("pw"), "one")?;
    let sec = write(
        scratch.path(),
        "secret.yml",
        "version: '3.8'\nservices:\n  app:\n    image: redis:alpine\n    secrets: [pw]\nsecrets:\n  pw:\n    file: ./pw\n",
    );
    let out = stack
        .cli_ok(&["stack", "deploy", "-c", &sec, "sec"])
        .await?;
    assert!(out.contains("Creating secret sec_pw\n"), "{out}");
    std::fs::write(scratch.path().join("pw"), "two")?;
    let out = stack.cli(&["stack", "deploy", "-c", &sec, "sec"]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "failed to update secret sec_pw: Error response from daemon: rpc error: code = InvalidArgument desc = only updates to Labels are allowed"
        ),
        "{out:?}"
    );
    let out = stack.cli_ok(&["stack", "rm", "sec"]).await?;
    assert_eq!(
        out,
        "Removing service sec_app\nRemoving secret sec_pw\nRemoving network sec_default\n"
    );

    // ---- docker's own e2e stack: `name:` on networks, secrets, configs. Its
    // `volumes: [volume1]` are anonymous volumes at the relative target "volume1":
    // as on Swarm, the stack deploys and the node rejects the task.
    let out = stack
        .cli(&[
            "stack",
            "deploy",
            "-c",
            &fixture("docker-cli/e2e-named-resources.yml"),
            "named",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        set(&[
            "Creating network named-network",
            "Creating network named_network2",
            "Creating secret named-secret",
            "Creating secret named_secret2",
            "Creating config named-config",
            "Creating config named_config2",
            "Creating service named_web",
        ])
    );
    let web = services(&mut control, "named").await?;
    assert_eq!(web.len(), 1);
    let rejected = wait_for(
        "named_web's task rejected on its node",
        DEADLINE,
        || async {
            let tasks = stack.tasks_of("named_web").await.ok()?;
            tasks.into_iter().find_map(|t| {
                let err = t.status?.err;
                err.contains("invalid mount target, must be an absolute path: volume")
                    .then_some(err)
            })
        },
    )
    .await?;
    assert!(rejected.starts_with("invalid mount target"), "{rejected}");
    let secrets = control
        .list_secrets(ListSecretsRequest {
            filters: Some(by_label("named")),
        })
        .await?
        .into_inner()
        .secrets;
    let mut secret_names: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.spec.as_ref()?.annotations.as_ref())
        .map(|a| a.name.clone())
        .collect();
    secret_names.sort();
    assert_eq!(secret_names, vec!["named-secret", "named_secret2"]);

    let out = stack.cli_ok(&["stack", "rm", "ghost", "named"]).await?;
    assert_eq!(
        out,
        "Removing service ghost_db\nRemoving service ghost_db-backup\nRemoving service ghost_ghost\n\
         Removing secret db-password\nRemoving network ghost_ghost\n\
         Removing service named_web\nRemoving secret named-secret\nRemoving secret named_secret2\n\
         Removing config named-config\nRemoving config named_config2\n\
         Removing network named-network\nRemoving network named_network2\n"
    );

    // ---- stack rm: services (sorted) → networks; volumes are never touched.
    let out = stack
        .cli_ok(&["stack", "rm", "--detach=false", "vote", "pr"])
        .await?;
    assert_eq!(
        out,
        "Removing service vote_db\nRemoving service vote_redis\nRemoving service vote_result\n\
         Removing service vote_vote\nRemoving service vote_worker\n\
         Removing network vote_backend\nRemoving network vote_frontend\n\
         Removing service pr_a\nRemoving network pr_default\n"
    );
    for ns in ["vote", "pr", "ghost", "named"] {
        assert!(services(&mut control, ns).await?.is_empty(), "{ns}");
        assert!(networks(&mut control, ns).await?.is_empty(), "{ns}");
    }
    // The workers stop and remove every task container of the removed stacks.
    wait_for("the stacks' containers to go", DEADLINE, || async {
        no_stack_containers(STACKS).then_some(())
    })
    .await?;
    let out = stack.cli(&["stack", "rm", "vote"]).await?;
    assert_eq!(out.code, 0);
    assert_eq!(out.stderr, "Nothing found in stack: vote\n");
    let out = stack.cli(&["stack", "services", "vote"]).await?;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (0, "Nothing found in stack: vote\n")
    );
    let out = stack.cli(&["stack", "ps", "vote"]).await?;
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "Error: nothing found in stack: vote\n");
    // The workers' Docker networks outlive the cluster; leave the engine clean.
    drop(stack);
    remove_stack_leftovers(STACKS, POOL)?;
    Ok(())
}
