//! The worker's local task state: `<state_dir>/tasks.json`, what each task's runtime
//! is (container id, or pid + start time), written atomically (temp file + rename) on
//! every change, so a restarted worker adopts what still runs instead of starting it
//! twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::executor::Handle;

/// The state file's name in the state dir.
pub const STATE_FILE: &str = "tasks.json";

/// What the worker remembers of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The task's name (`web.1`), for logs.
    pub name: String,
    pub handle: Handle,
    /// The stop grace period, so a task no longer assigned can be stopped politely.
    pub grace_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileFormat {
    tasks: BTreeMap<String, Record>,
}

/// The state file and its content.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    tasks: BTreeMap<String, Record>,
}

impl StateFile {
    /// Loads `<state_dir>/tasks.json`; a missing or unreadable file is an empty state
    /// (logged: the worker then cannot adopt what it ran before).
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(STATE_FILE);
        let tasks = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                Ok(f) => f.tasks,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable task state: starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read task state: starting empty");
                BTreeMap::new()
            }
        };
        Self { path, tasks }
    }

    pub fn records(&self) -> &BTreeMap<String, Record> {
        &self.tasks
    }

    pub fn get(&self, task_id: &str) -> Option<&Record> {
        self.tasks.get(task_id)
    }

    /// Records (or replaces) a task's runtime and writes the file.
    pub fn put(&mut self, task_id: &str, record: Record) {
        if self.tasks.get(task_id) == Some(&record) {
            return;
        }
        self.tasks.insert(task_id.to_string(), record);
        self.save();
    }

    /// Forgets a task and writes the file.
    pub fn forget(&mut self, task_id: &str) {
        if self.tasks.remove(task_id).is_some() {
            self.save();
        }
    }

    fn save(&self) {
        if let Err(e) = self.write() {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write task state");
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(&FileFormat {
            tasks: self.tasks.clone(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            // No fsync: this guards against the worker dying, not the host.
            f.write_all(&body)?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = StateFile::load(dir.path());
        assert!(s.records().is_empty());
        let rec = Record {
            name: "web.1".into(),
            handle: Handle::Process {
                pid: 42,
                start_time: 7,
                log: dir.path().join("logs/t.log"),
            },
            grace_ms: 10_000,
        };
        s.put("t1", rec.clone());
        s.put(
            "t2",
            Record {
                name: "db.1".into(),
                handle: Handle::Container { id: "abc".into() },
                grace_ms: 1,
            },
        );
        s.forget("t2");
        let again = StateFile::load(dir.path());
        assert_eq!(again.records().len(), 1);
        assert_eq!(again.get("t1"), Some(&rec));
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        assert!(StateFile::load(dir.path()).records().is_empty());
    }
}
