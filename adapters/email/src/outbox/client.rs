//! Writing one message file atomically and at most once.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::Path,
};

/// Writes `bytes` to `dir/name` unless that file exists; returns whether it wrote.
///
/// The bytes go to a hidden temporary file in the same folder, are synced, and are then
/// hard-linked to the final name: the link fails if the name exists, so two concurrent sends
/// of one id leave exactly one complete file and a reader never sees a partial one. File
/// systems without hard links fall back to a rename (atomic, but a concurrent duplicate could
/// replace the file with an equivalent one).
pub(super) fn write_once(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<bool> {
    let target = dir.join(name);
    if target.exists() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let outcome = write_and_link(&temp, &target, bytes);
    // Whatever happened, the temporary name must not stay behind (after a link it is a second
    // name of the same file; after a rename it no longer exists).
    let _ = fs::remove_file(&temp);
    let written = outcome?;
    if written {
        sync_dir(dir);
    }
    Ok(written)
}

fn write_and_link(temp: &Path, target: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    match fs::hard_link(temp, target) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => {
            if target.exists() {
                return Ok(false);
            }
            fs::rename(temp, target)?;
            Ok(true)
        }
    }
}

/// Makes the new name durable (best effort: not every platform can sync a folder).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}
