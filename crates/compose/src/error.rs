//! Load errors, each displaying docker's own message.

/// Why a compose file could not be loaded. `Display` is docker's exact wording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    /// No `-c` given.
    #[error("Specify a Compose file (with --compose-file)")]
    NoFiles,
}
