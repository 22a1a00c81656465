//! `docker config` semantics through the Control API of a real manager process, and the
//! events it publishes after each commit, followed live through `WatchEvents`.

use std::collections::HashMap;
use std::time::Duration;

use shoal_proto::v1::{
    Annotations, ConfigSpec, CreateConfigRequest, GetConfigRequest, ListConfigsRequest,
    ListFilters, RemoveConfigRequest, UpdateConfigRequest, Version, WatchEventsRequest,
};
use shoal_scenarios::Swarm;
use shoal_testkit::Infra;
use tokio_stream::StreamExt;
use tonic::Code;

fn spec(name: &str, data: &str, labels: &[(&str, &str)]) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }),
        data: data.as_bytes().to_vec(),
        templating: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_lifecycle_with_swarms_rules_and_events() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    // Subscribed before any write: the manager subscribes before answering.
    let mut events = control
        .watch_events(WatchEventsRequest {
            kinds: vec!["config".into()],
            ..Default::default()
        })
        .await?
        .into_inner();

    let created = control
        .create_config(CreateConfigRequest {
            spec: Some(spec("app-conf", "port=80", &[("env", "prod")])),
        })
        .await?
        .into_inner()
        .config
        .expect("created config");
    let meta = created.meta.clone().expect("meta");
    assert_eq!(meta.id.len(), 25);
    let v1 = meta.version.expect("version").index;
    assert!(v1 > 0);

    // A taken name: AlreadyExists, nothing stored.
    let err = control
        .create_config(CreateConfigRequest {
            spec: Some(spec("app-conf", "other", &[])),
        })
        .await
        .expect_err("duplicate name");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // A bad name: InvalidArgument naming the field, nothing stored.
    let err = control
        .create_config(CreateConfigRequest {
            spec: Some(spec("-bad-", "x", &[])),
        })
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("name:"), "{}", err.message());
    let all = control
        .list_configs(ListConfigsRequest::default())
        .await?
        .into_inner()
        .configs;
    assert_eq!(all.len(), 1, "only the first config is stored");

    // Found by name and by unique id prefix.
    for reference in ["app-conf", &meta.id[..6]] {
        let got = control
            .get_config(GetConfigRequest {
                config_id: reference.into(),
            })
            .await?
            .into_inner()
            .config
            .expect("config");
        assert_eq!(got.meta.expect("meta").id, meta.id, "lookup by {reference}");
    }
    // Label filters.
    let none = control
        .list_configs(ListConfigsRequest {
            filters: Some(ListFilters {
                labels: [("env".to_string(), "dev".to_string())].into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .configs;
    assert!(none.is_empty());

    // Two updates from the same version: the first wins, the second is refused.
    let update = |labels: &[(&str, &str)], version: u64| UpdateConfigRequest {
        config_id: meta.id.clone(),
        config_version: Some(Version { index: version }),
        spec: Some(spec("app-conf", "port=80", labels)),
    };
    let updated = control
        .update_config(update(&[("env", "staging")], v1))
        .await?
        .into_inner()
        .config
        .expect("updated");
    let v2 = updated.meta.expect("meta").version.expect("version").index;
    assert!(v2 > v1);
    let err = control
        .update_config(update(&[("env", "lost")], v1))
        .await
        .expect_err("stale version");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let stored = control
        .get_config(GetConfigRequest {
            config_id: meta.id.clone(),
        })
        .await?
        .into_inner()
        .config
        .expect("config");
    let labels = stored
        .spec
        .expect("spec")
        .annotations
        .expect("annotations")
        .labels;
    assert_eq!(labels.get("env").map(String::as_str), Some("staging"));

    // Data is immutable.
    let mut change_data = update(&[], v2);
    change_data.spec = Some(spec("app-conf", "port=81", &[]));
    let err = control
        .update_config(change_data)
        .await
        .expect_err("data change");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("only updates to Labels are allowed"));

    control
        .remove_config(RemoveConfigRequest {
            config_id: "app-conf".into(),
        })
        .await?;
    let err = control
        .get_config(GetConfigRequest {
            config_id: meta.id.clone(),
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), Code::NotFound);

    // Exactly the three committed changes, in order, with rising versions.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await?
            .expect("stream open")?;
        seen.push(event);
    }
    let actions: Vec<&str> = seen.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["create", "update", "remove"]);
    assert!(seen.iter().all(|e| e.id == meta.id && e.kind == "config"));
    assert_eq!(seen[0].version, v1);
    assert_eq!(seen[1].version, v2);
    assert!(seen[2].version > v2);
    assert_eq!(
        seen[0].attributes.get("name").map(String::as_str),
        Some("app-conf")
    );
    Ok(())
}
