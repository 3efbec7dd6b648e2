//! The Windows kernel binding layer.

#[cfg(not(feature = "wdk"))]
mod pool;
