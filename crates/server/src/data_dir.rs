//! The data directory and the store files in it hold job payloads and
//! idempotency keys: they are private to the router's user. A directory the
//! router creates is 0700 and a file 0600; an existing one that other local
//! users can read or write is reported once at start (path and mode), and
//! left as it is (the operator may share it on purpose).
//!
//! What would hand the store to another local user is refused at start: a
//! data directory every local user may write (without the sticky bit: any of
//! them could swap the store) or that belongs to another user (root
//! excepted), a store that is a symbolic link or not a regular file, and a
//! store owned by neither this user nor the directory's owner (another user
//! planted it, e.g. in a sticky shared directory, and reads every job
//! written into it).

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its missing parents) 0700, or checks the mode of an
/// existing one.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode();
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                return Err(format!(
                    "the data directory {} is writable by every local user (mode {:o}), who could replace the queue store: chmod 700 it",
                    dir.display(),
                    mode & 0o7777
                ));
            }
            let me = rustix::process::geteuid().as_raw();
            if m.uid() != me && m.uid() != 0 {
                return Err(format!(
                    "the data directory {} belongs to uid {}, not to this user (uid {me}) nor root: its owner can put a store of theirs in place of the router's: chown it",
                    dir.display(),
                    m.uid()
                ));
            }
            warn_if_shared(dir, mode, "directory", "700");
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
/// mode of an existing one. `Ok(true)`: this call created it.
pub fn prepare_file(path: &Path) -> Result<bool, String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => check_existing(path, &m).map(|()| false),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => Ok(true),
                // Created meanwhile (by whom?): checked like any existing one.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    match std::fs::symlink_metadata(path) {
                        Ok(m) => check_existing(path, &m).map(|()| false),
                        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
                    }
                }
                Err(e) => Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
    }
}

/// An existing store file of 0 bytes is refused: redb would take it for a
/// new store, and a store truncated to nothing would start empty as if it
/// had never held a job. (A store the router creates is written at once:
/// it is empty only for the moment between `prepare_file` and the open.)
pub fn refuse_empty_store(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => Err(format!(
            "the queue store {} is empty (0 bytes): a store that held jobs was truncated, or an empty file was put there; nothing was changed: restore it from a backup, or delete it to start with an empty store",
            path.display()
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
    }
}

/// Checks an existing store file (its `symlink_metadata`).
fn check_existing(path: &Path, m: &std::fs::Metadata) -> Result<(), String> {
    if m.file_type().is_symlink() {
        return Err(format!(
            "the queue store {} is a symbolic link: name the real file's directory as the data directory (a link could point the store at another user's file)",
            path.display()
        ));
    }
    if !m.is_file() {
        return Err(format!(
            "the queue store {} is not a regular file",
            path.display()
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    let dir_owner = path
        .parent()
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|d| d.uid());
    if m.uid() != me && Some(m.uid()) != dir_owner {
        return Err(format!(
            "the queue store {} belongs to uid {}, neither this user (uid {me}) nor the data directory's owner: that user can read every job written into it; remove it or chown it",
            path.display(),
            m.uid()
        ));
    }
    warn_if_shared(path, m.permissions().mode(), "file", "600");
    Ok(())
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
