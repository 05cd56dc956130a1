//! float32 NCHW tensors in NumPy's .npy format (`--init-noise`, `--save-npy`, fixtures).
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};
use crate::output::Staged;

/// Reads a float32 array: (shape, values in C order).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    let arr = ArrayD::<f32>::read_npy(std::io::BufReader::new(file))
        .map_err(|e| Error::input(format!("{}: not a float32 .npy array: {e}", path.display())))?;
    let shape = arr.shape().to_vec();
    let values = if arr.is_standard_layout() {
        arr.into_raw_vec_and_offset().0
    } else {
        arr.iter().copied().collect()
    };
    Ok((shape, values))
}

/// Reads an int64 array (fixture timesteps).
pub fn read_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    let arr = ArrayD::<i64>::read_npy(std::io::BufReader::new(file))
        .map_err(|e| Error::input(format!("{}: not an int64 .npy array: {e}", path.display())))?;
    Ok((arr.shape().to_vec(), arr.iter().copied().collect()))
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
