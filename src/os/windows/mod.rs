//! The Windows kernel binding layer.

pub mod bcrypt;
pub mod cng;

#[cfg(not(feature = "wdk"))]
mod pool;
