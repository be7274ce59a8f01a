//! The C allocator's handling of large blocks, for training processes.
//!
//! A training step allocates and frees many tensors of several MiB. glibc serves blocks
//! above its mmap threshold with fresh `mmap` pages and gives them back on `free`, and trims
//! the top of its heap once more than its trim threshold is free, so every step faults in
//! (and zeroes) the same memory again: about a tenth of a CPU stage-2 step
//! (`cargo xtask bench train`: 0.295 s → 0.26-0.28 s per step, peak resident memory
//! 141 → 146 MiB). [`keep_freed_memory`] raises both thresholds so that freed blocks stay in
//! the process for the next step.

/// Keeps freed blocks of up to 32 MiB in the process and trims the heap only when more than
/// 1 GiB of it is free (glibc's `mallopt`); a no-op on other C libraries. Call it once at
/// the start of a process that trains; memory still does not grow with the steps.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::ffi::c_int;

    // <malloc.h>
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn keep_freed_memory() {
        // SAFETY: `mallopt` only sets allocator parameters; both values are in the ranges
        // glibc accepts (the mmap threshold at most 32 MiB on 64-bit targets). Setting either
        // turns off glibc's dynamic threshold, so both are set.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
