//! Merging several files (`-c a.yml -c b.yml`) as docker's loader does with mergo
//! (override + append-slice) and its special cases: services merge field by field
//! (a later non-empty value wins, plain lists are appended, maps merge by key);
//! ports merge by published port, secrets/configs by source and volumes by target,
//! each then sorted by that key; top-level networks, volumes, secrets and configs are
//! replaced whole by key. Top-level `x-` keys and the version come from the first file.

use std::collections::BTreeMap;
use std::hash::Hash;

use crate::model::*;

fn opt<T>(dst: &mut Option<T>, src: Option<T>) {
    if src.is_some() {
        *dst = src;
    }
}

fn opt_str(dst: &mut Option<String>, src: Option<String>) {
    if src.as_ref().is_some_and(|s| !s.is_empty()) {
        *dst = src;
    }
}

fn flag(dst: &mut bool, src: bool) {
    *dst |= src;
}

fn append<T>(dst: &mut Vec<T>, src: Vec<T>) {
    dst.extend(src);
}

fn map<K: Ord, V>(dst: &mut BTreeMap<K, V>, src: BTreeMap<K, V>) {
    dst.extend(src);
}

/// mergeSlice: applies only when the base list is non-empty (mergo skips its
/// transformers on a nil destination and appends instead).
fn keyed<T, K: Ord + Hash + Clone>(dst: &mut Vec<T>, src: Vec<T>, key: impl Fn(&T) -> K) {
    if dst.is_empty() {
        *dst = src;
        return;
    }
    let mut by_key: BTreeMap<K, T> = BTreeMap::new();
    for item in dst.drain(..).chain(src) {
        by_key.insert(key(&item), item);
    }
    dst.extend(by_key.into_values());
}

fn merge_update(dst: &mut Option<UpdateConfig>, src: Option<UpdateConfig>) {
    match (dst.as_mut(), src) {
        (_, None) => {}
        (None, Some(s)) => *dst = Some(s),
        (Some(d), Some(s)) => {
            opt(&mut d.parallelism, s.parallelism);
            opt(&mut d.delay, s.delay);
            opt_str(&mut d.failure_action, s.failure_action);
            opt(&mut d.monitor, s.monitor);
            opt(&mut d.max_failure_ratio, s.max_failure_ratio);
            opt_str(&mut d.order, s.order);
        }
    }
}

fn merge_deploy(d: &mut DeployConfig, s: DeployConfig) {
    opt_str(&mut d.mode, s.mode);
    opt(&mut d.replicas, s.replicas);
    map(&mut d.labels, s.labels);
    merge_update(&mut d.update_config, s.update_config);
    merge_update(&mut d.rollback_config, s.rollback_config);
    match (d.resources.limits.as_mut(), s.resources.limits) {
        (_, None) => {}
        (None, Some(l)) => d.resources.limits = Some(l),
        (Some(dl), Some(sl)) => {
            opt_str(&mut dl.cpus, sl.cpus);
            opt(&mut dl.memory, sl.memory);
            opt(&mut dl.pids, sl.pids);
        }
    }
    match (d.resources.reservations.as_mut(), s.resources.reservations) {
        (_, None) => {}
        (None, Some(r)) => d.resources.reservations = Some(r),
        (Some(dr), Some(sr)) => {
            opt_str(&mut dr.cpus, sr.cpus);
            opt(&mut dr.memory, sr.memory);
            append(&mut dr.generic_resources, sr.generic_resources);
        }
    }
    match (d.restart_policy.as_mut(), s.restart_policy) {
        (_, None) => {}
        (None, Some(r)) => d.restart_policy = Some(r),
        (Some(dr), Some(sr)) => {
            opt_str(&mut dr.condition, sr.condition);
            opt(&mut dr.delay, sr.delay);
            opt(&mut dr.max_attempts, sr.max_attempts);
            opt(&mut dr.window, sr.window);
        }
    }
    append(&mut d.placement.constraints, s.placement.constraints);
    append(&mut d.placement.preferences, s.placement.preferences);
    opt(
        &mut d.placement.max_replicas_per_node,
        s.placement.max_replicas_per_node,
    );
    opt_str(&mut d.endpoint_mode, s.endpoint_mode);
}

fn merge_service(d: &mut ServiceConfig, s: ServiceConfig) {
    match (d.build.as_mut(), s.build) {
        (_, None) => {}
        (None, Some(b)) => d.build = Some(b),
        (Some(db), Some(sb)) => {
            opt_str(&mut db.context, sb.context);
            opt_str(&mut db.dockerfile, sb.dockerfile);
            map(&mut db.args, sb.args);
            map(&mut db.labels, sb.labels);
            append(&mut db.cache_from, sb.cache_from);
            append(&mut db.extra_hosts, sb.extra_hosts);
            opt_str(&mut db.network, sb.network);
            opt_str(&mut db.target, sb.target);
        }
    }
    append(&mut d.cap_add, s.cap_add);
    append(&mut d.cap_drop, s.cap_drop);
    opt_str(&mut d.cgroupns_mode, s.cgroupns_mode);
    opt_str(&mut d.cgroup_parent, s.cgroup_parent);
    if s.command.as_ref().is_some_and(|c| !c.is_empty()) {
        d.command = s.command;
    }
    keyed(&mut d.configs, s.configs, |c| c.source.clone());
    opt_str(&mut d.container_name, s.container_name);
    match (d.credential_spec.as_mut(), s.credential_spec) {
        (_, None) => {}
        (None, Some(c)) => d.credential_spec = Some(c),
        (Some(dc), Some(sc)) => {
            opt_str(&mut dc.config, sc.config);
            opt_str(&mut dc.file, sc.file);
            opt_str(&mut dc.registry, sc.registry);
        }
    }
    append(&mut d.depends_on, s.depends_on);
    match (d.deploy.as_mut(), s.deploy) {
        (_, None) => {}
        (None, Some(dep)) => d.deploy = Some(dep),
        (Some(dd), Some(sd)) => merge_deploy(dd, sd),
    }
    append(&mut d.devices, s.devices);
    append(&mut d.dns, s.dns);
    append(&mut d.dns_search, s.dns_search);
    opt_str(&mut d.domainname, s.domainname);
    if s.entrypoint.as_ref().is_some_and(|c| !c.is_empty()) {
        d.entrypoint = s.entrypoint;
    }
    for (k, v) in s.environment {
        // mergo does not let an empty (nil) value override an existing one.
        if v.is_some() || !d.environment.contains_key(&k) {
            d.environment.insert(k, v);
        }
    }
    append(&mut d.env_file, s.env_file);
    append(&mut d.expose, s.expose);
    append(&mut d.external_links, s.external_links);
    append(&mut d.extra_hosts, s.extra_hosts);
    opt_str(&mut d.hostname, s.hostname);
    match (d.healthcheck.as_mut(), s.healthcheck) {
        (_, None) => {}
        (None, Some(h)) => d.healthcheck = Some(h),
        (Some(dh), Some(sh)) => {
            append(&mut dh.test, sh.test);
            opt(&mut dh.timeout, sh.timeout);
            opt(&mut dh.interval, sh.interval);
            opt(&mut dh.retries, sh.retries);
            opt(&mut dh.start_period, sh.start_period);
            opt(&mut dh.start_interval, sh.start_interval);
            flag(&mut dh.disable, sh.disable);
        }
    }
    opt_str(&mut d.image, s.image);
    opt(&mut d.init, s.init);
    opt_str(&mut d.ipc, s.ipc);
    opt_str(&mut d.isolation, s.isolation);
    map(&mut d.labels, s.labels);
    append(&mut d.links, s.links);
    match (d.logging.as_mut(), s.logging) {
        (_, None) => {}
        (None, Some(l)) => d.logging = Some(l),
        (Some(dl), Some(sl)) => {
            let (dd, sd) = (
                dl.driver.clone().unwrap_or_default(),
                sl.driver.clone().unwrap_or_default(),
            );
            if dd == sd || dd.is_empty() || sd.is_empty() {
                if dd.is_empty() {
                    dl.driver = sl.driver;
                }
                map(&mut dl.options, sl.options);
            } else {
                *dl = sl;
            }
        }
    }
    opt_str(&mut d.mac_address, s.mac_address);
    opt_str(&mut d.network_mode, s.network_mode);
    for (k, sv) in s.networks {
        match (d.networks.get_mut(&k), sv) {
            (Some(Some(dn)), Some(sn)) => {
                if sn != ServiceNetworkConfig::default() {
                    dn.aliases = sn.aliases;
                    opt_str(&mut dn.ipv4_address, sn.ipv4_address);
                    opt_str(&mut dn.ipv6_address, sn.ipv6_address);
                }
            }
            (Some(_), None) => {}
            (_, sv) => {
                d.networks.insert(k, sv);
            }
        }
    }
    opt_str(&mut d.pid, s.pid);
    keyed(&mut d.ports, s.ports, |p| p.published);
    flag(&mut d.privileged, s.privileged);
    flag(&mut d.read_only, s.read_only);
    opt_str(&mut d.restart, s.restart);
    keyed(&mut d.secrets, s.secrets, |c| c.source.clone());
    append(&mut d.security_opt, s.security_opt);
    opt_str(&mut d.shm_size, s.shm_size);
    flag(&mut d.stdin_open, s.stdin_open);
    opt(&mut d.stop_grace_period, s.stop_grace_period);
    opt_str(&mut d.stop_signal, s.stop_signal);
    map(&mut d.sysctls, s.sysctls);
    append(&mut d.tmpfs, s.tmpfs);
    flag(&mut d.tty, s.tty);
    map(&mut d.ulimits, s.ulimits);
    opt_str(&mut d.user, s.user);
    opt(&mut d.oom_score_adj, s.oom_score_adj);
    opt_str(&mut d.userns_mode, s.userns_mode);
    keyed(&mut d.volumes, s.volumes, |v| v.target.clone());
    opt_str(&mut d.working_dir, s.working_dir);
    map(&mut d.extras, s.extras);
}

/// Merges `over` into `base` (both loaded files), `over` winning.
pub(crate) fn merge_projects(base: &mut Project, over: Project) {
    for (name, svc) in over.services {
        match base.services.get_mut(&name) {
            Some(b) => merge_service(b, svc),
            None => {
                base.services.insert(name, svc);
            }
        }
    }
    map(&mut base.volumes, over.volumes);
    map(&mut base.networks, over.networks);
    map(&mut base.secrets, over.secrets);
    map(&mut base.configs, over.configs);
    base.load_warnings.extend(over.load_warnings);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u32, target: u32) -> ServicePortConfig {
        ServicePortConfig {
            mode: "ingress".into(),
            target,
            published,
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn services_merge_field_by_field() {
        let mut a = ServiceConfig {
            name: "web".into(),
            image: Some("a".into()),
            cap_add: vec!["X".into()],
            ports: vec![port(8080, 80), port(80, 80)],
            environment: [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("2".to_string())),
            ]
            .into(),
            read_only: true,
            ..ServiceConfig::default()
        };
        let b = ServiceConfig {
            name: "web".into(),
            image: Some("b".into()),
            cap_add: vec!["Y".into()],
            ports: vec![port(8080, 81)],
            environment: [
                ("A".to_string(), None),
                ("C".to_string(), Some("3".to_string())),
            ]
            .into(),
            ..ServiceConfig::default()
        };
        merge_service(&mut a, b);
        assert_eq!(a.image.as_deref(), Some("b"));
        assert_eq!(a.cap_add, vec!["X".to_string(), "Y".to_string()]);
        assert_eq!(a.ports, vec![port(80, 80), port(8080, 81)]);
        assert_eq!(a.environment["A"].as_deref(), Some("1"));
        assert_eq!(a.environment["C"].as_deref(), Some("3"));
        assert!(a.read_only);
    }
}
