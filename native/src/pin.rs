//! Keeps the shared object loaded for the life of the process: the tick thread runs its
//! code, so Envoy must never `dlclose` it (as it would when the last filter
//! configuration using it is removed). `dlopen` with `RTLD_NODELETE` on the module's own
//! path marks it so, whatever `do_not_close` says.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
struct DlInfo {
    fname: *const c_char,
    fbase: *mut c_void,
    sname: *const c_char,
    saddr: *mut c_void,
}

extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
}

const RTLD_LAZY: c_int = 0x1;
const RTLD_NOLOAD: c_int = 0x4;
const RTLD_NODELETE: c_int = 0x1000;

pub fn keep_loaded() {
    let mut info = DlInfo {
        fname: std::ptr::null(),
        fbase: std::ptr::null_mut(),
        sname: std::ptr::null(),
        saddr: std::ptr::null_mut(),
    };
    let here = keep_loaded as *const c_void;
    // SAFETY: dladdr fills `info` for an address inside this object; the name it gives
    // stays valid while the object is loaded, which is during this call.
    let pinned = unsafe {
        dladdr(here, &mut info) != 0
            && !info.fname.is_null()
            && !dlopen(info.fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE).is_null()
    };
    if !pinned {
        log::warn!("could not pin the module in memory; configure do_not_close: true");
    }
}
