//! A tmpfs of a given size on a temporary directory, for tests of a full
//! disk (mounting needs root: elsewhere [`Tmpfs::mount`] says why not, and
//! the test says it is skipped and returns). Unmounted on drop, also when
//! the test fails.

use std::path::PathBuf;
use std::process::Command;

pub struct Tmpfs {
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` holding a file of `filler_bytes` ([`Tmpfs::filler`],
    /// removed to free space: "the cause is gone"); `None`, said on stderr,
    /// where it cannot be mounted (the test is then skipped).
    pub fn with_filler(size: &str, filler_bytes: usize) -> Option<Tmpfs> {
        let tmpfs = match Tmpfs::mount(size) {
            Ok(tmpfs) => tmpfs,
            Err(reason) => {
                eprintln!("skipped: cannot mount tmpfs: {reason}");
                return None;
            }
        };
        std::fs::write(tmpfs.filler(), vec![0x5a_u8; filler_bytes]).unwrap();
        Some(tmpfs)
    }

    pub fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// `size` as `mount -o size=` takes it (`24m`).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs { mount, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
