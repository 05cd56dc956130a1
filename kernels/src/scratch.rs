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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_start_on_a_cache_line_and_the_buffer_grows_only_as_needed() {
        let mut buf = Vec::new();
        for len in [1, 100, 37, 1000, 16] {
            let s = aligned(&mut buf, len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % 64, 0, "len {len}");
            // At most one cache line beyond the largest request so far.
            assert!(buf.len() <= 1000.max(len) + 16, "{} for {len}", buf.len());
        }
        assert_eq!(buf.len(), 1016);
    }
}
