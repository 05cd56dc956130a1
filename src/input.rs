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

/// A regular file of at most `max` bytes, read front to back through a small window as a
/// [`bytes::Buf`]: a protobuf decoder takes the file from it without the whole file in memory
/// (a model's weights are then held once, by the decoded message, not twice). A read error, or
/// a file that ends early, ends the stream and is kept for [`FileStream::finish`].
pub struct FileStream {
    file: std::fs::File,
    path: std::path::PathBuf,
    what: &'static str,
    window: Vec<u8>,
    at: usize,
    remaining: usize,
    len: u64,
    error: Option<String>,
}

/// Bytes read at a time.
const STREAM_WINDOW: usize = 256 << 10;

impl FileStream {
    /// Opens `path` ([`regular_file`]'s checks) and reads its first window.
    pub fn open(path: &Path, what: &'static str, max: u64) -> Result<FileStream> {
        let len = regular_file(path, what, max)?;
        let file = std::fs::File::open(path)
            .map_err(|e| Error::input(format!("cannot read {what} {}: {e}", path.display())))?;
        let mut stream = FileStream {
            file,
            path: path.to_path_buf(),
            what,
            window: Vec::with_capacity(STREAM_WINDOW.min(len as usize)),
            at: 0,
            remaining: len as usize,
            len,
            error: None,
        };
        stream.refill();
        Ok(stream)
    }

    /// The file's size when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The read error that ended the stream early, if one did. (The stream is the file's
    /// first [`FileStream::len`] bytes: what is appended after it was opened is not read.)
    pub fn finish(self) -> Result<()> {
        match self.error {
            None => Ok(()),
            Some(e) => Err(Error::input(format!(
                "cannot read {} {}: {e}",
                self.what,
                self.path.display()
            ))),
        }
    }

    /// The next window (the current one used up and bytes remaining).
    fn refill(&mut self) {
        use std::io::Read;
        self.window.clear();
        self.at = 0;
        let want = STREAM_WINDOW.min(self.remaining);
        self.window.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.file.read(&mut self.window[got..]) {
                Ok(0) => {
                    self.error = Some(format!("it shrank below {} bytes while read", self.len));
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e.to_string());
                    break;
                }
            }
        }
        if got < want {
            // The stream ends here: the decoder sees a truncated message.
            self.window.truncate(got);
            self.remaining = got;
        }
    }
}

impl bytes::Buf for FileStream {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.window[self.at..]
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the file");
        while cnt > 0 {
            let k = cnt.min(self.window.len() - self.at);
            self.at += k;
            self.remaining -= k;
            cnt -= k;
            if self.at == self.window.len() && self.remaining > 0 {
                self.refill();
            }
        }
    }
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
        assert!(FileStream::open(Path::new("/dev/zero"), "model", 100).is_err());
        assert!(FileStream::open(&f, "model", 100).is_err());
    }

    /// A file read through windows gives its bytes in order, across window boundaries, with
    /// advances of any size.
    #[test]
    fn a_file_stream_gives_every_byte_in_order() {
        use bytes::Buf;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.onnx");
        let data: Vec<u8> = (0..STREAM_WINDOW * 2 + 12_345)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        std::fs::write(&f, &data).unwrap();
        let mut s = FileStream::open(&f, "model", MAX_MODEL_BYTES).unwrap();
        assert_eq!(s.len(), data.len() as u64);
        let mut got = Vec::new();
        let mut step = 1;
        while s.has_remaining() {
            let n = step.min(s.remaining()).min(s.chunk().len());
            assert!(n > 0, "an empty chunk with bytes remaining");
            got.extend_from_slice(&s.chunk()[..n]);
            s.advance(n);
            step = step * 3 % 100_003 + 1;
        }
        assert!(got == data);
        s.finish().unwrap();
        // copy_to_bytes across windows, as prost reads a weight.
        let mut s = FileStream::open(&f, "model", MAX_MODEL_BYTES).unwrap();
        s.advance(10);
        let b = s.copy_to_bytes(STREAM_WINDOW + 100);
        assert!(b[..] == data[10..10 + STREAM_WINDOW + 100]);
    }

    /// A file that shrinks after it was opened ends the stream, and `finish` says so.
    #[test]
    fn a_file_that_shrinks_while_read_is_an_error() {
        use bytes::Buf;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.onnx");
        std::fs::write(&f, vec![1u8; STREAM_WINDOW + 10]).unwrap();
        let mut s = FileStream::open(&f, "model", MAX_MODEL_BYTES).unwrap();
        std::fs::write(&f, vec![1u8; 5]).unwrap();
        let n = s.chunk().len();
        s.advance(n);
        assert_eq!(s.remaining(), 0, "the stream ends at the short read");
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("shrank"), "{e}");
    }
}
