#![no_std]
//! Host-side stub of the kernel crate, so the workspace can build-depend on it
//! (aya-build rebuilds the userspace binary when these programs change).
