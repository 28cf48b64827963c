//! The one owned, zero-filled, 64-byte aligned heap buffer: storages and
//! input tensors of the executor, and weights read from a file.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

use crate::plan::ALIGN;
use crate::Error;

/// `len` zero-filled bytes at a 64-byte aligned address (TVM kernels assume
/// aligned data). Kernels write it through [`AlignedBuf::as_mut_ptr`], so the
/// executor never keeps a Rust reference into it for longer than a copy.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

impl AlignedBuf {
    /// Allocates `len` zero bytes; an `Error::Model` when out of memory.
    pub fn zeroed(len: usize) -> Result<AlignedBuf, Error> {
        let oom = || Error::Model(format!("cannot allocate {len} bytes"));
        // A zero-size layout is not allowed by the allocator; use one byte.
        let layout = Layout::from_size_align(len.max(1), ALIGN).map_err(|_| oom())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(oom)?;
        Ok(AlignedBuf { ptr, len, layout })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address, for kernels and raw copies.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size() >= len` initialised (zeroed,
        // then written) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
