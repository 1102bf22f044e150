//! Files at rest that hold secrets (the redb file keeps the token-signing
//! secret, the join token and password hashes) are readable by the service
//! user alone: directories 0700, files 0600. Looser modes found at start are
//! tightened, with a warning; a mode that cannot be fixed is an error, since
//! anyone who can read the file can forge an admin token.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) as 0700, or tightens an existing one
/// that group or others can use.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    tighten(dir, 0o700)
}

/// Creates `file` empty as 0600 if missing, or tightens an existing one.
pub fn ensure_private_file(file: &Path) -> io::Result<()> {
    if !file.exists() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(file)?;
    }
    tighten(file, 0o600)
}

fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let current = meta.permissions().mode() & 0o777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{} is readable by other users (mode {current:o}) and cannot be made private: {e}",
                path.display()
            ),
        )
    })?;
    tracing::warn!(
        path = %path.display(),
        "was mode {current:o}, readable by other users; now {mode:o}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_loose_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        ensure_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_dir(&dir).unwrap();
        ensure_private_file(&file).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
}
