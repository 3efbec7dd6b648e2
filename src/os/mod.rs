//! Kernel services the layers above need, in two implementations: `windows`
//! (the real kernel glue) and `host` (the user-mode model).

pub mod sync;
pub mod time;

#[cfg(windows)]
pub mod windows;
