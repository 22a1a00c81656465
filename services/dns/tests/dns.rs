//! Real DNS queries (UDP and TCP) against shoal-dns's own `run`, over objects written to
//! etcd as the manager's allocator writes them.

mod common;

use std::net::IpAddr;
use std::time::Instant;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shoal_proto::v1::TaskState;
use shoal_proto::v1::endpoint_spec::ResolutionMode;

#[tokio::test]
async fn services_tasks_and_task_names_follow_the_running_tasks() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let front = swarm.network("front", 1, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front], 2)
        .await?;
    let t1 = swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10)])
        .await?;
    let t2 = swarm
        .task(&web, 2, TaskState::Running, &[(&front, 11)])
        .await?;
    let host = Ask::default();
    let tcp = Ask {
        tcp: true,
        ..Ask::default()
    };

    // `web` → its VIP, TTL 0, authoritative, over UDP and TCP.
    let a = wait_answer(dns.dns, "web", host, &[front.addr(2)], DEADLINE).await?;
    assert_eq!(a.ttls, vec![0]);
    assert!(a.authoritative);
    let a = query(dns.dns, "web.", RecordType::A, tcp).await?;
    assert_eq!(a.addrs, vec![front.addr(2)]);
    // `tasks.web` → both task addresses.
    let a = wait_answer(
        dns.dns,
        "tasks.web",
        host,
        &[front.addr(10), front.addr(11)],
        DEADLINE,
    )
    .await?;
    assert_eq!(a.ttls, vec![0, 0]);
    let a = query(dns.dns, "tasks.web", RecordType::A, tcp).await?;
    assert_eq!(a.sorted_addrs(), vec![front.addr(10), front.addr(11)]);
    // `<service>.<network>` and the task name.
    let a = query(dns.dns, "web.front", RecordType::A, host).await?;
    assert_eq!(a.addrs, vec![front.addr(2)]);
    let t1_name = format!("web.1.{}", task_id(&t1));
    let a = query(dns.dns, &t1_name, RecordType::A, host).await?;
    assert_eq!(a.addrs, vec![front.addr(10)]);
    // AAAA for a cluster name: NOERROR, nothing.
    let a = query(dns.dns, "web", RecordType::AAAA, host).await?;
    assert_eq!((a.code, a.addrs.len()), (ResponseCode::NoError, 0));
    // PTR for the VIP and for a task.
    let a = query(dns.dns, "2.1.128.127.in-addr.arpa.", RecordType::PTR, host).await?;
    assert_eq!(a.names, vec!["web.front.".to_string()]);
    let a = query(dns.dns, "10.1.128.127.in-addr.arpa.", RecordType::PTR, host).await?;
    assert_eq!(a.names, vec![format!("{t1_name}.front.")]);

    // Unknown cluster names: NXDOMAIN.
    for name in [
        "nope",
        "tasks.nope",
        "nope.front",
        "web.9.doesnotexist",
        "tasks.web.nope",
    ] {
        let a = query(dns.dns, name, RecordType::A, host).await?;
        assert_eq!(a.code, ResponseCode::NXDomain, "{name}");
    }

    // Scale to 4: four answers within a second of the last write.
    swarm
        .task(&web, 3, TaskState::Running, &[(&front, 12)])
        .await?;
    swarm
        .task(&web, 4, TaskState::Running, &[(&front, 13)])
        .await?;
    let four = [
        front.addr(10),
        front.addr(11),
        front.addr(12),
        front.addr(13),
    ];
    wait_answer(dns.dns, "tasks.web", host, &four, A_SECOND).await?;

    // A task leaving RUNNING leaves the answers within a second.
    swarm.set_state(&t2, TaskState::Failed).await?;
    let left = Instant::now();
    let three = [front.addr(10), front.addr(12), front.addr(13)];
    wait_answer(dns.dns, "tasks.web", host, &three, A_SECOND).await?;
    eprintln!("a FAILED task left the answers in {:?}", left.elapsed());
    let a = query(
        dns.dns,
        &format!("web.2.{}", task_id(&t2)),
        RecordType::A,
        host,
    )
    .await?;
    assert_eq!(a.code, ResponseCode::NXDomain);

    // A task still STARTING (its healthcheck has not passed) is not in the answers
    // until it reports RUNNING.
    let t5 = swarm
        .task(&web, 5, TaskState::Starting, &[(&front, 14)])
        .await?;
    swarm.set_state(&t1, TaskState::Shutdown).await?;
    wait_answer(
        dns.dns,
        "tasks.web",
        host,
        &[front.addr(12), front.addr(13)],
        A_SECOND,
    )
    .await?;
    swarm.set_state(&t5, TaskState::Running).await?;
    wait_answer(
        dns.dns,
        "tasks.web",
        host,
        &[front.addr(12), front.addr(13), front.addr(14)],
        A_SECOND,
    )
    .await?;

    // The service goes: its names are NXDOMAIN.
    swarm
        .store
        .delete::<shoal_proto::v1::Service>(&id_of(&web), None)
        .await?;
    shoal_testkit::wait_for("web to be forgotten", A_SECOND, || async {
        let a = query(dns.dns, "web", RecordType::A, host).await.ok()?;
        (a.code == ResponseCode::NXDomain).then_some(())
    })
    .await?;
    dns.stop().await
}

#[tokio::test]
async fn dnsrr_services_answer_their_task_addresses_shuffled() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let back = swarm.network("back", 2, false).await?;
    let db = swarm
        .service("db", ResolutionMode::Dnsrr, &[&back], 0)
        .await?;
    let mut want = Vec::new();
    for slot in 1..=4u8 {
        swarm
            .task(
                &db,
                u64::from(slot),
                TaskState::Running,
                &[(&back, 10 + slot)],
            )
            .await?;
        want.push(back.addr(10 + slot));
    }
    let first = wait_answer(dns.dns, "db", Ask::default(), &want, DEADLINE).await?;
    let mut orders = std::collections::HashSet::new();
    orders.insert(first.addrs.clone());
    for _ in 0..30 {
        let a = query(dns.dns, "db", RecordType::A, Ask::default()).await?;
        assert_eq!(a.sorted_addrs(), want);
        orders.insert(a.addrs);
    }
    assert!(orders.len() > 1, "31 answers, always in the same order");
    dns.stop().await
}

#[tokio::test]
async fn a_task_sees_only_the_services_on_its_networks() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let front = swarm.network("front", 1, false).await?;
    let back = swarm.network("back", 2, false).await?;
    let ingress = swarm.network("ingress", 3, true).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front, &ingress], 2)
        .await?;
    let db = swarm
        .service("db", ResolutionMode::Vip, &[&back], 2)
        .await?;
    let api = swarm
        .service("api", ResolutionMode::Vip, &[&front, &back, &ingress], 3)
        .await?;
    let web_task = swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10), (&ingress, 10)])
        .await?;
    swarm
        .task(&db, 1, TaskState::Running, &[(&back, 10)])
        .await?;
    swarm
        .task(
            &api,
            1,
            TaskState::Running,
            &[(&front, 20), (&back, 20), (&ingress, 20)],
        )
        .await?;
    let _ = web_task;

    // The host sees everything.
    let host = Ask::default();
    wait_answer(dns.dns, "web", host, &[front.addr(2)], DEADLINE).await?;
    wait_answer(dns.dns, "db", host, &[back.addr(2)], DEADLINE).await?;
    wait_answer(dns.dns, "api", host, &[front.addr(3)], DEADLINE).await?;

    // web's task, asking from its own address: web and api (on front), not db. The
    // shared ingress network does not count.
    for tcp in [false, true] {
        let from_web = Ask {
            from: Some(front.addr(10)),
            tcp,
            ..Ask::default()
        };
        let a = query(dns.dns, "web", RecordType::A, from_web).await?;
        assert_eq!(a.addrs, vec![front.addr(2)]);
        let a = query(dns.dns, "api", RecordType::A, from_web).await?;
        assert_eq!(a.addrs, vec![front.addr(3)]);
        let a = query(dns.dns, "tasks.api", RecordType::A, from_web).await?;
        assert_eq!(a.addrs, vec![front.addr(20)]);
        for name in ["db", "tasks.db", "db.back", "web.ingress"] {
            let a = query(dns.dns, name, RecordType::A, from_web).await?;
            assert_eq!(a.code, ResponseCode::NXDomain, "{name} from web's task");
        }
    }
    // db's task: db and api (api's VIP on back), not web.
    let from_db = Ask {
        from: Some(back.addr(10)),
        ..Ask::default()
    };
    let a = query(dns.dns, "api", RecordType::A, from_db).await?;
    assert_eq!(a.addrs, vec![back.addr(3)]);
    let a = query(dns.dns, "web", RecordType::A, from_db).await?;
    assert_eq!(a.code, ResponseCode::NXDomain);

    // A relayed query: the source is no task, the EDNS Client Subnet names web's task.
    for tcp in [false, true] {
        let relayed = Ask {
            ecs: Some(front.addr(10)),
            tcp,
            ..Ask::default()
        };
        let a = query(dns.dns, "db", RecordType::A, relayed).await?;
        assert_eq!(a.code, ResponseCode::NXDomain, "db via ECS of web's task");
        let a = query(dns.dns, "web", RecordType::A, relayed).await?;
        assert_eq!(a.addrs, vec![front.addr(2)]);
    }
    // A task cannot widen its view by claiming another address in the option.
    let claiming = Ask {
        from: Some(front.addr(10)),
        ecs: Some(IpAddr::from([127, 0, 0, 1])),
        ..Ask::default()
    };
    let a = query(dns.dns, "db", RecordType::A, claiming).await?;
    assert_eq!(a.code, ResponseCode::NXDomain);
    dns.stop().await
}

#[tokio::test]
async fn network_aliases_answer_like_the_service_on_their_network() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let worker = swarm.credentials(shoal_pki::Role::Worker, &swarm.cluster_id)?;
    let mut resolver = swarm.resolver_ready(dns.grpc, &worker).await?;
    let front = swarm.network("front", 1, false).await?;
    let back = swarm.network("back", 2, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front], 2)
        .await?;
    let cache = swarm
        .service("cache", ResolutionMode::Vip, &[&front, &back], 4)
        .await?;
    let db = swarm
        .service("db", ResolutionMode::Dnsrr, &[&back], 0)
        .await?;
    swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10)])
        .await?;
    swarm
        .task(&cache, 1, TaskState::Running, &[(&front, 20), (&back, 20)])
        .await?;
    swarm
        .task(&db, 1, TaskState::Running, &[(&back, 10)])
        .await?;
    swarm
        .task(&db, 2, TaskState::Running, &[(&back, 11)])
        .await?;
    // cache is `redis` on front, `kv` and (web's name) `web` on back; db is `postgres`.
    let cache = swarm
        .set_aliases(&cache, &[(&front, &["redis"]), (&back, &["kv", "web"])])
        .await?;
    swarm.set_aliases(&db, &[(&back, &["postgres"])]).await?;

    // The host: each alias answers on its own network; web's name stays web's.
    let host = Ask::default();
    wait_answer(dns.dns, "redis", host, &[front.addr(4)], DEADLINE).await?;
    wait_answer(
        dns.dns,
        "postgres",
        host,
        &[back.addr(10), back.addr(11)],
        DEADLINE,
    )
    .await?;
    let a = query(dns.dns, "kv", RecordType::A, host).await?;
    assert_eq!((a.addrs, a.ttls), (vec![back.addr(4)], vec![0]));
    let a = query(dns.dns, "tasks.redis", RecordType::A, host).await?;
    assert_eq!(a.addrs, vec![front.addr(20)]);
    let a = query(dns.dns, "tasks.postgres", RecordType::A, host).await?;
    assert_eq!(a.sorted_addrs(), vec![back.addr(10), back.addr(11)]);
    let a = query(dns.dns, "web", RecordType::A, host).await?;
    assert_eq!(a.addrs, vec![front.addr(2)]);

    // web's task (front): redis, not kv or postgres; `web` is the service.
    let from_web = Ask {
        from: Some(front.addr(10)),
        ..Ask::default()
    };
    let a = query(dns.dns, "redis", RecordType::A, from_web).await?;
    assert_eq!(a.addrs, vec![front.addr(4)]);
    let a = query(dns.dns, "web", RecordType::A, from_web).await?;
    assert_eq!(a.addrs, vec![front.addr(2)]);
    for name in ["kv", "tasks.kv", "postgres", "tasks.postgres"] {
        let a = query(dns.dns, name, RecordType::A, from_web).await?;
        assert_eq!(a.code, ResponseCode::NXDomain, "{name} from web's task");
    }
    // db's task (back): kv and postgres, not redis; it cannot see the service web, so
    // `web` is cache's alias there.
    let from_db = Ask {
        from: Some(back.addr(10)),
        ..Ask::default()
    };
    let a = query(dns.dns, "kv", RecordType::A, from_db).await?;
    assert_eq!(a.addrs, vec![back.addr(4)]);
    let a = query(dns.dns, "web", RecordType::A, from_db).await?;
    assert_eq!(a.addrs, vec![back.addr(4)]);
    let a = query(dns.dns, "tasks.web", RecordType::A, from_db).await?;
    assert_eq!(a.addrs, vec![back.addr(20)]);
    let a = query(dns.dns, "redis", RecordType::A, from_db).await?;
    assert_eq!(a.code, ResponseCode::NXDomain);

    // Resolve (gRPC) takes an alias as a name.
    let r = resolver
        .resolve(shoal_proto::v1::ResolveRequest {
            target: Some(shoal_proto::v1::resolve_request::Target::Name("kv".into())),
            network: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (
            r.service_name.as_str(),
            r.network_id.as_str(),
            r.vip.as_str()
        ),
        ("cache", back.id.as_str(), "127.128.2.4")
    );

    // cache drops `redis`: the name leaves the answers within a second.
    swarm
        .set_aliases(&cache, &[(&front, &[]), (&back, &["kv", "web"])])
        .await?;
    shoal_testkit::wait_for("redis to be forgotten", A_SECOND, || async {
        let a = query(dns.dns, "redis", RecordType::A, host).await.ok()?;
        (a.code == ResponseCode::NXDomain).then_some(())
    })
    .await?;
    dns.stop().await
}

#[tokio::test]
async fn other_names_go_upstream_and_no_upstream_is_servfail() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let upstream = Upstream::start().await?;
    let dns = swarm.start_dns(&[upstream.addr.to_string()]).await?;
    let front = swarm.network("front", 1, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front], 2)
        .await?;
    swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10)])
        .await?;

    for tcp in [false, true] {
        let ask = Ask {
            tcp,
            ..Ask::default()
        };
        let a = query(dns.dns, OUTSIDE_NAME, RecordType::A, ask).await?;
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(a.addrs, vec![IpAddr::V4(OUTSIDE_ADDR)]);
        assert_eq!(a.ttls, vec![300], "upstream TTLs are kept");
        assert!(!a.authoritative);
        let a = query(dns.dns, "nothing.example.", RecordType::A, ask).await?;
        assert_eq!(a.code, ResponseCode::NXDomain);
    }
    // Cluster names never reach the upstream.
    let before = upstream.queries.load(std::sync::atomic::Ordering::SeqCst);
    wait_answer(dns.dns, "web", Ask::default(), &[front.addr(2)], DEADLINE).await?;
    let a = query(dns.dns, "nope", RecordType::A, Ask::default()).await?;
    assert_eq!(a.code, ResponseCode::NXDomain);
    assert_eq!(
        upstream.queries.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // A relayed query's Client Subnet (a task's private address) is not passed on.
    let relayed = Ask {
        ecs: Some(front.addr(10)),
        ..Ask::default()
    };
    let a = query(dns.dns, OUTSIDE_NAME, RecordType::A, relayed).await?;
    assert_eq!(a.addrs, vec![IpAddr::V4(OUTSIDE_ADDR)]);
    assert!(
        !upstream
            .saw_client_subnet
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    // An answer too large for 512 bytes: truncated over plain UDP, whole over TCP.
    let a = query(dns.dns, BIG_NAME, RecordType::A, Ask::default()).await?;
    assert!(
        a.truncated,
        "{} answers in a 512-byte UDP reply",
        a.addrs.len()
    );
    let a = query(
        dns.dns,
        BIG_NAME,
        RecordType::A,
        Ask {
            tcp: true,
            ..Ask::default()
        },
    )
    .await?;
    assert_eq!(a.addrs.len(), 60);

    // An upstream that never answers: SERVFAIL (the cluster still answers).
    let silent = tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await?;
    let dead = swarm.start_dns(&[silent.local_addr()?.to_string()]).await?;
    let a = query(dead.dns, OUTSIDE_NAME, RecordType::A, Ask::default()).await?;
    assert_eq!(a.code, ResponseCode::ServFail);
    wait_answer(dead.dns, "web", Ask::default(), &[front.addr(2)], DEADLINE).await?;
    dead.stop().await?;
    dns.stop().await
}
