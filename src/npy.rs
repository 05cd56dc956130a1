//! float32 NCHW tensors in NumPy's .npy format (`--init-noise`, `--save-npy`, fixtures).
//!
//! Reading parses and checks the header first — magic, version, dtype, C order, a shape whose
//! data the file really holds — so a 3 KB file that claims terabytes is refused before
//! anything is allocated, with one line naming the file and the problem.
use std::io::Read;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::WriteNpyExt;

use crate::error::{Error, Result};
use crate::output::Staged;

/// The longest header accepted (NumPy writes ~128 bytes; format 2.0 allows 4 GiB).
const MAX_HEADER: usize = 64 * 1024;

/// A parsed .npy header.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// NumPy's type string, e.g. `<f4`.
    pub descr: String,
    pub shape: Vec<usize>,
    /// Bytes before the data.
    pub data_offset: usize,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::input(format!("{}: not a valid .npy file: {what}", path.display()))
}

/// Reads and checks the header of `path`'s content `r`.
pub fn read_header(path: &Path, r: &mut impl Read) -> Result<Header> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| bad(path, "shorter than the 8-byte preamble"))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad(path, "no \\x93NUMPY magic"));
    }
    let (len, prefix) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|_| bad(path, "truncated header length"))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|_| bad(path, "truncated header length"))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(bad(path, format!("format version {v} (known: 1, 2, 3)"))),
    };
    if len > MAX_HEADER {
        return Err(bad(
            path,
            format!("header of {len} bytes (at most {MAX_HEADER})"),
        ));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text)
        .map_err(|_| bad(path, "truncated header"))?;
    let text = String::from_utf8(text).map_err(|_| bad(path, "header is not text"))?;
    let (descr, fortran, shape) = parse_dict(&text).ok_or_else(|| {
        bad(
            path,
            "header is not a {'descr': …, 'fortran_order': …, 'shape': (…)} dictionary",
        )
    })?;
    if fortran {
        return Err(bad(
            path,
            "Fortran-ordered arrays are not supported (save in C order)",
        ));
    }
    Ok(Header {
        descr,
        shape,
        data_offset: prefix + len,
    })
}

/// The value text after `'key':` in a header dictionary.
fn value_of<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}'"))?;
    let rest = dict[at + key.len() + 2..].trim_start();
    Some(rest.strip_prefix(':')?.trim_start())
}

fn parse_dict(text: &str) -> Option<(String, bool, Vec<usize>)> {
    let dict = text
        .trim()
        .strip_prefix('{')?
        .trim_end()
        .strip_suffix('}')?;
    let descr = value_of(dict, "descr")?.strip_prefix('\'')?;
    let descr = &descr[..descr.find('\'')?];
    let fortran = value_of(dict, "fortran_order")?;
    let fortran = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return None;
    };
    let shape = value_of(dict, "shape")?.strip_prefix('(')?;
    let shape = &shape[..shape.find(')')?];
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()?;
    Some((descr.to_string(), fortran, dims))
}

/// Opens `path` (a regular file), reads its header, and checks that the file holds exactly
/// the data the header declares for elements of `width` bytes of one of `descrs`.
fn open_checked(
    path: &Path,
    descrs: &[&str],
    width: usize,
) -> Result<(std::io::BufReader<std::fs::File>, Header, usize)> {
    let cannot = |e: std::io::Error| Error::input(format!("cannot read {}: {e}", path.display()));
    let len = crate::input::regular_file(path, ".npy file", u64::MAX)?;
    let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let h = read_header(path, &mut r)?;
    if !descrs.contains(&h.descr.as_str()) {
        return Err(Error::input(format!(
            "{}: dtype {}, expected {}",
            path.display(),
            h.descr,
            descrs.join(" or ")
        )));
    }
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n.checked_mul(width).is_some())
        .ok_or_else(|| bad(path, format!("shape {:?} overflows", h.shape)))?;
    let have = len.saturating_sub(h.data_offset as u64);
    if have != (count * width) as u64 {
        return Err(bad(
            path,
            format!(
                "shape {:?} needs {} bytes of data, the file has {have}",
                h.shape,
                count * width
            ),
        ));
    }
    Ok((r, h, count))
}

/// Reads a float32 array: (shape, values in C order).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (mut r, h, count) = open_checked(path, &["<f4", ">f4"], 4)?;
    let values = f32_data(path, &mut r, &h, count)?;
    Ok((h.shape, values))
}

/// Reads a float32 array that must have shape `want` (checked before the data is read).
pub fn read_f32_shaped(path: &Path, want: &[usize], what: &str) -> Result<Vec<f32>> {
    let (mut r, h, count) = open_checked(path, &["<f4", ">f4"], 4)?;
    if h.shape != want {
        return Err(Error::input(format!(
            "{}: shape {:?}, expected {want:?} ({what})",
            path.display(),
            h.shape
        )));
    }
    f32_data(path, &mut r, &h, count)
}

fn f32_data(path: &Path, r: &mut impl Read, h: &Header, count: usize) -> Result<Vec<f32>> {
    let mut bytes = vec![0u8; count * 4];
    r.read_exact(&mut bytes)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    let big = h.descr.starts_with('>');
    Ok(bytes
        .chunks_exact(4)
        .map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            if big {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        })
        .collect())
}

/// Reads an int64 array (fixture timesteps).
pub fn read_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let (mut r, h, count) = open_checked(path, &["<i8"], 8)?;
    let mut bytes = vec![0u8; count * 8];
    r.read_exact(&mut bytes)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    let values = bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Ok((h.shape, values))
}

/// Writes a float32 array atomically.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let mut staged = Staged::new();
    stage_f32(&mut staged, path, shape, values)?;
    staged.commit()
}

/// Writes a float32 array to `path` as part of `staged` (renamed into place with the run's
/// other outputs).
pub fn stage_f32(staged: &mut Staged, path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let arr = ArrayD::from_shape_vec(IxDyn(shape), values.to_vec())
        .map_err(|e| Error::runtime(format!("npy shape {shape:?}: {e}")))?;
    staged.write(path, |w| arr.write_npy(w).map_err(std::io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_arrays_read_back_and_lying_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 - 3.5).collect();
        write_f32(&p, &[2, 3, 4], &v).unwrap();
        assert_eq!(read_f32(&p).unwrap(), (vec![2, 3, 4], v.clone()));
        assert_eq!(read_f32_shaped(&p, &[2, 3, 4], "t").unwrap(), v);
        let e = read_f32_shaped(&p, &[1, 3, 4], "--num × C, H, W").unwrap_err();
        assert!(
            e.to_string()
                .contains("shape [2, 3, 4], expected [1, 3, 4]"),
            "{e}"
        );
        // The same header claiming 4e9 × 1 × 28 × 28: refused from the file's length.
        let bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(
            &bytes[10..10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize],
        )
        .into_owned();
        let lie = text.replace("(2, 3, 4)", "(4000000000, 1, 28, 28)");
        let mut forged = bytes[..8].to_vec();
        forged.extend((lie.len() as u16).to_le_bytes());
        forged.extend(lie.as_bytes());
        forged.extend(&bytes[10 + text.len()..]);
        std::fs::write(&p, &forged).unwrap();
        let e = read_f32(&p).unwrap_err().to_string();
        assert!(
            e.contains("needs 12544000000000 bytes of data, the file has 96"),
            "{e}"
        );
        for (junk, why) in [
            (&b"hello"[..], "preamble"),
            (b"\x93NUMPY\x09\x00\x00\x00", "version 9"),
            (b"\x93NUMPY\x01\x00\x04\x00{}}}", "dictionary"),
        ] {
            std::fs::write(&p, junk).unwrap();
            let e = read_f32(&p).unwrap_err().to_string();
            assert!(e.contains(why) && !e.contains('\n'), "{e}");
        }
    }
}
