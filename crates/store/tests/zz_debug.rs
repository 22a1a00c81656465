mod common;
use common::*;
use futures::StreamExt;
use shoal_proto::v1::Service;
use shoal_store::Object;

#[tokio::test]
async fn debug() -> anyhow::Result<()> {
    let (etcd, store) = etcd_and_store().await?;
    let web = store.create(service("web")).await?;
    eprintln!("web {}", web.version());
    let _ = store.create(service("web")).await;
    let mut renamed = web.clone();
    renamed
        .spec
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .name = "api".into();
    let renamed = store.update(renamed).await?;
    eprintln!("renamed {}", renamed.version());
    let web2 = store.create(service("web")).await?;
    eprintln!("web2 {}", web2.version());
    let mut clash = renamed.clone();
    clash
        .spec
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .name = "web".into();
    eprintln!("clash {:?}", store.update(clash).await.map(|s| s.version()));
    eprintln!("rev {}", store.revision().await?);
    let mut raw = raw_client(&etcd).await?;
    let mut w = raw
        .watch(
            "/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(1),
            ),
        )
        .await?;
    let _ = w.next().await;
    if let Some(Ok(resp)) = w.next().await {
        for e in resp.events() {
            let kv = e.kv().unwrap();
            eprintln!(
                "{:?} {} {}",
                e.event_type(),
                String::from_utf8_lossy(kv.key()),
                kv.mod_revision()
            );
        }
    }
    let _ = store.get::<Service>(web.id()).await?;
    Ok(())
}
