//! Input files (models, sidecars, images, .npy) are checked before they are read: a regular
//! file (a FIFO would block the read forever, `/dev/zero` would never end) of a bounded size.
use std::path::Path;

use crate::error::{Error, Result};

/// ONNX files are protobuf messages, which cannot exceed 2 GiB.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;
/// Sidecar JSON settings: a few hundred bytes in practice.
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;
/// Init images: a compressed image file (its decoded size is limited separately).
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// `path`'s size, once it is known to be a regular file of at most `max` bytes.
pub fn regular_file(path: &Path, what: &str, max: u64) -> Result<u64> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::input(format!("cannot read {what} {}: {e}", path.display())))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(Error::input(format!("{what} {} is {kind}", path.display())));
    }
    if meta.len() > max {
        return Err(Error::input(format!(
            "{what} {} is {} bytes, more than the {} bytes a {what} may have",
            path.display(),
            meta.len(),
            max
        )));
    }
    Ok(meta.len())
}

/// Reads a regular file of at most `max` bytes (never more than that, should it grow).
pub fn read_capped(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let len = regular_file(path, what, max)?;
    let cannot =
        |e: std::io::Error| Error::input(format!("cannot read {what} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|e| cannot(std::io::Error::other(e)))?;
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(Error::input(format!(
            "{what} {} grew past {max} bytes while read",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_oversized_files_are_refused() {
        let e = read_capped(Path::new("/dev/zero"), "model", MAX_MODEL_BYTES).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_capped(dir.path(), "model", MAX_MODEL_BYTES).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        let f = dir.path().join("big.json");
        std::fs::write(&f, vec![b' '; 101]).unwrap();
        let e = read_capped(&f, "sidecar", 100).unwrap_err();
        assert!(
            e.to_string().contains("101 bytes, more than the 100"),
            "{e}"
        );
        assert_eq!(read_capped(&f, "sidecar", 101).unwrap().len(), 101);
    }
}
