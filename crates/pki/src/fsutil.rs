//! Atomic file writes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `data` to `path` so that readers see either the old or the new content,
/// never a mix: a temporary file in the same directory with `mode`, fsynced, renamed
/// over `path`, then the directory fsynced.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let suffix: u64 = rand::random();
    let tmp = dir.join(format!(".{name}.tmp-{suffix:016x}"));

    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        // The umask may have taken bits away; never add any beyond `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(Error::io(&tmp))?;
        f.write_all(data).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, path).map_err(Error::io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename durable; some filesystems refuse to fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
