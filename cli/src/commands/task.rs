//! Task tables as docker prints them (`node ps`, `service ps`): `ID NAME IMAGE NODE
//! DESIRED STATE CURRENT STATE ERROR PORTS`, earlier tasks of a slot indented under the
//! current one as ` \_ web.1`.

use std::collections::HashMap;
use std::time::SystemTime;

use shoal_proto::v1::{Task, TaskState, port_config, task_spec};

use crate::output::{
    Table, ellipsis, enum_word, human_duration, natural_cmp, pretty, to_system_time, truncate_id,
};

/// docker cuts task errors to this many characters unless `--no-trunc`.
const MAX_ERR_LENGTH: usize = 30;

pub const HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "IMAGE",
    "NODE",
    "DESIRED STATE",
    "CURRENT STATE",
    "ERROR",
    "PORTS",
];

/// Names for the ids a task refers to (docker's id resolver).
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Service id → service name.
    pub services: HashMap<String, String>,
    /// Node id → node name (spec name, else hostname).
    pub nodes: HashMap<String, String>,
}

impl Names {
    fn service<'a>(&'a self, task: &'a Task) -> &'a str {
        if let Some(name) = self.services.get(&task.service_id) {
            return name;
        }
        task.service_annotations
            .as_ref()
            .map(|a| a.name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(&task.service_id)
    }

    fn node<'a>(&'a self, node_id: &'a str) -> &'a str {
        self.nodes
            .get(node_id)
            .map(String::as_str)
            .unwrap_or(node_id)
    }
}

fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// `<service>.<slot>`, or `<service>.<node id>` for a global service's task.
pub fn task_name(task: &Task, names: &Names) -> String {
    let service = names.service(task);
    if task.slot != 0 {
        format!("{service}.{}", task.slot)
    } else {
        format!("{service}.{}", task.node_id)
    }
}

/// The state word docker shows: `running`, `shutdown`, … (before `pretty`).
pub fn state_word(state: i32) -> String {
    TaskState::try_from(state)
        .map(|s| enum_word(s.as_str_name(), "TASK_STATE_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// What the IMAGE column shows: the container image (its digest dropped when it also
/// has a tag, unless `--no-trunc`), or the program of a process task.
pub fn image(task: &Task, trunc: bool) -> String {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => {
            if trunc {
                familiar_tagged(&c.image)
            } else {
                c.image.clone()
            }
        }
        Some(task_spec::Runtime::Process(p)) => p.command.first().cloned().unwrap_or_default(),
        None => String::new(),
    }
}

fn familiar_tagged(image: &str) -> String {
    let Some((name, _digest)) = image.split_once('@') else {
        return image.to_string();
    };
    let tagged = name
        .rsplit_once('/')
        .map(|(_, last)| last)
        .unwrap_or(name)
        .contains(':');
    if !tagged {
        return image.to_string();
    }
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// `Running 18 seconds ago`.
pub fn current_state(task: &Task, now: SystemTime) -> String {
    let status = task.status.clone().unwrap_or_default();
    let since = to_system_time(status.timestamp.as_ref())
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default();
    format!(
        "{} {} ago",
        pretty(&state_word(status.state)),
        human_duration(since).to_lowercase()
    )
}

fn error(task: &Task, trunc: bool) -> String {
    let err = task
        .status
        .as_ref()
        .map(|s| s.err.clone())
        .unwrap_or_default();
    let err = if trunc {
        ellipsis(&err, MAX_ERR_LENGTH)
    } else {
        err
    };
    if err.is_empty() {
        err
    } else {
        format!("\"{err}\"")
    }
}

/// A task's published ports as docker's PORTS column: `*:80->80/tcp`, joined by `,`.
pub fn ports(task: &Task) -> String {
    task.status
        .as_ref()
        .and_then(|s| s.port_status.as_ref())
        .map(|ps| {
            ps.ports
                .iter()
                .map(|p| {
                    let proto = port_config::Protocol::try_from(p.protocol)
                        .map(|p| enum_word(p.as_str_name(), "PROTOCOL_"))
                        .unwrap_or_else(|_| "tcp".into());
                    format!("*:{}->{}/{proto}", p.published_port, p.target_port)
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Tasks sorted as docker sorts them: by name (natural order), the newest first within
/// a slot.
pub fn sorted<'a>(tasks: &'a [Task], names: &Names) -> Vec<(String, &'a Task)> {
    let mut rows: Vec<(String, &Task)> = tasks.iter().map(|t| (task_name(t, names), t)).collect();
    rows.sort_by(|(na, a), (nb, b)| {
        natural_cmp(na, nb).then_with(|| {
            let created = |t: &Task| {
                t.meta
                    .as_ref()
                    .and_then(|m| to_system_time(m.created_at.as_ref()))
            };
            created(b).cmp(&created(a))
        })
    });
    rows
}

/// The task table; `trunc` as without `--no-trunc`.
pub fn render(tasks: &[Task], names: &Names, now: SystemTime, trunc: bool) -> String {
    let mut table = Table::new(&HEADER);
    let mut previous = String::new();
    for (name, task) in sorted(tasks, names) {
        let shown = if name == previous {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        previous = name;
        let id = task_id(task);
        table.row(vec![
            if trunc {
                truncate_id(id)
            } else {
                id.to_string()
            },
            shown,
            image(task, trunc),
            names.node(&task.node_id).to_string(),
            pretty(&state_word(task.desired_state)),
            current_state(task, now),
            error(task, trunc),
            ports(task),
        ]);
    }
    table.render()
}

/// `-q`: the task ids, in the table's order.
pub fn render_quiet(tasks: &[Task], names: &Names, trunc: bool) -> String {
    sorted(tasks, names)
        .into_iter()
        .map(|(_, t)| {
            let id = task_id(t);
            let id = if trunc {
                truncate_id(id)
            } else {
                id.to_string()
            };
            format!("{id}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_proto::v1::{
        Annotations, ContainerSpec, Meta, PortConfig, PortStatus, TaskSpec, TaskStatus,
    };

    use super::*;

    fn ts(t: SystemTime) -> prost_types::Timestamp {
        prost_types::Timestamp::from(t)
    }

    fn task(
        id: &str,
        slot: u64,
        node: &str,
        state: TaskState,
        age_secs: u64,
        now: SystemTime,
    ) -> Task {
        let at = now - Duration::from_secs(age_secs);
        Task {
            meta: Some(Meta {
                id: id.into(),
                created_at: Some(ts(at)),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "busybox:latest@sha256:abcd".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            service_id: "svc1".into(),
            slot,
            node_id: node.into(),
            service_annotations: Some(Annotations {
                name: "test".into(),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                timestamp: Some(ts(at)),
                state: state as i32,
                ..Default::default()
            }),
            desired_state: if state == TaskState::Running {
                TaskState::Running as i32
            } else {
                TaskState::Shutdown as i32
            },
            ..Default::default()
        }
    }

    #[test]
    fn renders_like_docker_service_ps() {
        let now = SystemTime::now();
        let mut names = Names::default();
        names.nodes.insert("n1".into(), "swarm-worker1".into());
        names.nodes.insert("n2".into(), "swarm-worker2".into());
        let tasks = vec![
            task(
                "3tmp4cdqfs8a3tmp4cdqfs8a1",
                2,
                "n2",
                TaskState::Running,
                18,
                now,
            ),
            task(
                "yf5uqm1kzx6dbt7n26e4akhsu",
                1,
                "n1",
                TaskState::Running,
                18,
                now,
            ),
        ];
        let out = render(&tasks, &names, now, true);
        assert_eq!(
            out,
            "ID             NAME      IMAGE            NODE            DESIRED STATE   CURRENT STATE            ERROR     PORTS\n\
             yf5uqm1kzx6d   test.1    busybox:latest   swarm-worker1   Running         Running 18 seconds ago\n\
             3tmp4cdqfs8a   test.2    busybox:latest   swarm-worker2   Running         Running 18 seconds ago\n"
        );
        assert_eq!(
            render_quiet(&tasks, &names, true),
            "yf5uqm1kzx6d\n3tmp4cdqfs8a\n"
        );
    }

    #[test]
    fn previous_tasks_are_indented_newest_first() {
        let now = SystemTime::now();
        let names = Names::default();
        let mut failed = task(
            "old0000000000000000000000",
            3,
            "n1",
            TaskState::Shutdown,
            80,
            now,
        );
        if let Some(s) = failed.status.as_mut() {
            s.err = "task: non-zero exit (1): something went very wrong".into();
            s.port_status = Some(PortStatus {
                ports: vec![PortConfig {
                    published_port: 8080,
                    target_port: 80,
                    ..Default::default()
                }],
            });
        }
        let tasks = vec![
            failed,
            task(
                "new0000000000000000000000",
                3,
                "n1",
                TaskState::Running,
                5,
                now,
            ),
        ];
        let out = render(&tasks, &names, now, true);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("new000000000   test.3 "), "{out}");
        assert!(lines[2].starts_with("old000000000    \\_ test.3 "), "{out}");
        assert!(
            lines[2].contains("Shutdown        Shutdown about a minute ago"),
            "{out}"
        );
        assert!(
            lines[2].contains("\"task: non-zero exit (1): some…\""),
            "{out}"
        );
        assert!(lines[2].ends_with("*:8080->80/tcp"), "{out}");
        assert!(
            lines[1].contains("   n1   "),
            "unresolved node ids stay ids: {out}"
        );
    }

    #[test]
    fn global_tasks_are_named_by_node() {
        let now = SystemTime::now();
        let t = task("g", 0, "nodeid1", TaskState::Running, 1, now);
        assert_eq!(task_name(&t, &Names::default()), "test.nodeid1");
        assert_eq!(image(&t, false), "busybox:latest@sha256:abcd");
        assert_eq!(familiar_tagged("nginx@sha256:abcd"), "nginx@sha256:abcd");
        assert_eq!(
            familiar_tagged("docker.io/library/nginx:1.13@sha256:abcd"),
            "nginx:1.13"
        );
        assert_eq!(familiar_tagged("localhost:5000/app"), "localhost:5000/app");
    }
}
