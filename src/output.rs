//! Output files, written so that nothing is clobbered and nothing is half-written.
//!
//! - [`check`]: before the model loads, every output path must be a regular file or nothing
//!   (not a directory, symbolic link, device, FIFO or socket, which a rename would replace),
//!   its folder writable, and no output may be the same file as an input (same device and
//!   inode, or the same canonical path) or as another output.
//! - [`Staged`]: a run's files go to temporary files created exclusively (`O_EXCL`, so never
//!   through a symbolic link someone planted) under short unpredictable names beside their
//!   targets, and are renamed into place together at the end; if anything fails before that,
//!   every temporary file is removed and no target is touched.
//! - [`Deferred`]: SIGINT and SIGTERM that arrive while the files are written are held until
//!   the files are complete or removed, then end the run (exit 130 / 143).
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A file a run reads or writes, and the flag that named it (for messages).
#[derive(Clone, Debug)]
pub struct Named {
    pub path: PathBuf,
    pub what: &'static str,
}

impl Named {
    pub fn new(path: impl Into<PathBuf>, what: &'static str) -> Named {
        Named {
            path: path.into(),
            what,
        }
    }
}

/// What identifies a file: its inode where it exists, else its canonical folder and name.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Identity {
    Inode(u64, u64),
    Path(PathBuf),
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Both identities of `path`: its inode (if it exists) and its canonical path (if its folder
/// exists).
fn identities(path: &Path) -> Vec<Identity> {
    let mut ids = vec![];
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        ids.push(Identity::Inode(m.dev(), m.ino()));
    }
    if let (Ok(dir), Some(name)) = (std::fs::canonicalize(folder_of(path)), path.file_name()) {
        ids.push(Identity::Path(dir.join(name)));
    }
    ids
}

/// The target must be a regular file or nothing: a rename onto anything else would replace a
/// device node, a FIFO, a symbolic link (not the file it points to) or fail on a directory.
fn check_kind(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err(Error::output(path, "is a directory")),
        Ok(m) if m.file_type().is_symlink() => Err(Error::output(
            path,
            "is a symbolic link (edge-sample replaces only regular files; name the file itself)",
        )),
        Ok(_) => Err(Error::output(
            path,
            "is not a regular file (a device, FIFO or socket); edge-sample writes only regular files",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::output(path, e)),
    }
}

/// Checks up front that `path` can be written: a regular file or nothing, in a folder where a
/// temporary file can be created.
pub fn check_writable(path: &Path) -> Result<()> {
    check_kind(path)?;
    probe_folder(path)
}

/// Whether files can be created in `target`'s folder: access(2) for write and search (a
/// read-only filesystem answers EROFS), so that the probe leaves nothing behind even if the
/// process is killed during it.
#[cfg(unix)]
fn probe_folder(target: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let folder = folder_of(target);
    let c = std::ffi::CString::new(folder.as_os_str().as_bytes())
        .map_err(|e| Error::output(target, std::io::Error::other(e)))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::output(target, std::io::Error::last_os_error()))
    }
}

#[cfg(not(unix))]
fn probe_folder(target: &Path) -> Result<()> {
    temp_in(target).map(drop)
}

/// Checks every output of a run before it starts: each a regular file or nothing, each
/// folder writable, none the same file as an input or as another output. Each file's
/// identities are looked up once and each folder probed once (an `--out-dir` may hold
/// thousands of earlier images).
pub fn check(outputs: &[Named], inputs: &[Named]) -> Result<()> {
    let inputs: Vec<(&Named, Vec<Identity>)> =
        inputs.iter().map(|i| (i, identities(&i.path))).collect();
    let mut seen: std::collections::HashMap<Identity, &Named> = std::collections::HashMap::new();
    let mut probed = std::collections::HashSet::new();
    for out in outputs {
        check_kind(&out.path)?;
        if probed.insert(folder_of(&out.path).to_path_buf()) {
            probe_folder(&out.path)?;
        }
        let ids = identities(&out.path);
        if let Some((input, _)) = inputs
            .iter()
            .find(|(_, i)| ids.iter().any(|x| i.contains(x)))
        {
            return Err(Error::output(
                &out.path,
                format!(
                    "{} would replace {} (the same file); choose another name",
                    out.what, input.what
                ),
            ));
        }
        if let Some(other) = ids.iter().find_map(|x| seen.get(x)) {
            return Err(Error::output(
                &out.path,
                format!(
                    "{} and {} name the same file; give each its own",
                    other.what, out.what
                ),
            ));
        }
        for id in ids {
            seen.insert(id, out);
        }
    }
    Ok(())
}

/// An exclusively created temporary file beside `target`, with a short random name.
/// Its mode is what `File::create` would give (0666 less the umask), not tempfile's 0600.
fn temp_in(target: &Path) -> Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(".es-");
    #[cfg(unix)]
    b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    b.tempfile_in(folder_of(target))
        .map_err(|e| Error::output(target, e))
}

/// A run's output files, complete under temporary names until [`Staged::commit`].
#[derive(Default)]
pub struct Staged {
    files: Vec<(tempfile::TempPath, PathBuf)>,
}

impl Staged {
    pub fn new() -> Staged {
        Staged::default()
    }

    /// Writes `path`'s content to a new temporary file beside it (flushed and synced).
    pub fn write(
        &mut self,
        path: &Path,
        fill: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
    ) -> Result<()> {
        let tmp = temp_in(path)?;
        let result = (|| {
            let mut w = BufWriter::new(tmp.as_file());
            fill(&mut w)?;
            w.flush()?;
            drop(w);
            tmp.as_file().sync_all()
        })();
        result.map_err(|e| Error::output(path, e))?;
        self.files.push((tmp.into_temp_path(), path.to_path_buf()));
        Ok(())
    }

    /// Renames every file into place. Each target is checked again just before (still a
    /// regular file or nothing).
    pub fn commit(self) -> Result<()> {
        for (_, target) in &self.files {
            check_kind(target)?;
        }
        for (tmp, target) in self.files {
            tmp.persist(&target)
                .map_err(|e| Error::output(&target, e.error))?;
        }
        Ok(())
    }
}

/// Writes one file atomically (a [`Staged`] of one).
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut staged = Staged::new();
    staged.write(path, fill)?;
    staged.commit()
}

/// SIGINT and SIGTERM held while outputs are written: from [`Deferred::new`] on they only raise
/// flags (for the rest of the process: the writes are its last act), and [`Deferred::finish`]
/// turns a raised flag into the run's error.
pub struct Deferred {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Deferred {
    pub fn new() -> Result<Deferred> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let (int, term) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let err =
            |e: std::io::Error| Error::runtime(format!("cannot install signal handlers: {e}"));
        signal_hook::flag::register(SIGINT, int.clone()).map_err(err)?;
        signal_hook::flag::register(SIGTERM, term.clone()).map_err(err)?;
        Ok(Deferred { int, term })
    }

    /// The signal that arrived, as the run's error.
    pub fn arrived(&self) -> Option<Error> {
        if self.term.load(Ordering::SeqCst) {
            Some(Error::Terminated)
        } else if self.int.load(Ordering::SeqCst) {
            Some(Error::Interrupted)
        } else {
            None
        }
    }

    /// Commits `staged` unless a signal arrived while it was written (then its temporary files
    /// are removed); a signal during the renames ends the run after them.
    pub fn finish(&self, staged: Staged) -> Result<()> {
        if let Some(e) = self.arrived() {
            drop(staged);
            return Err(e);
        }
        staged.commit()?;
        match self.arrived() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_that_are_inputs_or_each_other_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"x").unwrap();
        let out = dir.path().join("out.png");
        let inputs = [Named::new(&model, "the model (-m)")];
        let e = check(&[Named::new(&model, "-o")], &inputs).unwrap_err();
        assert!(
            e.to_string().contains("-o would replace the model (-m)"),
            "{e}"
        );
        // The same file by another spelling.
        let other = dir.path().join(".").join("m.onnx");
        assert!(check(&[Named::new(&other, "--save-npy")], &inputs).is_err());
        let e = check(
            &[
                Named::new(&out, "-o"),
                Named::new(dir.path().join("./out.png"), "png:"),
            ],
            &inputs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("name the same file"), "{e}");
        check(&[Named::new(&out, "-o")], &inputs).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn special_files_and_links_are_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(check_writable(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert!(check_writable(Path::new("/dev/null"))
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(check_writable(dir.path()).is_err());
        // A write beside a planted link goes to a fresh file, and the link's target is intact.
        write_atomic(&dir.path().join("out.png"), |w| w.write_all(b"png")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.path().join("out.png")).unwrap(), b"png");
    }

    #[test]
    fn staged_files_appear_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut s = Staged::new();
        s.write(&a, |w| w.write_all(b"1")).unwrap();
        assert!(s
            .write(&b, |_| Err(std::io::Error::other("disk full")))
            .is_err());
        drop(s);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let mut s = Staged::new();
        s.write(&a, |w| w.write_all(b"1")).unwrap();
        s.write(&b, |w| w.write_all(b"2")).unwrap();
        assert!(!a.exists() && !b.exists());
        s.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // The mode a plain File::create gives (the umask applies), not tempfile's 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::File::create(&plain).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&a), mode(&plain));
        }
    }
}
