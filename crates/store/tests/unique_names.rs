//! Names of services (and networks, secrets, configs, clusters) are unique: a taken name is
//! refused without storing anything, a rename frees the old name, a delete frees the name.

mod common;

use common::*;
use shoal_proto::v1::{Node, Service};
use shoal_store::{Error, Object};

#[tokio::test]
async fn names_are_unique_and_follow_renames_and_deletes() -> anyhow::Result<()> {
    let (etcd, store) = etcd_and_store().await?;
    let web = store.create(service("web")).await?;

    // Taken name: AlreadyExists, and nothing new is stored.
    let before = store.list::<Service>().await?;
    match store.create(service("web")).await {
        Err(Error::AlreadyExists { name, .. }) => assert_eq!(name, "web"),
        other => anyhow::bail!("expected AlreadyExists, got {other:?}"),
    }
    let after = store.list::<Service>().await?;
    assert_eq!(after.objects, before.objects);
    assert_eq!(
        after.revision, before.revision,
        "a refused create wrote something"
    );

    // Rename web -> api: the old name is free again, the new one taken.
    let mut renamed = web.clone();
    renamed
        .spec
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .name = "api".into();
    let renamed = store.update(renamed).await?;
    assert_eq!(store.get_by_name::<Service>("api").await?.id(), web.id());
    assert!(matches!(
        store.get_by_name::<Service>("web").await,
        Err(Error::NotFound { .. })
    ));
    let web2 = store.create(service("web")).await?;
    assert_ne!(web2.id(), web.id());

    // Renaming onto a taken name is refused and changes nothing.
    let mut clash = renamed.clone();
    clash
        .spec
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .name = "web".into();
    assert!(matches!(
        store.update(clash).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(store.get::<Service>(web.id()).await?, renamed);

    // Delete frees the name; the raw keyspace holds no name key for it.
    let gone = store
        .delete::<Service>(renamed.id(), Some(renamed.version()))
        .await?;
    // The object as it was, at the revision of its deletion.
    assert!(gone.version() > renamed.version());
    let mut as_it_was = gone.clone();
    as_it_was.set_version(renamed.version());
    assert_eq!(as_it_was, renamed);
    assert!(matches!(
        store.get::<Service>(web.id()).await,
        Err(Error::NotFound { .. })
    ));
    store.create(service("api")).await?;
    let mut raw = raw_client(&etcd).await?;
    let names = raw
        .get(
            "/shoal/test/names/service/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    let mut keys: Vec<String> = names
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "/shoal/test/names/service/api",
            "/shoal/test/names/service/web"
        ]
    );

    // Nodes have no unique names: two nodes may share a hostname-like name.
    let n1 = store.create(Node::default()).await?;
    let n2 = store.create(Node::default()).await?;
    assert_ne!(n1.id(), n2.id());
    Ok(())
}
