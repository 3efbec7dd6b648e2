//! Kernel services the layers above need, in two implementations: `windows`
//! (the real kernel glue) and `host` (the user-mode model).

#[cfg(windows)]
pub mod windows;
