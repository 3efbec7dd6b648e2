//! Build script.
//!
//! Build-script `cfg`s describe the host, not the target: the WDK exists only
//! on a Windows host, so only there (and only with the `wdk` feature) is the
//! driver binary configured. Everywhere else the crate is a plain library.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(all(windows, feature = "wdk"))]
    {
        if let Err(err) = wdk_build::configure_wdk_binary_build() {
            panic!("WDK configuration failed: {err:?}");
        }
    }
}
