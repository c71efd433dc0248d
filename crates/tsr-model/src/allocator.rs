//! mimalloc for tsr's binaries (feature `mimalloc`): the `tsr` CLI and the benchmarks declare
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: tsr_model::allocator::MiMalloc = tsr_model::allocator::MiMalloc;
//! ```
//!
//! and call [`configure`] first thing in `main`. mimalloc is built with `override`, so it also
//! serves libtorch's C and C++ allocations (the executable exports `malloc`, which the shared
//! libtorch resolves to), not only Rust's.
//!
//! Why: glibc's allocator keeps freed tensor memory in fragmented heaps. A DPO step on
//! SmolLM2-135M with checkpointing peaked at 3.10-3.16 GB resident under glibc against about
//! 2.74 GB under mimalloc, at the same speed (`crates/tsr-dpo/benches/dpo_train.rs`,
//! docs/benchmarks.md). The purge delay [`configure`] sets keeps freed pages for a while before
//! returning them to the kernel: mimalloc's default (10 ms) returned them between every two
//! layers of the backward pass and refaulted them right after, costing about a fifth of the step
//! time.

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_e` of the mimalloc 2 sources
/// libmimalloc-sys builds (`c_src/mimalloc/v2/include/mimalloc.h`); checked by a test.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds mimalloc keeps freed memory before returning it to the kernel.
pub const PURGE_DELAY_MS: i64 = 5000;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless the environment chose one
/// (`MIMALLOC_PURGE_DELAY`, read by mimalloc itself at start-up).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: setting an option is a plain store into mimalloc's option table; the index is
        // a valid option (test below).
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _)
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_index_names_the_purge_delay() {
        #[allow(unsafe_code)]
        // SAFETY: reading options of the linked mimalloc.
        let at = |i: libmimalloc_sys::mi_option_t| unsafe { libmimalloc_sys::mi_option_get(i) };
        // The documented defaults of the slot and its neighbours pin the enum's layout:
        // eager_commit_delay (1), purge_delay (10), use_numa_nodes (0).
        assert_eq!(at(super::PURGE_DELAY - 1), 1);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(at(super::PURGE_DELAY), 10);
            super::configure();
            assert_eq!(
                at(super::PURGE_DELAY),
                super::PURGE_DELAY_MS as std::ffi::c_long
            );
        }
        assert_eq!(at(super::PURGE_DELAY + 1), 0);
    }
}
