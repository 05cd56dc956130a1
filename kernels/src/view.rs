//! A mutable slice that the parts of one [`crate::Team`] job write through at once, each its
//! own ranges: the borrow and the length travel with it, so a part's slice cannot outlive the
//! data nor reach past its end.

use std::marker::PhantomData;
use std::ops::Range;

/// `len` elements borrowed mutably for `'a`, handed out as disjoint subslices to the parts of
/// a job (which may run on several threads).
pub struct DisjointMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<'a, T> DisjointMut<'a, T> {
    /// A view of all of `slice`, which stays borrowed while the view (or a copy) is used.
    pub fn new(slice: &'a mut [T]) -> Self {
        DisjointMut {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// Elements in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `range` of the view. Panics unless `range` lies within it.
    ///
    /// # Safety
    /// While the returned slice lives, no other slice obtained from this view (or a copy of
    /// it) overlaps it: the callers hand disjoint ranges to the concurrent parts of a job.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} outside a view of {}",
            self.len
        );
        // SAFETY: within the borrowed slice (checked above), which lives for 'a; exclusive
        // by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// Copies `src` to elements `at ..` of the view, with the bounds checked only in debug
    /// builds: for the innermost loops, whose callers check a whole pass's bounds once.
    ///
    /// # Safety
    /// `at + src.len() ≤ len`; no other part reads or writes these elements meanwhile.
    #[inline(always)]
    pub unsafe fn copy_from_unchecked(&self, at: usize, src: &[T])
    where
        T: Copy,
    {
        debug_assert!(at + src.len() <= self.len);
        // SAFETY: in bounds and exclusive (caller); `src` cannot overlap the view, which is
        // borrowed mutably.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) }
    }
}

impl<T> Clone for DisjointMut<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DisjointMut<'_, T> {}

// SAFETY: the view is a `&mut [T]` whose parts go to different threads: sending it, or
// sharing it (every access hands out `&mut` subslices, disjoint by `slice_mut`'s contract),
// moves `T`s' exclusive access between threads, which `T: Send` allows.
unsafe impl<T: Send> Send for DisjointMut<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for DisjointMut<'_, T> {}

impl<T> std::fmt::Debug for DisjointMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DisjointMut({} elements)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_write_their_own_ranges() {
        let mut data = vec![0u32; 10];
        let view = DisjointMut::new(&mut data);
        let team = crate::Team::new(3).unwrap();
        team.run(5, &|p| {
            // SAFETY: part p's two elements only.
            unsafe { view.slice_mut(2 * p..2 * p + 2) }.fill(p as u32 + 1);
        });
        assert_eq!(data, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn length_emptiness_and_debug() {
        let mut data = [0u8; 4];
        let view = DisjointMut::new(&mut data);
        assert_eq!((view.len(), view.is_empty()), (4, false));
        assert_eq!(format!("{view:?}"), "DisjointMut(4 elements)");
        let mut none: [u8; 0] = [];
        assert!(DisjointMut::new(&mut none).is_empty());
    }

    #[test]
    #[should_panic(expected = "outside a view of 4")]
    fn a_range_past_the_end_panics() {
        let mut data = [0.0f32; 4];
        let view = DisjointMut::new(&mut data);
        // SAFETY: the only slice taken.
        let _ = unsafe { view.slice_mut(2..5) };
    }
}
