//! A folder of files every uid can read: the system tests run sidecars and apps under uids of
//! their own, which must read the configs, policies and scripts the (root) test writes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// A temporary folder, mode 0755, whose files are 0644 and whose subfolders are 0755.
pub(crate) struct ReadableDir {
    dir: tempfile::TempDir,
}

impl ReadableDir {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` (a path relative to the folder), making its folders; returns
    /// the file's path.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for folder in path
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(self.dir.path()))
        {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}
