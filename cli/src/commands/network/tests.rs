#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use shoal_proto::v1::{
    Annotations, Driver, IpamConfig, IpamOptions, Meta, Network, NetworkSpec, ipam_config,
};

use super::ipam::Cidr;
use super::render::{NetworkFilters, inspect_json, render_ls, sort};
use super::*;
use crate::commands::{Cli, Command};

fn parse_create(args: &[&str]) -> CreateArgs {
    let mut argv = vec!["shoal", "network", "create"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("parses");
    match cli.command {
        Command::Network(NetworkCommand::Create(a)) => *a,
        other => panic!("not create: {other:?}"),
    }
}

fn spec(args: &[&str]) -> NetworkSpec {
    parse_create(args).to_spec().expect("valid spec")
}

fn err(args: &[&str]) -> String {
    parse_create(args).to_spec().unwrap_err().to_string()
}

fn network(id: &str, name: &str, subnet: &str, gateway: &str) -> Network {
    Network {
        meta: Some(Meta {
            id: id.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1592632637,
                nanos: 576842930,
            }),
            ..Default::default()
        }),
        spec: Some(NetworkSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Default::default(),
            }),
            driver_config: Some(Driver {
                name: "overlay".into(),
                options: Default::default(),
            }),
            ..Default::default()
        }),
        ipam: Some(IpamOptions {
            driver: Some(Driver {
                name: "default".into(),
                options: Default::default(),
            }),
            configs: vec![IpamConfig {
                family: ipam_config::AddressFamily::Ipv4 as i32,
                subnet: subnet.into(),
                gateway: gateway.into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

#[test]
fn create_flags_land_in_the_spec() {
    let s = spec(&[
        "-d",
        "overlay",
        "--subnet",
        "10.10.0.0/16",
        "--gateway",
        "10.10.0.254",
        "--ip-range",
        "10.10.1.0/24",
        "--aux-address",
        "router=10.10.0.2",
        "--attachable",
        "--internal",
        "--label",
        "env=prod",
        "--label",
        "team",
        "-o",
        "encrypted",
        "mynet",
    ]);
    let a = s.annotations.unwrap();
    assert_eq!(a.name, "mynet");
    assert_eq!(a.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(a.labels.get("team").map(String::as_str), Some(""));
    let d = s.driver_config.unwrap();
    assert_eq!(d.name, "overlay");
    assert_eq!(d.options.get("encrypted").map(String::as_str), Some(""));
    assert!(s.attachable && s.internal && !s.ingress && !s.ipv6_enabled);
    let ipam = s.ipam.unwrap();
    assert_eq!(ipam.driver.unwrap().name, "default");
    assert_eq!(ipam.configs.len(), 1);
    let c = &ipam.configs[0];
    assert_eq!(c.subnet, "10.10.0.0/16");
    assert_eq!(c.gateway, "10.10.0.254");
    assert_eq!(c.range, "10.10.1.0/24");
    assert_eq!(c.family, ipam_config::AddressFamily::Ipv4 as i32);
    assert_eq!(
        c.reserved.get("router").map(String::as_str),
        Some("10.10.0.2")
    );
}

#[test]
fn create_defaults_to_overlay_without_subnets() {
    let s = spec(&["mynet"]);
    assert_eq!(s.driver_config.unwrap().name, "overlay");
    let ipam = s.ipam.unwrap();
    assert!(ipam.configs.is_empty());
    assert_eq!(ipam.driver.unwrap().name, "default");
    assert!(spec(&["--ingress", "ingress"]).ingress);
    assert!(spec(&["--scope", "swarm", "x"]).ipam.is_some());
}

#[test]
fn create_needs_exactly_one_name() {
    assert!(Cli::try_parse_from(["shoal", "network", "create"]).is_err());
    assert!(Cli::try_parse_from(["shoal", "network", "create", "a", "b"]).is_err());
}

#[test]
fn create_checks_ipam_flags_as_docker() {
    assert_eq!(
        err(&["--gateway", "10.0.0.1", "mynet"]),
        "every ip-range or gateway must have a corresponding subnet"
    );
    assert_eq!(
        err(&["--ip-range", "10.0.0.0/26", "mynet"]),
        "every ip-range or gateway must have a corresponding subnet"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/24", "--gateway", "10.1.0.1", "mynet"]),
        "no matching subnet for gateway 10.1.0.1"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/24", "--ip-range", "10.1.0.0/26", "x"]),
        "no matching subnet for range 10.1.0.0/26"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/8", "--subnet", "10.1.0.0/16", "x"]),
        "multiple overlapping subnet configuration is not supported"
    );
    assert_eq!(
        err(&[
            "--subnet",
            "10.0.0.0/24,10.1.0.0/24",
            "--gateway",
            "10.0.0.1,10.0.0.2",
            "x"
        ]),
        "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/24)"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/24", "--gateway", "nope", "x"]),
        "invalid argument \"nope\" for \"--gateway\" flag: invalid string being converted to IP address: nope"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.0/99", "x"]),
        "invalid argument \"10.0.0.0/99\" for \"--ip-range\" flag: invalid CIDR address: 10.0.0.0/99"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0", "x"]),
        "netip.ParsePrefix(\"10.0.0.0\"): no '/'"
    );
    assert_eq!(
        err(&["--subnet", "10.0.0.0/24", "--subnet", "bad", "x"]),
        "invalid subnet: invalid CIDR address: bad"
    );
    assert_eq!(
        err(&[
            "--subnet",
            "10.0.0.0/24",
            "--aux-address",
            "a=10.9.0.1",
            "x"
        ]),
        "no matching subnet for aux-address 10.9.0.1"
    );
    assert_eq!(
        err(&["--label", "=x", "x"]),
        "invalid argument \"=x\" for \"--label\" flag: invalid label '=x': empty name"
    );
    assert!(err(&["--scope", "local", "x"]).contains("--scope"));
}

#[test]
fn two_subnets_each_get_their_gateway() {
    let s = spec(&[
        "--subnet",
        "10.0.0.0/24",
        "--subnet",
        "fd00::/64",
        "--gateway",
        "fd00::1",
        "--gateway",
        "10.0.0.254",
        "dual",
    ]);
    let configs = s.ipam.unwrap().configs;
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0].subnet, "10.0.0.0/24");
    assert_eq!(configs[0].gateway, "10.0.0.254");
    assert_eq!(configs[1].subnet, "fd00::/64");
    assert_eq!(configs[1].gateway, "fd00::1");
    assert_eq!(configs[1].family, ipam_config::AddressFamily::Ipv6 as i32);
}

#[test]
fn cidrs_parse_like_go() {
    let c = Cidr::parse("10.0.0.5/24").unwrap();
    assert_eq!(c.to_string(), "10.0.0.5/24");
    assert_eq!(c.network().to_string(), "10.0.0.0/24");
    assert!(c.contains("10.0.0.200".parse().unwrap()));
    assert!(!c.contains("10.0.1.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    assert_eq!(
        Cidr::parse("0.0.0.0/0").unwrap().network().to_string(),
        "0.0.0.0/0"
    );
    assert!(
        Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    assert_eq!(
        Cidr::parse("10.0.0.0/+8").unwrap_err(),
        "invalid CIDR address: 10.0.0.0/+8"
    );
    assert!(Cidr::parse("10.0.0/8").is_err());
    assert!(Cidr::parse("fd00::/129").is_err());
    assert_eq!(
        Cidr::parse_prefix("10.0.0.0/33").unwrap_err(),
        "netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range"
    );
}

#[test]
fn ls_prints_docker_table_sorted_by_name() {
    let mut networks = vec![
        network(
            "k0psbpl4jzj4k2b3p1v2x7f6a",
            "network-10-foo",
            "10.0.3.0/24",
            "10.0.3.1",
        ),
        network(
            "b2z3ybnhsmq3y1h0eq0b5j1rl",
            "ingress",
            "10.0.0.0/24",
            "10.0.0.1",
        ),
        network(
            "q8x6qr0m4y6rk1y6bhbcq9m1s",
            "network-2-foo",
            "10.0.2.0/24",
            "10.0.2.1",
        ),
    ];
    sort(&mut networks);
    assert_eq!(
        render_ls(&networks, None, false, true).unwrap(),
        "NETWORK ID     NAME             DRIVER    SCOPE\n\
         b2z3ybnhsmq3   ingress          overlay   swarm\n\
         q8x6qr0m4y6r   network-2-foo    overlay   swarm\n\
         k0psbpl4jzj4   network-10-foo   overlay   swarm\n"
    );
    assert_eq!(
        render_ls(&networks, None, true, true).unwrap(),
        "b2z3ybnhsmq3\nq8x6qr0m4y6r\nk0psbpl4jzj4\n"
    );
    assert_eq!(
        render_ls(&networks[..1], None, true, false).unwrap(),
        "b2z3ybnhsmq3y1h0eq0b5j1rl\n"
    );
    assert!(
        render_ls(&networks[..1], None, false, false)
            .unwrap()
            .contains("b2z3ybnhsmq3y1h0eq0b5j1rl   ingress")
    );
}

#[test]
fn ls_formats() {
    let networks = vec![network(
        "b2z3ybnhsmq3y1h0eq0b5j1rl",
        "ingress",
        "10.0.0.0/24",
        "10.0.0.1",
    )];
    assert_eq!(
        render_ls(&networks, Some("{{.Name}}: {{.Driver}}"), false, true).unwrap(),
        "ingress: overlay\n"
    );
    assert_eq!(
        render_ls(
            &networks,
            Some("table {{.Name}}\\t{{.Internal}}"),
            false,
            true
        )
        .unwrap(),
        "NAME      INTERNAL\ningress   false\n"
    );
    let json_line = render_ls(&networks, Some("json"), false, true).unwrap();
    let v: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(v["ID"], "b2z3ybnhsmq3");
    assert_eq!(v["Scope"], "swarm");
    assert_eq!(v["CreatedAt"], "2020-06-20 05:57:17.57684293 +0000 UTC");
    assert!(render_ls(&networks, Some("{{.Name"), false, true).is_err());
}

#[test]
fn ls_filters_as_docker() {
    let mut web = network("abcdef123456", "web-net", "10.0.1.0/24", "10.0.1.1");
    if let Some(a) = web.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
        a.labels.insert("env".into(), "prod".into());
    }
    let mut ingress = network("zzz999", "ingress", "10.0.0.0/24", "10.0.0.1");
    ingress.spec.as_mut().unwrap().ingress = true;
    let f = |flags: &[&str]| {
        NetworkFilters::parse(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    };
    assert!(f(&["name=net"]).matches(&web));
    assert!(!f(&["name=net"]).matches(&ingress));
    assert!(f(&["name=nope", "name=web"]).matches(&web));
    assert!(f(&["id=def1"]).matches(&web));
    assert!(f(&["driver=overlay"]).matches(&web));
    assert!(!f(&["driver=bridge"]).matches(&web));
    assert!(f(&["scope=swarm"]).matches(&web));
    assert!(!f(&["scope=local"]).matches(&web));
    assert!(f(&["label=env"]).matches(&web));
    assert!(f(&["label=env=prod"]).matches(&web));
    assert!(!f(&["label=env=dev"]).matches(&web));
    assert!(!f(&["label=env"]).matches(&ingress));
    assert!(f(&["type=builtin"]).matches(&ingress));
    assert!(!f(&["type=builtin"]).matches(&web));
    assert!(f(&["type=custom"]).matches(&web));
    assert!(!f(&["name=web", "driver=bridge"]).matches(&web));
    let bad = |flag: &str| {
        NetworkFilters::parse(&[flag.to_string()])
            .unwrap_err()
            .to_string()
    };
    assert_eq!(bad("nope=1"), "invalid filter 'nope'");
    assert_eq!(bad("name"), "bad format of filter (expected name=value)");
    assert_eq!(bad("type=x"), "invalid filter: 'type'='x'");
}

#[test]
fn inspect_has_dockers_shape() {
    let mut n = network(
        "b2z3ybnhsmq3y1h0eq0b5j1rl",
        "mynet",
        "10.0.1.0/24",
        "10.0.1.1",
    );
    n.spec.as_mut().unwrap().attachable = true;
    let out = render_inspect(&[n.clone()], None).unwrap();
    assert_eq!(
        out,
        r#"[
    {
        "Name": "mynet",
        "Id": "b2z3ybnhsmq3y1h0eq0b5j1rl",
        "Created": "2020-06-20T05:57:17.57684293Z",
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [
                {
                    "Subnet": "10.0.1.0/24",
                    "Gateway": "10.0.1.1"
                }
            ]
        },
        "Internal": false,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": {
            "Network": ""
        },
        "ConfigOnly": false,
        "Options": {},
        "Labels": {},
        "Containers": null
    }
]
"#
    );
    assert_eq!(render_inspect(&[], None).unwrap(), "[]\n");
    let t = Template::parse("{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}").unwrap();
    assert_eq!(
        render_inspect(&[n.clone(), n], Some(&t)).unwrap(),
        "10.0.1.0/24 10.0.1.1\n10.0.1.0/24 10.0.1.1\n"
    );
}

#[test]
fn inspect_falls_back_to_the_spec_before_allocation() {
    let mut n = network("x", "pending", "", "");
    n.ipam = None;
    n.spec.as_mut().unwrap().ipam = Some(IpamOptions {
        driver: None,
        configs: vec![IpamConfig {
            subnet: "10.5.0.0/16".into(),
            range: "10.5.1.0/24".into(),
            ..Default::default()
        }],
    });
    n.spec.as_mut().unwrap().driver_config = None;
    let v = inspect_json(&n);
    assert_eq!(v["Driver"], "overlay");
    assert_eq!(v["IPAM"]["Driver"], "default");
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.5.0.0/16");
    assert_eq!(v["IPAM"]["Config"][0]["IPRange"], "10.5.1.0/24");
    assert!(v["IPAM"]["Config"][0].get("Gateway").is_none());
}

#[test]
fn rm_and_inspect_take_several_networks() {
    let cli = Cli::try_parse_from(["shoal", "network", "rm", "-f", "a", "b"]).unwrap();
    match cli.command {
        Command::Network(NetworkCommand::Rm { force, networks }) => {
            assert!(force);
            assert_eq!(networks, vec!["a", "b"]);
        }
        other => panic!("not rm: {other:?}"),
    }
    assert!(Cli::try_parse_from(["shoal", "network", "rm"]).is_err());
    assert!(Cli::try_parse_from(["shoal", "network", "inspect"]).is_err());
    let cli = Cli::try_parse_from(["shoal", "network", "inspect", "-f", "{{.Id}}", "x"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Network(NetworkCommand::Inspect {
            format: Some(_),
            ..
        })
    ));
    assert!(is_yes("y\n") && is_yes("Y") && !is_yes("") && !is_yes("yes"));
}
