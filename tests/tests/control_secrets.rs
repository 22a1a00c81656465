//! `docker secret` semantics through a real manager: swarmkit's rules and words, the
//! payload sealed at rest (absent from etcd's data directory and every log, present
//! only as ciphertext), never returned by the API, removal refused while a service
//! uses it; then the same through the `shoal` CLI (`secret`, `service --secret/
//! --config`, `shoal info` in and outside a swarm).

use std::collections::HashMap;
use std::path::Path;

use shoal_proto::v1::{
    Annotations, ConfigSpec, CreateConfigRequest, CreateSecretRequest, CreateServiceRequest,
    Driver, GetSecretRequest, GetServiceRequest, ListFilters, ListSecretsRequest,
    RemoveSecretRequest, RemoveServiceRequest, Secret, SecretReference, SecretSpec,
    UpdateSecretRequest, Version, task_spec,
};
use shoal_scenarios::{Stack, StackOptions, Swarm, container_service, kek_file};
use shoal_store::Store;
use shoal_testkit::Infra;
use tonic::Code;

/// A payload no file of the test setup contains by accident.
const PAYLOAD: &[u8] = b"shoal-secret-plaintext-4f1c9e7a2b";

fn spec(name: &str, data: &[u8], labels: &[(&str, &str)]) -> SecretSpec {
    SecretSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }),
        data: data.to_vec(),
        ..Default::default()
    }
}

fn meta_id(s: &Secret) -> String {
    s.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

fn version(s: &Secret) -> u64 {
    s.meta
        .as_ref()
        .and_then(|m| m.version)
        .map(|v| v.index)
        .unwrap_or(0)
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                // A socket or a file removed meanwhile is no evidence either way.
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(entry.path().display().to_string());
                }
            }
        }
    }
    Ok(found)
}

fn with_secret(name: &str, refs: Vec<SecretReference>) -> shoal_proto::v1::ServiceSpec {
    let mut s = container_service(name, &[], Vec::new());
    if let Some(task_spec::Runtime::Container(c)) = s.task.as_mut().and_then(|t| t.runtime.as_mut())
    {
        c.secrets = refs;
    }
    s
}

fn sref(id: &str, name: &str, target: &str) -> SecretReference {
    SecretReference {
        secret_id: id.into(),
        secret_name: name.into(),
        target: target.into(),
        uid: "0".into(),
        gid: "0".into(),
        mode: Some(0o444),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_lifecycle_with_swarms_rules_sealed_at_rest() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    let created = control
        .create_secret(CreateSecretRequest {
            spec: Some(spec("db_pw", PAYLOAD, &[("env", "prod")])),
        })
        .await?
        .into_inner()
        .secret
        .expect("created secret");
    let id = meta_id(&created);
    assert_eq!(id.len(), 25);
    assert!(created.spec.as_ref().expect("spec").data.is_empty());
    assert!(
        created.sealed.is_empty(),
        "the API never returns the sealed form"
    );
    let v1 = version(&created);

    // Every refusal in swarmkit's words, nothing stored.
    let refusals: Vec<(SecretSpec, Code, &str)> = vec![
        (
            spec("", b"x", &[]),
            Code::InvalidArgument,
            "name must be provided",
        ),
        (
            spec("-bad", b"x", &[]),
            Code::InvalidArgument,
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        ),
        (
            spec("empty", b"", &[]),
            Code::InvalidArgument,
            "secret data must be larger than 0 and less than 512000 bytes",
        ),
        (
            spec("big", &vec![b'x'; 512_000], &[]),
            Code::InvalidArgument,
            "secret data must be larger than 0 and less than 512000 bytes",
        ),
        (
            SecretSpec {
                driver: Some(Driver::default()),
                ..spec("driven", b"", &[])
            },
            Code::InvalidArgument,
            "secret driver must have a name",
        ),
        (
            SecretSpec {
                templating: Some(Driver {
                    name: "jinja".into(),
                    options: HashMap::new(),
                }),
                ..spec("tmpl", b"x", &[])
            },
            Code::InvalidArgument,
            "unrecognized template type",
        ),
        (
            spec("db_pw", b"other", &[]),
            Code::AlreadyExists,
            "secret db_pw already exists",
        ),
    ];
    for (bad, code, words) in refusals {
        let err = control
            .create_secret(CreateSecretRequest { spec: Some(bad) })
            .await
            .expect_err(words);
        assert_eq!(err.code(), code, "{words}: {err:?}");
        assert!(
            err.message().contains(words),
            "{words:?} in {:?}",
            err.message()
        );
    }
    // The largest payload swarm takes, and a templated one.
    let big = control
        .create_secret(CreateSecretRequest {
            spec: Some(spec("big", &vec![b'y'; 511_999], &[])),
        })
        .await?
        .into_inner()
        .secret
        .expect("big");
    let templated = control
        .create_secret(CreateSecretRequest {
            spec: Some(SecretSpec {
                templating: Some(Driver {
                    name: "golang".into(),
                    options: HashMap::new(),
                }),
                ..spec("tmpl", b"{{ .Service.Name }}", &[])
            }),
        })
        .await?
        .into_inner()
        .secret
        .expect("templated");
    let listed = control
        .list_secrets(ListSecretsRequest::default())
        .await?
        .into_inner()
        .secrets;
    let mut names: Vec<String> = listed
        .iter()
        .map(|s| {
            s.spec
                .clone()
                .unwrap_or_default()
                .annotations
                .unwrap_or_default()
                .name
        })
        .collect();
    names.sort();
    assert_eq!(names, ["big", "db_pw", "tmpl"]);
    assert!(
        listed
            .iter()
            .all(|s| s.sealed.is_empty() && s.spec.as_ref().is_some_and(|sp| sp.data.is_empty())),
        "List returns neither data nor sealed"
    );
    let by_name = control
        .list_secrets(ListSecretsRequest {
            filters: Some(ListFilters {
                names: vec!["db_pw".into()],
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .secrets;
    assert_eq!(by_name.len(), 1);
    assert_eq!(
        templated
            .spec
            .clone()
            .unwrap_or_default()
            .templating
            .map(|t| t.name),
        Some("golang".to_string())
    );

    // Get by name and by unique id prefix: no data either.
    for reference in ["db_pw", &id[..8]] {
        let got = control
            .get_secret(GetSecretRequest {
                secret_id: reference.into(),
            })
            .await?
            .into_inner()
            .secret
            .expect("secret");
        assert_eq!(meta_id(&got), id);
        assert!(got.sealed.is_empty() && got.spec.expect("spec").data.is_empty());
    }

    // In etcd: empty spec.data, the sealed payload, which opens with the KEK.
    let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
    let stored: Secret = store.get(&id).await?;
    assert!(stored.spec.as_ref().expect("spec").data.is_empty());
    assert!(!stored.sealed.is_empty());
    assert!(!stored.sealed.windows(PAYLOAD.len()).any(|w| w == PAYLOAD));
    let kek = shoal_pki::Kek::from_file(kek_file(&infra))?;
    let sealer = shoal_pki::SecretSealer::new(&kek)?;
    assert_eq!(sealer.open("db_pw", &stored.sealed)?, PAYLOAD);
    // Nowhere on etcd's disk in plaintext; the ciphertext is (the WAL holds it).
    let data_dir = infra.etcd.data_dir();
    assert!(data_dir.is_dir(), "{}", data_dir.display());
    assert_eq!(files_containing(&data_dir, PAYLOAD)?, Vec::<String>::new());
    assert!(
        !files_containing(&data_dir, &stored.sealed)?.is_empty(),
        "the sealed payload is what etcd stores"
    );

    // Updates: only labels; no data or identical data is fine, other data is not.
    let update = |data: &[u8], labels: &[(&str, &str)], at: Option<u64>| UpdateSecretRequest {
        secret_id: id.clone(),
        secret_version: at.map(|index| Version { index }),
        spec: Some(spec("db_pw", data, labels)),
    };
    let err = control
        .update_secret(update(b"", &[], None))
        .await
        .expect_err("no version");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let v2 = version(
        &control
            .update_secret(update(b"", &[("env", "staging")], Some(v1)))
            .await?
            .into_inner()
            .secret
            .expect("labels-only update"),
    );
    let err = control
        .update_secret(update(b"", &[("env", "lost")], Some(v1)))
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let v3 = version(
        &control
            .update_secret(update(PAYLOAD, &[("env", "same-data")], Some(v2)))
            .await?
            .into_inner()
            .secret
            .expect("identical data accepted"),
    );
    for bad in [
        update(b"changed", &[("env", "x")], Some(v3)),
        UpdateSecretRequest {
            spec: Some(spec("renamed", b"", &[])),
            ..update(b"", &[], Some(v3))
        },
    ] {
        let err = control.update_secret(bad).await.expect_err("immutable");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("only updates to Labels are allowed"),
            "{err:?}"
        );
    }
    let err = control
        .update_secret(UpdateSecretRequest {
            secret_id: "nope".into(),
            ..update(b"", &[], Some(v3))
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("secret nope not found"), "{err:?}");
    let stored: Secret = store.get(&id).await?;
    let labels = stored
        .spec
        .clone()
        .unwrap_or_default()
        .annotations
        .unwrap_or_default()
        .labels;
    assert_eq!(labels.get("env").map(String::as_str), Some("same-data"));
    assert_eq!(
        sealer.open("db_pw", &stored.sealed)?,
        PAYLOAD,
        "data unchanged"
    );

    // Services must name existing secrets by their current names.
    for (refs, words) in [
        (
            vec![sref("ghost-id", "ghost", "g")],
            "secret not found: ghost",
        ),
        (vec![sref(&id, "other", "o")], "secret not found: other"),
        (
            vec![sref("a-id", "a", "a"), sref("b-id", "b", "b")],
            "secrets not found: a, b",
        ),
        (
            vec![sref(&id, "db_pw", "x"), sref(&meta_id(&big), "big", "x")],
            "secret references 'db_pw' and 'big' have a conflicting target: 'x'",
        ),
        (
            vec![sref(&id, "db_pw", "")],
            "malformed file secret reference, invalid target file name provided",
        ),
    ] {
        let err = control
            .create_service(CreateServiceRequest {
                spec: Some(with_secret("bad", refs)),
            })
            .await
            .expect_err(words);
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(words),
            "{words:?} in {:?}",
            err.message()
        );
    }

    // In use: refused in swarmkit's words, allowed once the services are gone.
    let mut service_ids = Vec::new();
    for name in ["web", "api"] {
        let svc = control
            .create_service(CreateServiceRequest {
                spec: Some(with_secret(name, vec![sref(&id, "db_pw", "db_pw")])),
            })
            .await?
            .into_inner()
            .service
            .expect("service");
        service_ids.push(svc.meta.expect("meta").id);
    }
    let err = control
        .remove_secret(RemoveSecretRequest {
            secret_id: "db_pw".into(),
        })
        .await
        .expect_err("in use");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let msg = err.message();
    assert!(
        msg.starts_with("secret 'db_pw' is in use by the following services: ")
            && msg.contains("web")
            && msg.contains("api"),
        "{msg}"
    );
    control
        .remove_service(RemoveServiceRequest {
            service_id: service_ids[1].clone(),
        })
        .await?;
    let err = control
        .remove_secret(RemoveSecretRequest {
            secret_id: id.clone(),
        })
        .await
        .expect_err("still in use");
    assert_eq!(
        err.message(),
        "secret 'db_pw' is in use by the following service: web"
    );
    assert!(
        store.try_get::<Secret>(&id).await?.is_some(),
        "nothing removed"
    );
    control
        .remove_service(RemoveServiceRequest {
            service_id: service_ids[0].clone(),
        })
        .await?;
    control
        .remove_secret(RemoveSecretRequest {
            secret_id: id.clone(),
        })
        .await?;
    let err = control
        .get_secret(GetSecretRequest {
            secret_id: id.clone(),
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), Code::NotFound);
    let err = control
        .remove_secret(RemoveSecretRequest {
            secret_id: "nope".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "could not find secret nope");

    // No log line of the control plane ever carried the payload.
    assert_eq!(
        files_containing(infra.dir.path(), PAYLOAD)?,
        Vec::<String>::new()
    );
    Ok(())
}

/// The CLI end to end: `secret` commands, services referencing secrets and configs by
/// name, `shoal info` in a swarm and outside one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_configs_and_info_through_the_cli() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 0,
            ..Default::default()
        },
    )
    .await?;
    let files = tempfile::tempdir()?;
    let pw = files.path().join("pw");
    std::fs::write(&pw, PAYLOAD)?;
    let conf = files.path().join("app.conf");
    std::fs::write(&conf, "port=80\n")?;
    let pw = pw.display().to_string();
    let conf = conf.display().to_string();

    let id = stack
        .cli_ok(&["secret", "create", "--label", "env=prod", "db_pw", &pw])
        .await?;
    let id = id.trim().to_string();
    assert_eq!(id.len(), 25, "{id}");
    let out = stack.cli(&["secret", "create", "from_stdin", "-"]).await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error reading from STDIN: data is empty"),
        "{}",
        out.stderr
    );
    let out = stack.cli(&["secret", "create", "db_pw", &pw]).await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("secret db_pw already exists"),
        "{}",
        out.stderr
    );

    let ls = stack.cli_ok(&["secret", "ls"]).await?;
    let mut lines = ls.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"],
        "{ls}"
    );
    let row = lines.next().unwrap_or("");
    assert!(
        row.starts_with(&id) && row.contains("db_pw") && row.contains("ago"),
        "{ls}"
    );
    assert_eq!(
        stack.cli_ok(&["secret", "ls", "-q"]).await?,
        format!("{id}\n")
    );
    assert_eq!(
        stack
            .cli_ok(&["secret", "ls", "--format", "{{.Name}} {{.Labels}}"])
            .await?,
        "db_pw env=prod\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&stack.cli_ok(&["secret", "inspect", "db_pw"]).await?)?;
    assert_eq!(inspect[0]["ID"], id.as_str());
    assert_eq!(inspect[0]["Spec"]["Name"], "db_pw");
    assert_eq!(inspect[0]["Spec"]["Labels"]["env"], "prod");
    assert!(inspect[0]["Spec"].get("Data").is_none(), "{inspect}");
    let pretty = stack
        .cli_ok(&["secret", "inspect", "--pretty", "db_pw"])
        .await?;
    assert!(
        pretty.starts_with(&format!("ID:              {id}\nName:              db_pw\nLabels:\n - env=prod\nDriver:            \nCreated at:        ")),
        "{pretty}"
    );
    stack.cli_ok(&["config", "create", "myconf", &conf]).await?;

    // `--config` is the service's (the CLI's own file is --cli-config).
    stack
        .cli_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--secret",
            "db_pw",
            "--secret",
            "source=db_pw,target=/etc/pw,uid=33,mode=0400",
            "--config",
            "myconf",
            "nginx:alpine",
        ])
        .await?;
    let mut control = stack.control().await?;
    let svc = control
        .get_service(GetServiceRequest {
            service_id: "web".into(),
            insert_defaults: false,
        })
        .await?
        .into_inner()
        .service
        .expect("web");
    let Some(task_spec::Runtime::Container(c)) = svc
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.clone())
    else {
        anyhow::bail!("web is not a container service");
    };
    assert_eq!(c.secrets.len(), 2);
    assert!(
        c.secrets
            .iter()
            .all(|r| r.secret_id == id && r.secret_name == "db_pw")
    );
    let etc = c
        .secrets
        .iter()
        .find(|r| r.target == "/etc/pw")
        .expect("target");
    assert_eq!(
        (etc.uid.as_str(), etc.gid.as_str(), etc.mode),
        ("33", "0", Some(0o400))
    );
    assert_eq!(c.configs.len(), 1);
    assert_eq!(
        (
            c.configs[0].config_name.as_str(),
            c.configs[0].target.as_str(),
            c.configs[0].mode
        ),
        ("myconf", "myconf", Some(0o444))
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&stack.cli_ok(&["service", "inspect", "web"]).await?)?;
    let cs = &inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["Secrets"][0]["SecretName"], "db_pw", "{cs}");
    assert_eq!(cs["Configs"][0]["File"]["Name"], "myconf", "{cs}");
    let pretty = stack
        .cli_ok(&["service", "inspect", "--pretty", "web"])
        .await?;
    assert!(
        pretty.contains("Secrets:\n Target:\tdb_pw\n  Source:\tdb_pw\n"),
        "{pretty}"
    );
    assert!(
        pretty.contains("Configs:\n Target:\tmyconf\n  Source:\tmyconf\n"),
        "{pretty}"
    );

    let out = stack
        .cli(&[
            "service",
            "create",
            "-d",
            "--name",
            "bad",
            "--secret",
            "ghost",
            "nginx:alpine",
        ])
        .await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("secret not found: ghost"),
        "{}",
        out.stderr
    );
    let out = stack.cli(&["secret", "rm", "db_pw"]).await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("secret 'db_pw' is in use by the following service: web"),
        "{}",
        out.stderr
    );
    stack
        .cli_ok(&[
            "service",
            "update",
            "-d",
            "--secret-rm",
            "db_pw",
            "--config-rm",
            "myconf",
            "web",
        ])
        .await?;
    assert_eq!(stack.cli_ok(&["secret", "rm", "db_pw"]).await?, "db_pw\n");
    assert_eq!(stack.cli_ok(&["config", "rm", "myconf"]).await?, "myconf\n");
    let out = stack.cli(&["secret", "rm", "db_pw"]).await?;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("could not find secret db_pw"),
        "{}",
        out.stderr
    );

    // `shoal info` as the admin client of the swarm: the manager's node.
    let info = stack.cli_ok(&["info"]).await?;
    let manager_id = std::fs::read_to_string(stack.swarm.manager.state_dir.join("node-id"))?;
    for want in [
        "Swarm: active\n".to_string(),
        format!(" NodeID: {}\n", manager_id.trim()),
        " Is Manager: true\n".into(),
        " Managers: 1\n".into(),
        " Nodes: 1\n".into(),
        " Data Path Port: 4789\n".into(),
        "  Task History Retention Limit: 5\n".into(),
        "  Heartbeat Period: 1 second\n".into(),
        " Root Rotation In Progress: false\n".into(),
        " Manager Addresses:\n".into(),
    ] {
        assert!(info.contains(&want), "{want:?} in\n{info}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &stack
            .cli_ok(&["info", "--format", "{{json .Swarm}}"])
            .await?,
    )?;
    assert_eq!(json["LocalNodeState"], "active");
    assert_eq!(json["ControlAvailable"], true);
    // Outside a swarm: no manager there, no identity here.
    let dead = format!(
        "127.0.0.1:{}",
        shoal_testkit::free_port(shoal_scenarios::LOCALHOST)?
    );
    let out = stack.cli_on(&dead, &["info"]).await?;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "Swarm: inactive\n"),
        "{}",
        out.stderr
    );

    // Nothing the stack wrote (logs, state, etcd) holds the payload.
    assert_eq!(
        files_containing(infra.dir.path(), PAYLOAD)?,
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(&infra.etcd.data_dir(), PAYLOAD)?,
        Vec::<String>::new()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_in_use_are_refused_as_swarm_does() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;
    let config = control
        .create_config(CreateConfigRequest {
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "conf".into(),
                    labels: HashMap::new(),
                }),
                data: b"x".to_vec(),
                templating: None,
            }),
        })
        .await?
        .into_inner()
        .config
        .expect("config");
    let config_id = config.meta.expect("meta").id;
    let mut spec = container_service("web", &[], Vec::new());
    if let Some(task_spec::Runtime::Container(c)) =
        spec.task.as_mut().and_then(|t| t.runtime.as_mut())
    {
        c.configs = vec![shoal_proto::v1::ConfigReference {
            config_id: config_id.clone(),
            config_name: "conf".into(),
            target: "/etc/conf".into(),
            ..Default::default()
        }];
    }
    control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?;
    let err = control
        .remove_config(shoal_proto::v1::RemoveConfigRequest {
            config_id: "conf".into(),
        })
        .await
        .expect_err("in use");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "config 'conf' is in use by the following service: web"
    );
    Ok(())
}
