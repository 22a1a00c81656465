//! The convergence progress of `service create|scale|update|rollback`, in Swarm's words:
//!
//! ```text
//! overall progress: 3 out of 3 tasks
//! 1/3: running   [==================================================>]
//! 2/3: running   [==================================================>]
//! 3/3: running   [==================================================>]
//! verify: Service converged
//! ```
//!
//! [`Tracker`] turns a service, its tasks and the live nodes into those rows (pure, so
//! it is unit tested); [`UpdateWatch`] reads the service's update status the way
//! docker's progress does (a paused update or rollback ends the follow with an error, a
//! rollback switches the rows to `rolling back update: …`); [`follow`] feeds both:
//! Control.WatchEvents for task/service events of this service (a batch of events is
//! debounced into one re-read of ListTasks), plus a re-read every [`FALLBACK_REREAD`]
//! in case an event was lost. On a terminal the rows are redrawn in place; otherwise a
//! row is printed only when it changes.
//!
//! Only tasks that run the service's current task spec count
//! ([`shoal_proto::task_is_current`]), so an update's progress counts replaced slots.
//! Converged means every slot's newest current task is RUNNING (jobs: COMPLETE).
//! Services (not jobs) must then hold that for a stability window: the service's
//! update monitor when it sets one, else [`DEFAULT_STABILITY`] (docker waits 5 s, the
//! update monitor's default; shoal waits less by default).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use futures::FutureExt;
use shoal_proto::v1::{
    GetServiceRequest, ListFilters, ListNodesRequest, ListTasksRequest, Service, Task, TaskState,
    UpdateStatus, WatchEventsRequest, node_status, service_spec, update_status,
};
use tokio_stream::StreamExt;

use crate::connect::Control;
use crate::output::truncate_id;

/// How long a converged service must stay converged before "verify: Service converged".
pub const DEFAULT_STABILITY: Duration = Duration::from_secs(2);
/// Re-read the tasks this often even without events (events are hints, not guarantees).
pub const FALLBACK_REREAD: Duration = Duration::from_secs(2);
/// Events arriving within this window of each other cause one re-read.
const DEBOUNCE: Duration = Duration::from_millis(100);

const MAX_PROGRESS: u64 = 9;
const MAX_JOB_PROGRESS: u64 = 10;
const MAX_PROGRESS_BARS: u64 = 20;
/// The longest state word shown ("preparing", "allocated", "completed"… → 9).
const LONGEST_STATE: usize = 9;

/// docker's numbering of states for ordering and the bars; 0 = not shown.
fn numbered(state: i32) -> u64 {
    match TaskState::try_from(state) {
        Ok(TaskState::New) => 1,
        Ok(TaskState::Pending) => 3,
        Ok(TaskState::Assigned) => 4,
        Ok(TaskState::Accepted) => 5,
        Ok(TaskState::Preparing) => 6,
        Ok(TaskState::Ready) => 7,
        Ok(TaskState::Starting) => 8,
        Ok(TaskState::Running) => 9,
        Ok(TaskState::Complete) => 10,
        Ok(TaskState::Shutdown) => 11,
        Ok(TaskState::Failed) => 12,
        Ok(TaskState::Rejected) => 13,
        _ => 0,
    }
}

fn terminal(state: i32) -> bool {
    numbered(state) > numbered(TaskState::Running as i32)
}

fn word(state: i32) -> String {
    super::super::task::state_word(state)
}

/// docker's progress bar (`JSONProgress.String`, HideCounts): 50 columns.
pub fn bar(current: u64, total: u64) -> String {
    let pct = if total == 0 {
        0
    } else {
        ((current as f64 / total as f64 * 100.0) as usize / 2).min(50)
    };
    format!("[{}>{}]", "=".repeat(pct), " ".repeat(50 - pct))
}

/// docker's `truncError`: one line, at most 75 characters.
pub fn trunc_error(err: &str) -> String {
    let one_line = err.replace('\n', " ");
    if one_line.chars().count() > 75 {
        let mut out: String = one_line.chars().take(74).collect();
        out.push('…');
        out
    } else {
        one_line
    }
}

fn state_row(state: i32, total: u64) -> String {
    format!(
        "{:<width$} {}",
        word(state),
        bar(numbered(state), total),
        width = LONGEST_STATE
    )
}

fn status_err(task: &Task) -> &str {
    task.status.as_ref().map(|s| s.err.as_str()).unwrap_or("")
}

fn status_state(task: &Task) -> i32 {
    task.status.as_ref().map(|s| s.state).unwrap_or(0)
}

/// What one look at the service shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// `(id, text)` rows in display order: "overall progress", "1/3", …
    pub rows: Vec<(String, String)>,
    pub converged: bool,
    pub job: bool,
}

/// Remembers what docker's updaters remember between looks (slot order, whether the
/// service had converged).
#[derive(Debug, Default)]
pub struct Tracker {
    slot_map: HashMap<u64, u64>,
    done: bool,
}

fn this_iteration(service: &Service, task: &Task) -> bool {
    let want = service
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .map(|v| v.index);
    let have = task.job_iteration.as_ref().map(|v| v.index);
    match (want, have) {
        (Some(w), Some(h)) => w == h,
        _ => true,
    }
}

/// Per key, the task docker shows: the lowest desired state, then the lowest observed
/// state (restarts and start-first updates leave several tasks per slot).
fn pick<K: Ord + Clone>(tasks: impl Iterator<Item = (K, Task)>) -> BTreeMap<K, Task> {
    let mut by: BTreeMap<K, Task> = BTreeMap::new();
    for (key, task) in tasks {
        if numbered(task.desired_state) == 0 || numbered(status_state(&task)) == 0 {
            continue;
        }
        if let Some(existing) = by.get(&key) {
            let (ed, td) = (
                numbered(existing.desired_state),
                numbered(task.desired_state),
            );
            if ed < td {
                continue;
            }
            if ed == td && numbered(status_state(existing)) <= numbered(status_state(&task)) {
                continue;
            }
        }
        by.insert(key, task);
    }
    by
}

/// For jobs: per key (slot, or node), the task of the current iteration that has come
/// the least far (a key counts as complete only once its every task has).
fn pick_job<'a, K: Ord>(
    service: &Service,
    tasks: &'a [Task],
    key: impl Fn(&Task) -> K,
) -> BTreeMap<K, &'a Task> {
    let mut by: BTreeMap<K, &Task> = BTreeMap::new();
    for t in tasks.iter().filter(|t| this_iteration(service, t)) {
        if numbered(t.desired_state) == 0 || numbered(status_state(t)) == 0 {
            continue;
        }
        let k = key(t);
        match by.get(&k) {
            Some(existing) if numbered(status_state(existing)) <= numbered(status_state(t)) => {}
            _ => {
                by.insert(k, t);
            }
        }
    }
    by
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The rows for this look at `service`, its `tasks` and the nodes not down;
    /// `rollback` words the overall progress as a rollback's.
    pub fn update(
        &mut self,
        service: &Service,
        tasks: &[Task],
        active_nodes: &HashSet<String>,
        rollback: bool,
    ) -> Snapshot {
        let mode = service.spec.as_ref().and_then(|s| s.mode);
        let mut snap = match mode {
            Some(service_spec::Mode::Global(_)) => self.global(service, tasks, active_nodes),
            Some(service_spec::Mode::ReplicatedJob(job)) => {
                self.replicated_job(service, tasks, job.total_completions, job.max_concurrent)
            }
            Some(service_spec::Mode::GlobalJob(_)) => self.global_job(service, tasks),
            Some(service_spec::Mode::Replicated(r)) => {
                self.replicated(service, tasks, active_nodes, r.replicas)
            }
            None => self.replicated(service, tasks, active_nodes, 1),
        };
        if rollback
            && !snap.job
            && let Some(overall) = snap.rows.first_mut()
            && overall.0 == "overall progress"
            && overall.1.ends_with(" tasks")
        {
            overall.1 = format!("rolling back update: {}", overall.1);
        }
        snap
    }

    fn replicated(
        &mut self,
        service: &Service,
        tasks: &[Task],
        active: &HashSet<String>,
        replicas: u64,
    ) -> Snapshot {
        let by_slot = pick(
            tasks
                .iter()
                .filter(|t| shoal_proto::task_is_current(t, service))
                .filter(|t| t.node_id.is_empty() || active.contains(&t.node_id))
                .map(|t| (t.slot, t.clone())),
        );
        if self.done
            && by_slot
                .values()
                .any(|t| status_state(t) != TaskState::Running as i32)
        {
            self.done = false;
        }
        let mut rows = vec![("overall progress".to_string(), String::new())];
        let show_bars = replicas <= MAX_PROGRESS_BARS;
        if show_bars {
            for i in 1..=replicas {
                rows.push((format!("{i}/{replicas}"), String::new()));
            }
        }
        let mut running = 0;
        for (slot, task) in &by_slot {
            let next = self.slot_map.len() as u64 + 1;
            let mapped = *self.slot_map.entry(*slot).or_insert(next);
            if !terminal(task.desired_state) && status_state(task) == TaskState::Running as i32 {
                running += 1;
            }
            if !show_bars || mapped > replicas {
                continue;
            }
            let text = if !status_err(task).is_empty() {
                trunc_error(status_err(task))
            } else if !terminal(task.desired_state) && !terminal(status_state(task)) {
                state_row(status_state(task), MAX_PROGRESS)
            } else {
                continue;
            };
            if let Some(row) = rows.get_mut(mapped as usize) {
                row.1 = text;
            }
        }
        rows[0].1 = format!("{running} out of {replicas} tasks");
        self.done = running == replicas;
        Snapshot {
            rows,
            converged: running == replicas,
            job: false,
        }
    }

    fn global(&mut self, service: &Service, tasks: &[Task], active: &HashSet<String>) -> Snapshot {
        let by_node = pick(
            tasks
                .iter()
                .filter(|t| shoal_proto::task_is_current(t, service))
                .map(|t| (t.node_id.clone(), t.clone())),
        );
        let node_count = by_node.len() as u64;
        if node_count == 0 {
            return Snapshot {
                rows: vec![(
                    "overall progress".to_string(),
                    "waiting for new tasks".to_string(),
                )],
                converged: false,
                job: false,
            };
        }
        let mut rows = vec![("overall progress".to_string(), String::new())];
        let mut running = 0;
        for (node, task) in &by_node {
            if !active.contains(node) {
                continue;
            }
            if !terminal(task.desired_state) && status_state(task) == TaskState::Running as i32 {
                running += 1;
            }
            if node_count > MAX_PROGRESS_BARS {
                continue;
            }
            let text = if !status_err(task).is_empty() {
                trunc_error(status_err(task))
            } else if !terminal(task.desired_state) && !terminal(status_state(task)) {
                state_row(status_state(task), MAX_PROGRESS)
            } else {
                continue;
            };
            rows.push((truncate_id(node), text));
        }
        rows[0].1 = format!("{running} out of {node_count} tasks");
        self.done = running == node_count;
        Snapshot {
            rows,
            converged: running == node_count,
            job: false,
        }
    }

    fn replicated_job(
        &mut self,
        service: &Service,
        tasks: &[Task],
        total: u64,
        concurrent: u64,
    ) -> Snapshot {
        let by_slot = pick_job(service, tasks, |t| t.slot);
        let digits = total.to_string().len();
        let mut task_rows = Vec::new();
        let (mut active, mut complete) = (0u64, 0u64);
        for (slot, task) in &by_slot {
            let state = status_state(task);
            if numbered(state) < numbered(TaskState::Complete as i32) {
                active += 1;
            }
            if state == TaskState::Complete as i32 {
                complete += 1;
            }
            if total <= MAX_PROGRESS_BARS {
                let text = if !status_err(task).is_empty() {
                    trunc_error(status_err(task))
                } else {
                    state_row(state, MAX_JOB_PROGRESS)
                };
                task_rows.push((format!("{slot}/{total}"), text));
            }
        }
        let desired = total.saturating_sub(complete).min(concurrent);
        let active_digits = concurrent.to_string().len();
        let mut rows = vec![
            (
                "job progress".to_string(),
                format!(
                    "{complete:>digits$} out of {total} complete {}",
                    bar(complete, total)
                ),
            ),
            (
                "active tasks".to_string(),
                format!("{active:>active_digits$} out of {desired:>active_digits$} tasks"),
            ),
        ];
        rows.extend(task_rows);
        Snapshot {
            rows,
            converged: complete == total,
            job: true,
        }
    }

    fn global_job(&mut self, service: &Service, tasks: &[Task]) -> Snapshot {
        let by_node = pick_job(service, tasks, |t| t.node_id.clone());
        let total = by_node.len() as u64;
        if total == 0 {
            return Snapshot {
                rows: vec![(
                    "overall progress".to_string(),
                    "waiting for new tasks".to_string(),
                )],
                converged: false,
                job: true,
            };
        }
        let complete = by_node
            .values()
            .filter(|t| status_state(t) == TaskState::Complete as i32)
            .count() as u64;
        let mut rows = vec![(
            "overall progress".to_string(),
            format!("{complete} out of {total} tasks"),
        )];
        if total <= MAX_PROGRESS_BARS {
            for (node, task) in &by_node {
                let text = if !status_err(task).is_empty() {
                    trunc_error(status_err(task))
                } else {
                    state_row(status_state(task), MAX_JOB_PROGRESS)
                };
                rows.push((truncate_id(node), text));
            }
        }
        Snapshot {
            rows,
            converged: complete == total,
            job: true,
        }
    }
}

/// The latest error of each slot (or node) among all of the service's tasks, for the
/// message of a service that did not converge: `1/3: no suitable node (…)`.
pub fn failures(service: &Service, tasks: &[Task]) -> Vec<String> {
    let replicas = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(r)) => Some(r.replicas),
        Some(service_spec::Mode::ReplicatedJob(j)) => Some(j.total_completions),
        _ => None,
    };
    let mut latest: BTreeMap<(u64, String), &Task> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !status_err(t).is_empty()) {
        let key = if t.slot != 0 {
            (t.slot, String::new())
        } else {
            (0, t.node_id.clone())
        };
        let newer = |a: &Task, b: &Task| {
            let ts = |t: &Task| {
                t.status
                    .as_ref()
                    .and_then(|s| s.timestamp.as_ref())
                    .map(|ts| (ts.seconds, ts.nanos))
            };
            ts(a) >= ts(b)
        };
        match latest.get(&key) {
            Some(existing) if newer(existing, t) => {}
            _ => {
                latest.insert(key, t);
            }
        }
    }
    latest
        .into_iter()
        .map(|((slot, node), t)| {
            let id = match replicas {
                Some(r) if slot != 0 => format!("{slot}/{r}"),
                _ if !node.is_empty() => truncate_id(&node),
                _ => slot.to_string(),
            };
            format!("{id}: {}", trunc_error(status_err(t)))
        })
        .collect()
}

/// Where rows go: redrawn in place on a terminal, else each changed row printed once.
#[derive(Debug, Default)]
pub struct Display {
    tty: bool,
    rows: Vec<(String, String)>,
    drawn: usize,
}

fn row_line(id: &str, text: &str) -> String {
    let line = if text.is_empty() {
        format!("{id}: ")
    } else {
        format!("{id}: {text}")
    };
    line.trim_end().to_string()
}

impl Display {
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            ..Self::default()
        }
    }

    /// Sets rows (new ids are appended in order) and returns what to write.
    pub fn show(&mut self, rows: &[(String, String)]) -> String {
        let mut changed = Vec::new();
        for (id, text) in rows {
            match self.rows.iter_mut().find(|(i, _)| i == id) {
                Some(row) if &row.1 == text => {}
                Some(row) => {
                    row.1 = text.clone();
                    changed.push((id.clone(), text.clone()));
                }
                None => {
                    self.rows.push((id.clone(), text.clone()));
                    changed.push((id.clone(), text.clone()));
                }
            }
        }
        if changed.is_empty() {
            return String::new();
        }
        if self.tty {
            let mut out = String::new();
            if self.drawn > 0 {
                out.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for (id, text) in &self.rows {
                out.push_str("\x1b[2K");
                out.push_str(&row_line(id, text));
                out.push('\n');
            }
            self.drawn = self.rows.len();
            out
        } else {
            changed
                .iter()
                .filter(|(_, text)| !text.trim().is_empty())
                .map(|(id, text)| format!("{}\n", row_line(id, text)))
                .collect()
        }
    }

    /// One line under the rows that is not redrawn (a final message).
    pub fn message(&mut self, text: &str) -> String {
        self.drawn = 0;
        self.rows.clear();
        format!("{text}\n")
    }
}

/// What the command that is followed asked the manager for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intent {
    /// create, scale: the service should converge.
    #[default]
    Converge,
    /// `service update`: a rollback (automatic) means the update failed.
    Update,
    /// `service rollback` / `update --rollback`: a completed rollback is success.
    Rollback,
}

/// docker's reading of `Service.update_status` while it follows a service.
#[derive(Debug, Default)]
pub struct UpdateWatch {
    intent: Intent,
    rollback: bool,
}

/// What one look at the update status says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep following; show this `rollback: <message>` row first when set.
    Follow(Option<String>),
    /// Stop with this error (`service update paused: …`).
    Fail(String),
}

impl UpdateWatch {
    pub fn new(intent: Intent) -> Self {
        Self {
            intent,
            rollback: false,
        }
    }

    /// Whether the manager is rolling the service back (the rows say so).
    pub fn rolling_back(&self) -> bool {
        self.rollback
    }

    /// Whether convergence ends the follow with success: not for an update that is
    /// being rolled back (that ends when the rollback completes, as a failure).
    pub fn may_finish(&self) -> bool {
        !(self.intent == Intent::Update && self.rollback)
    }

    pub fn observe(&mut self, status: Option<&UpdateStatus>) -> Verdict {
        use update_status::UpdateState;
        let Some(status) = status else {
            return Verdict::Follow(None);
        };
        let message = status.message.as_str();
        match UpdateState::try_from(status.state) {
            Ok(UpdateState::Updating) => self.rollback = false,
            Ok(UpdateState::Paused) => {
                return Verdict::Fail(format!("service update paused: {message}"));
            }
            Ok(UpdateState::RollbackStarted) => {
                let notice = (!self.rollback && !message.is_empty()).then(|| message.to_string());
                self.rollback = true;
                return Verdict::Follow(notice);
            }
            Ok(UpdateState::RollbackPaused) => {
                return Verdict::Fail(format!("service rollback paused: {message}"));
            }
            Ok(UpdateState::RollbackCompleted) => {
                if self.intent == Intent::Update {
                    return Verdict::Fail(format!("service rolled back: {message}"));
                }
                // A requested rollback that finished before we first looked.
                let notice = (!self.rollback && self.intent == Intent::Rollback)
                    .then(|| "manually requested rollback".to_string());
                self.rollback = true;
                return Verdict::Follow(notice);
            }
            Ok(UpdateState::Completed) | Ok(UpdateState::Unknown) | Err(_) => {}
        }
        Verdict::Follow(None)
    }
}

/// How `follow` behaves.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub quiet: bool,
    pub timeout: Duration,
    pub intent: Intent,
}

/// The result of following a service.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Converged,
    /// Ctrl-C: the work goes on without us.
    Detached,
    /// The deadline passed: the service's name and its failing tasks' errors.
    TimedOut {
        name: String,
        failures: Vec<String>,
    },
    /// The update paused or was rolled back: docker's error line.
    Failed(String),
}

struct Printer {
    display: Display,
    quiet: bool,
}

impl Printer {
    fn write(&self, s: &str) {
        if self.quiet || s.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }
    fn show(&mut self, rows: &[(String, String)]) {
        let s = self.display.show(rows);
        self.write(&s);
    }
    fn message(&mut self, text: &str) {
        let s = self.display.message(text);
        self.write(&s);
    }
}

async fn look(
    control: &mut Control,
    service_id: &str,
) -> anyhow::Result<(Service, Vec<Task>, HashSet<String>)> {
    let service = control
        .get_service(GetServiceRequest {
            service_id: service_id.to_string(),
            insert_defaults: false,
        })
        .await
        .map_err(super::super::rpc_error)?
        .into_inner()
        .service
        .ok_or_else(|| anyhow::anyhow!("No such service: {service_id}"))?;
    let tasks = control
        .list_tasks(ListTasksRequest {
            filters: Some(ListFilters {
                service_ids: vec![service_id.to_string()],
                ..Default::default()
            }),
        })
        .await
        .map_err(super::super::rpc_error)?
        .into_inner()
        .tasks;
    let nodes = control
        .list_nodes(ListNodesRequest { filters: None })
        .await
        .map_err(super::super::rpc_error)?
        .into_inner()
        .nodes;
    let active = nodes
        .into_iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_none_or(|s| s.state != node_status::State::Down as i32)
        })
        .filter_map(|n| n.meta.map(|m| m.id))
        .collect();
    Ok((service, tasks, active))
}

/// Whether the manager is still running an update or rollback of `service`.
fn update_under_way(service: &Service) -> bool {
    use update_status::UpdateState;
    service.update_status.as_ref().is_some_and(|u| {
        u.state == UpdateState::Updating as i32 || u.state == UpdateState::RollbackStarted as i32
    })
}

fn stability(service: &Service) -> Duration {
    service
        .spec
        .as_ref()
        .and_then(|s| s.update.as_ref())
        .and_then(|u| u.monitor.as_ref())
        .and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_STABILITY)
}

/// Follows `service_id` until it converges, the deadline passes, or Ctrl-C.
#[tracing::instrument(name = "follow service convergence", skip(control, opts))]
pub async fn follow(
    control: &mut Control,
    service_id: &str,
    opts: &FollowOptions,
) -> anyhow::Result<Outcome> {
    let mut printer = Printer {
        display: Display::new(std::io::stdout().is_terminal()),
        quiet: opts.quiet,
    };
    let mut events = control
        .watch_events(WatchEventsRequest {
            kinds: vec!["task".into(), "service".into()],
            actions: Vec::new(),
            ids: Vec::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner());
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut tracker = Tracker::new();
    let mut watch = UpdateWatch::new(opts.intent);
    let mut converged_at: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (service, tasks, active) = look(control, service_id).await?;
        let verdict = watch.observe(service.update_status.as_ref());
        if let Verdict::Follow(Some(notice)) = &verdict {
            printer.show(&[("rollback".into(), notice.clone())]);
        }
        let snap = tracker.update(&service, &tasks, &active, watch.rolling_back());
        printer.show(&snap.rows);
        if let Verdict::Fail(message) = verdict {
            return Ok(Outcome::Failed(message));
        }
        let window = stability(&service);
        let mut wake = FALLBACK_REREAD;
        if snap.converged && !watch.may_finish() {
            // Rolled back to the previous spec: wait for the manager to say it is done.
        } else if snap.converged {
            if snap.job {
                printer.message("job complete");
                return Ok(Outcome::Converged);
            }
            let since = *converged_at.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= window && !update_under_way(&service) {
                printer.show(&[("verify".into(), "Service converged".into())]);
                return Ok(Outcome::Converged);
            }
            // The manager's update still watches its last replacements (its monitor
            // window): converged is only true once it says the update completed.
            let wait = window
                .saturating_sub(elapsed)
                .max(Duration::from_millis(250));
            printer.show(&[(
                "verify".into(),
                format!(
                    "Waiting {} seconds to verify that tasks are stable...",
                    wait.as_secs() + 1
                ),
            )]);
            wake = wake.min(wait.min(Duration::from_secs(1)));
        } else if converged_at.take().is_some() {
            printer.show(&[("verify".into(), "Detected task failure".into())]);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::TimedOut {
                name: super::render::name(&service).to_string(),
                failures: failures(&service, &tasks),
            });
        }
        // Wait for a relevant event (then let its batch arrive), the fallback re-read,
        // the deadline or Ctrl-C.
        let sleep = tokio::time::sleep_until((tokio::time::Instant::now() + wake).min(deadline));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    printer.message("Operation continuing in background.");
                    printer.message(&format!(
                        "Use `shoal service ps {service_id}` to check progress."
                    ));
                    return Ok(Outcome::Detached);
                }
                _ = &mut sleep => break,
                item = next_event(&mut events) => {
                    match item {
                        Some(event) if relevant(&event, service_id) => {
                            // Let the rest of the burst arrive, then take all of it
                            // into this one re-read.
                            tokio::time::sleep(DEBOUNCE).await;
                            while let Some(Some(_)) = next_event(&mut events).now_or_never() {}
                            break;
                        }
                        Some(_) => continue,
                        // The stream ended: fall back to the timer alone.
                        None => events = None,
                    }
                }
            }
        }
    }
}

type EventStream = tonic::Streaming<shoal_proto::v1::Event>;

async fn next_event(events: &mut Option<EventStream>) -> Option<shoal_proto::v1::Event> {
    match events {
        Some(stream) => match stream.next().await {
            Some(Ok(event)) => Some(event),
            _ => None,
        },
        None => std::future::pending().await,
    }
}

/// An event about this service or one of its tasks (events without a service id
/// attribute are taken as relevant: a re-read is cheap).
fn relevant(event: &shoal_proto::v1::Event, service_id: &str) -> bool {
    if event.kind == "service" {
        return event.id == service_id;
    }
    event
        .attributes
        .get("service_id")
        .is_none_or(|s| s == service_id)
}
