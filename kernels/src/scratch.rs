//! Scratch buffers aligned to cache lines, reused from call to call.

/// `len` floats of a scratch buffer from a 64-byte boundary, growing it as needed: rows whose
/// strides are multiples of 16 floats (Winograd's patches and products, packed tiles) then
/// start on a cache line, so that no vector load or store of them straddles two lines (the
/// heap gave addresses 16 bytes past one: Winograd 64→64 F(4×4) on 32×32 266 → 230 µs,
/// 64→64 16×16 79 → 67).
pub(crate) fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const LINE: usize = 16;
    if buf.len() < len + LINE {
        buf.resize(len + LINE, 0.0);
    }
    let skip = buf.as_ptr().align_offset(4 * LINE).min(LINE);
    &mut buf[skip..skip + len]
}
