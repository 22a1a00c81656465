//! Secrets and configs in the assignments: a node gets one only while a task of its set
//! uses it, before the task, opened (secrets), and it is removed after the last task
//! using it left; a COMPLETE after a reconnect carries it again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_dispatcher::DispatcherOptions;
use shoal_pki::{Kek, SecretSealer};
use shoal_proto::v1::assignment::Item;
use shoal_proto::v1::assignment_change::Action;
use shoal_proto::v1::assignments_message::Type as MessageType;
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{
    Annotations, AssignmentsMessage, Config, ConfigReference, ConfigSpec, Meta, Secret,
    SecretReference, SecretSpec, Task, TaskState,
};
use shoal_store::Object;

const LONG_PERIOD: Duration = Duration::from_secs(30);
const PLAINTEXT: &[u8] = b"hunter2-the-payload";

fn annotations(name: &str) -> Option<Annotations> {
    Some(Annotations {
        name: name.into(),
        ..Default::default()
    })
}

fn sealed_secret(sealer: &SecretSealer, name: &str) -> anyhow::Result<Secret> {
    Ok(Secret {
        meta: Some(Meta {
            id: shoal_store::new_id(),
            ..Default::default()
        }),
        spec: Some(SecretSpec {
            annotations: annotations(name),
            ..Default::default()
        }),
        sealed: sealer.seal(name, PLAINTEXT)?,
        ..Default::default()
    })
}

fn config(name: &str) -> Config {
    Config {
        meta: Some(Meta {
            id: shoal_store::new_id(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            annotations: annotations(name),
            data: b"listen 80;".to_vec(),
            ..Default::default()
        }),
    }
}

/// A task on `node` using `secrets` and `configs`.
fn task_using(node: &str, slot: u64, secrets: &[&Secret], configs: &[&Config]) -> Task {
    let mut t = task_on(node, "web", slot, TaskState::Assigned);
    if let Some(Runtime::Container(c)) = t.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
        c.secrets = secrets
            .iter()
            .map(|s| SecretReference {
                secret_id: s.id().into(),
                secret_name: s.name().unwrap_or("").into(),
                target: s.name().unwrap_or("").into(),
                ..Default::default()
            })
            .collect();
        c.configs = configs
            .iter()
            .map(|c| ConfigReference {
                config_id: c.id().into(),
                config_name: c.name().unwrap_or("").into(),
                target: "/etc/app.conf".into(),
                ..Default::default()
            })
            .collect();
    }
    t
}

/// (kind, id, action) of every change, in order.
fn changes(msg: &AssignmentsMessage) -> Vec<(&'static str, String, Action)> {
    msg.changes
        .iter()
        .filter_map(|c| {
            let (kind, id) = match c.assignment.as_ref()?.item.as_ref()? {
                Item::Task(t) => ("task", t.id().to_string()),
                Item::Secret(s) => ("secret", s.id().to_string()),
                Item::Config(c) => ("config", c.id().to_string()),
            };
            Some((kind, id, c.action()))
        })
        .collect()
}

fn sent_secrets(msg: &AssignmentsMessage) -> Vec<Secret> {
    msg.changes
        .iter()
        .filter(|c| c.action() == Action::Update)
        .filter_map(|c| match c.assignment.as_ref()?.item.as_ref()? {
            Item::Secret(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn position(msg: &AssignmentsMessage, kind: &str, id: &str) -> Option<usize> {
    changes(msg)
        .iter()
        .position(|(k, i, _)| *k == kind && i == id)
}

#[tokio::test]
async fn secrets_and_configs_follow_the_tasks_that_use_them() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let sealer = Arc::new(SecretSealer::new(&Kek::generate())?);
    let d = swarm
        .start_dispatcher_with(DispatcherOptions {
            secret_sealer: Some(sealer.clone()),
            ..Default::default()
        })
        .await?;
    let mut a = swarm.worker_session(&d).await?;
    let mut b = swarm.worker_session(&d).await?;
    let secret = swarm
        .store()
        .create(sealed_secret(&sealer, "db_pw")?)
        .await?;
    let conf = swarm.store().create(config("nginx_conf")).await?;
    let a1 = swarm
        .store()
        .create(task_using(&a.node_id, 1, &[&secret], &[&conf]))
        .await?;
    let b1 = swarm
        .store()
        .create(task_using(&b.node_id, 2, &[], &[]))
        .await?;

    // A gets the secret (opened) and the config before the task; B gets neither.
    let mut sa = open_assignments(&mut a.client, &a.session_id).await?;
    let complete = next_assignments(&mut sa).await?;
    assert_eq!(complete.r#type(), MessageType::Complete);
    let task_at = position(&complete, "task", a1.id()).ok_or_else(|| anyhow::anyhow!("no a1"))?;
    let secret_at = position(&complete, "secret", secret.id())
        .ok_or_else(|| anyhow::anyhow!("no secret in {:?}", changes(&complete)))?;
    let config_at = position(&complete, "config", conf.id())
        .ok_or_else(|| anyhow::anyhow!("no config in {:?}", changes(&complete)))?;
    assert!(
        secret_at < task_at && config_at < task_at,
        "{:?}",
        changes(&complete)
    );
    let opened = sent_secrets(&complete);
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].spec.as_ref().map(|s| s.data.as_slice()),
        Some(PLAINTEXT),
        "the secret arrives opened"
    );
    assert!(
        opened[0].sealed.is_empty(),
        "the sealed payload is not sent"
    );
    let mut sb = open_assignments(&mut b.client, &b.session_id).await?;
    let complete_b = next_assignments(&mut sb).await?;
    assert_eq!(
        changes(&complete_b),
        vec![("task", b1.id().to_string(), Action::Update)],
        "B has no task using the secret"
    );

    // A second task sharing the secret: no second copy.
    let a2 = swarm
        .store()
        .create(task_using(&a.node_id, 3, &[&secret], &[]))
        .await?;
    let inc = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&inc),
        vec![("task", a2.id().to_string(), Action::Update)]
    );

    // a1 goes: the config (only a1's) is removed, the secret (a2 still uses it) stays.
    swarm.store().delete::<Task>(a1.id(), None).await?;
    let inc = next_assignments(&mut sa).await?;
    let got = changes(&inc);
    assert!(
        got.contains(&("task", a1.id().to_string(), Action::Remove)),
        "{got:?}"
    );
    assert!(
        got.contains(&("config", conf.id().to_string(), Action::Remove)),
        "{got:?}"
    );
    assert!(!got.iter().any(|(k, _, _)| *k == "secret"), "{got:?}");
    assert!(
        position(&inc, "config", conf.id()) > position(&inc, "task", a1.id()),
        "removed after the task: {got:?}"
    );

    // A label change of the secret is sent again to its user only.
    let mut relabelled: Secret = swarm.store().get(secret.id()).await?;
    if let Some(a) = relabelled
        .spec
        .as_mut()
        .and_then(|s| s.annotations.as_mut())
    {
        a.labels.insert("rotated".into(), "no".into());
    }
    swarm.store().update(relabelled).await?;
    let inc = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&inc),
        vec![("secret", secret.id().to_string(), Action::Update)]
    );
    let again = sent_secrets(&inc);
    assert_eq!(
        again[0]
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .and_then(|a| a.labels.get("rotated"))
            .map(String::as_str),
        Some("no")
    );

    // a2 moves to B: A loses the task, then the secret; B gets the secret, then the task.
    let mut moved: Task = swarm.store().get(a2.id()).await?;
    moved.node_id = b.node_id.clone();
    swarm.store().update(moved).await?;
    let inc = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&inc),
        vec![
            ("task", a2.id().to_string(), Action::Remove),
            ("secret", secret.id().to_string(), Action::Remove),
        ]
    );
    let inc_b = next_assignments(&mut sb).await?;
    assert_eq!(
        changes(&inc_b),
        vec![
            ("secret", secret.id().to_string(), Action::Update),
            ("task", a2.id().to_string(), Action::Update),
        ]
    );

    // B reconnects: its fresh COMPLETE carries the secret again.
    drop(sb);
    let node_b = b.node_id.clone();
    let b_creds = swarm.credentials(&node_b, shoal_pki::Role::Worker, &swarm.cluster_id)?;
    let mut client = connect_as(d.addr, &b_creds).await?;
    let (second, _stream) = open_session(&mut client, &node_b).await?;
    let mut fresh = open_assignments(&mut client, &second.session_id).await?;
    let complete = next_assignments(&mut fresh).await?;
    assert_eq!(complete.r#type(), MessageType::Complete);
    assert!(
        position(&complete, "secret", secret.id()) < position(&complete, "task", a2.id()),
        "{:?}",
        changes(&complete)
    );
    assert_eq!(
        sent_secrets(&complete)[0]
            .spec
            .as_ref()
            .map(|s| s.data.as_slice()),
        Some(PLAINTEXT)
    );

    // a2 is deleted: the secret is removed from B too.
    swarm.store().delete::<Task>(a2.id(), None).await?;
    let inc = next_assignments(&mut fresh).await?;
    assert_eq!(
        changes(&inc),
        vec![
            ("task", a2.id().to_string(), Action::Remove),
            ("secret", secret.id().to_string(), Action::Remove),
        ]
    );
    d.stop().await
}

#[tokio::test]
async fn a_task_whose_secret_is_missing_is_sent_without_it() -> anyhow::Result<()> {
    let swarm = Swarm::start(LONG_PERIOD).await?;
    let sealer = Arc::new(SecretSealer::new(&Kek::generate())?);
    let d = swarm
        .start_dispatcher_with(DispatcherOptions {
            secret_sealer: Some(sealer.clone()),
            ..Default::default()
        })
        .await?;
    let mut a = swarm.worker_session(&d).await?;
    // Never stored.
    let ghost = sealed_secret(&sealer, "ghost")?;
    let t = swarm
        .store()
        .create(task_using(&a.node_id, 1, &[&ghost], &[]))
        .await?;
    let mut sa = open_assignments(&mut a.client, &a.session_id).await?;
    let complete = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&complete),
        vec![("task", t.id().to_string(), Action::Update)]
    );

    // A task that ended (past RUNNING) releases its secret though it stays in the set.
    let secret = swarm.store().create(sealed_secret(&sealer, "pw")?).await?;
    let t2 = swarm
        .store()
        .create(task_using(&a.node_id, 2, &[&secret], &[]))
        .await?;
    let inc = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&inc),
        vec![
            ("secret", secret.id().to_string(), Action::Update),
            ("task", t2.id().to_string(), Action::Update),
        ]
    );
    let rejected = update_status(
        &mut a.client,
        &a.session_id,
        vec![status_update(
            t2.id(),
            TaskState::Failed,
            "task: non-zero exit (1)",
        )],
    )
    .await?;
    assert!(rejected.is_empty(), "{rejected:?}");
    let inc = next_assignments(&mut sa).await?;
    assert_eq!(
        changes(&inc),
        vec![("secret", secret.id().to_string(), Action::Remove)]
    );
    d.stop().await
}
