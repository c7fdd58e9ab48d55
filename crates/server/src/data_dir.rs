//! The data directory and the store files in it hold job payloads and
//! idempotency keys: they are private to the router's user. A directory the
//! router creates is 0700 and a file 0600; an existing one that other local
//! users can read or write is reported once at start (path and mode), and
//! left as it is (the operator may share it on purpose).

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its missing parents) 0700, or checks the mode of an
/// existing one.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            warn_if_shared(dir, m.permissions().mode(), "directory", "700");
            Ok(())
        }
        Ok(_) => Err(format!(
            "the data directory {} is not a directory (set [storage] data_dir or --data-dir)",
            dir.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                format!(
                    "cannot create the data directory {}: {e} (set [storage] data_dir or --data-dir)",
                    dir.display()
                )
            }),
        Err(e) => Err(format!(
            "cannot use the data directory {}: {e}",
            dir.display()
        )),
    }
}

/// Creates the empty file `path` 0600 (its owner fills it), or checks the
/// mode of an existing one.
pub fn prepare_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) => {
            warn_if_shared(path, m.permissions().mode(), "file", "600");
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
    }
}

fn warn_if_shared(path: &Path, mode: u32, what: &str, want: &str) {
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o7777),
            "the data {what} is open to other local users, who can read job payloads and idempotency keys: chmod {want} it"
        );
    }
}
