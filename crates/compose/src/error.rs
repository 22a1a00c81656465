//! Load errors, each displaying docker's own message.

use std::collections::BTreeMap;
use std::path::Path;

/// Why compose files could not be loaded. `Display` is docker's exact wording.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    /// No `-c` given.
    #[error("Specify a Compose file (with --compose-file)")]
    NoFiles,
    /// A file could not be read; `op` is Go's operation name (`open`, `read`).
    #[error("{op} {path}: {reason}")]
    Io {
        op: String,
        path: String,
        reason: String,
    },
    /// The YAML parser's own message.
    #[error("{0}")]
    Yaml(String),
    #[error("top-level object must be a mapping")]
    TopLevelNotMapping,
    /// A non-string key below the top level (docker 28 fails in its JSON schema step).
    #[error("json: unsupported type: map[interface {{}}]interface {{}}")]
    NonStringKey,
    #[error("unsupported Compose file version: {0}")]
    UnsupportedVersion(String),
    #[error("version mismatched between two composefiles : {first} and {other}")]
    VersionMismatch { first: String, other: String },
    /// `extends`, `volume_driver`, … on a service: property → docker's explanation.
    /// The text is `stack deploy`'s; `stack config` prints only
    /// [`LoadError::FORBIDDEN_SHORT`].
    #[error("Compose file contains unsupported options:\n\n{}\n", forbidden_lines(.properties))]
    Forbidden {
        properties: BTreeMap<String, String>,
    },
    /// A bad `$` template or a missing required variable; `template` is Go-quoted.
    #[error(
        "invalid interpolation format for {path}: {template}; you may need to escape any $ with another $"
    )]
    InvalidInterpolation { path: String, template: String },
    #[error("error while interpolating {path}: failed to cast to expected type: {reason}")]
    Cast { path: String, reason: String },
    /// The most specific schema error, e.g. `services.web Additional property foo is not allowed`.
    #[error("{0}")]
    Schema(String),
    /// A value the schema let through could not be transformed (a bad volume spec,
    /// memory size, unterminated quote in a command, …), in mapstructure's words.
    #[error("decoding failed due to the following error(s):\n\nerror decoding '{field}': {reason}")]
    Decode { field: String, reason: String },
    /// A section transform failed (env file, conflicts, …).
    #[error("{0}")]
    Invalid(String),
}

fn forbidden_lines(properties: &BTreeMap<String, String>) -> String {
    let lines: Vec<String> = properties
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    lines.join("\n\n")
}

impl LoadError {
    /// What `docker stack config` prints for [`LoadError::Forbidden`].
    pub const FORBIDDEN_SHORT: &'static str = "Configuration contains forbidden properties";

    /// A file error in Go's words: `open /abs/path: no such file or directory`.
    pub(crate) fn io(op: &str, path: &Path, e: &std::io::Error) -> LoadError {
        let text = e.to_string();
        let reason = match text.find(" (os error") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        let mut chars = reason.chars();
        let reason = match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => reason,
        };
        LoadError::Io {
            op: op.into(),
            path: path.display().to_string(),
            reason,
        }
    }
}
