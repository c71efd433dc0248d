//! The calling convention of the C++ shims in `csrc/` (see `csrc/shim.h`) on the Rust side: a
//! call that can fail returns null or an error message the shim allocated, and a call that makes
//! a tensor writes a new `at::Tensor*` the caller then owns.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn tsr_free_message(message: *mut c_char);
}

/// `Ok` for a null message, else the message's text (the message is released).
pub(crate) fn check(message: *mut c_char) -> Result<(), String> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null message is a NUL-terminated string the shim allocated with malloc; it is
    // read once here and released once.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { tsr_free_message(message) };
    Err(text)
}

/// The tensor a shim call wrote to `out`, or its error message.
pub(crate) fn take(message: *mut c_char, out: *mut C_tensor) -> Result<Tensor, String> {
    check(message)?;
    // SAFETY: on success the shim stored a new `at::Tensor*` in `out`, which we now own.
    Ok(unsafe { Tensor::from_ptr(out) })
}
