//! Build script.
//!
//! Build-script `cfg`s describe the host, not the target: the WDK exists only
//! on a Windows host, so only there (and only with the `wdk` feature) is the
//! driver binary configured. Everywhere else the crate is a plain library.
//!
//! On a Windows host with the WDK it also
//! - puts `netadaptercxstub.lib` (which defines `NetFunctions` and
//!   `NetDriverGlobals`) on the linker path, and
//! - runs bindgen over the real NetAdapterCx 2.2 / WSK headers into
//!   `$OUT_DIR/wdk_abi.rs`, which `os::windows::abi_check` compares field by
//!   field with the project's own declarations, failing the build on any
//!   difference.
//!
//! That part cannot be compiled on the Linux CI (no WDK, no `wdk-build`);
//! `docs/windows-bring-up.md` lists what to verify on the first Windows build.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=OVPN_DCO_NETADAPTERCX_LIB_DIR");
    #[cfg(all(windows, feature = "wdk"))]
    {
        let config = match wdk_build::Config::from_env_auto() {
            Ok(config) => config,
            Err(err) => panic!("WDK configuration failed: {err:?}"),
        };
        if let Err(err) = config.configure_binary_build() {
            panic!("WDK configuration failed: {err:?}");
        }
        wdk_abi::link_netadaptercx_stub(&config);
        wdk_abi::generate_header_bindings(&config);
    }
}

#[cfg(all(windows, feature = "wdk"))]
mod wdk_abi {
    use std::env;
    use std::path::{Path, PathBuf};

    use wdk_build::{BuilderExt, Config};

    /// The NetAdapterCx header/stub version the driver is written against
    /// (Windows 11 21H2 and later; `design.md`).
    const NETADAPTERCX_VERSION: &str = "2.2";

    /// `Include\<sdk version>` (parent of the `km` include directory that
    /// wdk-build resolved).
    fn sdk_include_root(config: &Config) -> PathBuf {
        let paths = config.include_paths().unwrap_or_else(|err| panic!("WDK include paths: {err:?}"));
        paths
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n.eq_ignore_ascii_case("km")))
            .and_then(|km| km.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| panic!("no km include directory among the WDK include paths"))
    }

    /// `Lib\<sdk version>\km\<arch>` (the SDK kernel library path wdk-build
    /// resolved).
    fn sdk_km_library_dir(config: &Config) -> PathBuf {
        let paths = config.library_paths().unwrap_or_else(|err| panic!("WDK library paths: {err:?}"));
        paths
            .into_iter()
            .find(|p| p.parent().and_then(Path::file_name).is_some_and(|n| n.eq_ignore_ascii_case("km")))
            .unwrap_or_else(|| panic!("no km library directory among the WDK library paths"))
    }

    /// Where WDKs have shipped the stub; the first that has the file wins.
    /// `OVPN_DCO_NETADAPTERCX_LIB_DIR` overrides the search.
    pub fn link_netadaptercx_stub(config: &Config) {
        let candidates: Vec<PathBuf> = match env::var_os("OVPN_DCO_NETADAPTERCX_LIB_DIR") {
            Some(dir) => vec![PathBuf::from(dir)],
            None => {
                let km = sdk_km_library_dir(config);
                vec![
                    km.join("netcx").join("kmdf").join("adapter").join(NETADAPTERCX_VERSION),
                    km.join("netadaptercx").join(NETADAPTERCX_VERSION),
                ]
            }
        };
        match candidates.iter().find(|dir| dir.join("netadaptercxstub.lib").is_file()) {
            Some(dir) => println!("cargo::rustc-link-search=native={}", dir.display()),
            None => panic!(
                "netadaptercxstub.lib {NETADAPTERCX_VERSION} not found in {candidates:?}; \
                 set OVPN_DCO_NETADAPTERCX_LIB_DIR to its directory"
            ),
        }
    }

    pub fn generate_header_bindings(config: &Config) {
        let include = sdk_include_root(config);
        let netcx_adapter = include.join("km").join("netcx").join("kmdf").join("adapter").join(NETADAPTERCX_VERSION);
        let netcx_shared = include.join("shared").join("netcx").join("shared").join("1.0");
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| panic!("cargo sets OUT_DIR")));

        let bindings = bindgen::Builder::wdk_default(config)
            .unwrap_or_else(|err| panic!("bindgen defaults: {err:?}"))
            .clang_arg(format!("--include-directory={}", netcx_adapter.display()))
            .clang_arg(format!("--include-directory={}", netcx_shared.display()))
            .header_contents(
                "ovpn_dco_abi.h",
                "#include <ntddk.h>\n#include <wdf.h>\n#include <netadaptercx.h>\n#include <wsk.h>\n",
            )
            .allowlist_type("_?NET_ADAPTER_(LINK_LAYER_CAPABILITIES|LINK_STATE|DATAPATH_CALLBACKS|DMA_CAPABILITIES)")
            .allowlist_type("_?NET_ADAPTER_(TX|RX)_CAPABILITIES")
            .allowlist_type("_?NET_PACKET_QUEUE_CONFIG|_?WDF_OBJECT_ATTRIBUTES|_?NET_DRIVER_GLOBALS")
            .allowlist_type("_?NETFUNCENUM")
            .allowlist_type("_?WSK_(CLIENT|PROVIDER)_.*|_?WSK_REGISTRATION|_?WSK_SOCKET|_?WSK_EVENT_CALLBACK_CONTROL")
            .layout_tests(false)
            .generate()
            .unwrap_or_else(|err| panic!("bindgen over the NetAdapterCx/WSK headers: {err}"));
        bindings.write_to_file(out.join("wdk_abi.rs")).unwrap_or_else(|err| panic!("writing wdk_abi.rs: {err}"));
    }
}
