//! What wagate asks of the machine before it serves: private files (umask), enough open-file
//! descriptors, and sole ownership of its data directory.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Descriptors one logged-in session holds (websocket, SQLite files, sled share).
const FDS_PER_SESSION: u64 = 4;
/// Descriptors the process needs besides sessions and HTTP connections.
const FDS_BASE: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the data directory {dir} is in use by another wagate process (pid {pid})")]
    DataDirInUse { dir: PathBuf, pid: String },
    #[error("preparing the data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Everything wagate creates from now on is readable by its owner only.
pub fn private_files() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory (owner-only) and tightens what an earlier version left readable.
pub fn prepare_data_dir(dir: &Path) -> Result<(), HostError> {
    let fail = |source| HostError::DataDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    tighten(dir).map_err(fail)
}

#[cfg(unix)]
fn tighten(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != wanted {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            tighten(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// An exclusive lock on the data directory, held for the life of the process: two processes on
/// one data directory would run two clients with the same WhatsApp credentials.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<Self, HostError> {
        let path = dir.join("wagate.lock");
        let fail = |source| HostError::DataDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fail)?;
        if file.try_lock().is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = holder.trim();
            return Err(HostError::DataDirInUse {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_owned(),
            });
        }
        file.set_len(0).map_err(fail)?;
        file.rewind().map_err(fail)?;
        writeln!(file, "{}", std::process::id()).map_err(fail)?;
        file.flush().map_err(fail)?;
        Ok(Self { _file: file })
    }
}

/// Raises the soft open-files limit to the hard one (logging both), and warns when even that is
/// short of what `sessions` sessions and `connections` HTTP connections need.
pub fn raise_open_files_limit(sessions: u64, connections: u64) {
    let needed = sessions * FDS_PER_SESSION + connections + FDS_BASE;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            tracing::warn!("could not read the open-files limit");
            return;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        tracing::info!(
            soft_before = before,
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "open-files limit"
        );
        limit.rlim_cur
    };
    if soft < needed {
        tracing::warn!(
            limit = soft,
            needed,
            sessions,
            http_connections = connections,
            "the open-files limit is below what the stored sessions and HTTP connections need; \
             raise it (ulimit -n, LimitNOFILE=)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(HostError::DataDirInUse { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected DataDirInUse, got {:?}", other.err()),
        }
    }

    #[cfg(unix)]
    #[test]
    fn preparing_the_data_dir_makes_it_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("sled")).unwrap();
        std::fs::write(dir.join("sled/db"), b"x").unwrap();
        std::fs::set_permissions(dir.join("sled"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("sled/db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        prepare_data_dir(&dir).unwrap();
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("sled"), 0o700);
        assert_eq!(mode("sled/db"), 0o600);
    }
}
