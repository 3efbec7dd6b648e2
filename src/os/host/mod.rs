//! The user-mode model of the kernel services (`cfg(not(windows))`): it
//! plays NetAdapterCx and WSK with the real structure layouts and ownership
//! rules, so the data path runs unchanged on Linux and its mistakes show up
//! as verifier reports.

pub mod wsk;
