//! The INF template installs an adapter OpenVPN recognises as ovpn-dco:
//! class Net, hardware ID `ovpn-dco`, a virtual NetAdapterCx interface with
//! ovpn-dco-win's NDIS keywords, a demand-start KMDF service, and every
//! build-dependent value (driver version, KMDF version, architecture) left
//! for stampinf to fill in.
//!
//! Expected values: `ovpn-dco-interface.md` "Names and discovery"; the INF
//! rules are Microsoft Learn's ("INF files for NetAdapterCx client drivers",
//! "Specifying WDF directives in INF files").

use std::collections::BTreeMap;

const INX: &str = include_str!("../inf/ovpn-dco.inx");
const MAKEFILE: &str = include_str!("../Makefile.toml");

/// One line of a section: `key = value` or a bare value (file names, HKR
/// lines). Keys are lower-cased: INF keys are case-insensitive.
#[derive(Debug)]
struct Line {
    key: Option<String>,
    value: String,
}

/// The sections of an INF, by lower-cased name, in file order.
struct Inf {
    sections: BTreeMap<String, Vec<Line>>,
}

/// Drops a `;` comment that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

impl Inf {
    fn parse(text: &str) -> Self {
        let mut sections: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for raw in text.lines() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.trim().to_ascii_lowercase();
                assert!(!sections.contains_key(&name), "section [{name}] appears twice");
                sections.insert(name.clone(), Vec::new());
                current = Some(name);
                continue;
            }
            let section = current.as_ref().unwrap_or_else(|| panic!("line outside any section: {raw}"));
            let parsed = match line.split_once('=') {
                // HKR lines have no '=' but may contain one inside quotes;
                // none of ours does, so the first '=' splits.
                Some((key, value)) => {
                    Line { key: Some(key.trim().to_ascii_lowercase()), value: value.trim().to_owned() }
                }
                None => Line { key: None, value: line.to_owned() },
            };
            if let Some(lines) = sections.get_mut(section) {
                lines.push(parsed);
            }
        }
        Self { sections }
    }

    fn section(&self, name: &str) -> &[Line] {
        self.sections.get(&name.to_ascii_lowercase()).unwrap_or_else(|| panic!("no section [{name}]"))
    }

    /// The values of every `key = ...` line in `section`.
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        let key = key.to_ascii_lowercase();
        self.section(section)
            .iter()
            .filter(|l| l.key.as_deref() == Some(key.as_str()))
            .map(|l| l.value.as_str())
            .collect()
    }

    /// The value of the single `key = ...` line in `section`.
    fn value(&self, section: &str, key: &str) -> &str {
        match self.values(section, key).as_slice() {
            [one] => one,
            other => panic!("[{section}] {key}: expected exactly one line, found {other:?}"),
        }
    }

    /// `%token%` replaced from [Strings] (quotes dropped), as setup does.
    fn expand(&self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('%').unwrap_or_else(|| panic!("unterminated %token% in {value}"));
            let token = &after[..end];
            if token.chars().all(|c| c.is_ascii_digit()) {
                // A DIRID such as %13% stays as it is.
                out.push('%');
                out.push_str(token);
                out.push('%');
            } else {
                out.push_str(self.value("Strings", token).trim_matches('"'));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A comma-separated value, each field trimmed, unquoted and expanded.
    fn fields(&self, value: &str) -> Vec<String> {
        value.split(',').map(|f| self.expand(f.trim().trim_matches('"'))).collect()
    }
}

fn number(value: &str) -> u64 {
    match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {value:?}"))
}

/// `ovpn_dco`: what cargo-make calls the crate on disk (CARGO_MAKE_CRATE_FS_NAME)
/// and so the name of the built `.sys` and `.cat`.
fn crate_fs_name() -> String {
    env!("CARGO_PKG_NAME").replace('-', "_")
}

/// The DDInstall section the `ovpn-dco` hardware ID selects, found the way
/// setup finds it: [Manufacturer] -> models section -> device line.
fn install_section(inf: &Inf) -> String {
    let manufacturers = inf.section("Manufacturer");
    assert_eq!(manufacturers.len(), 1, "one manufacturer line");
    let fields = inf.fields(&manufacturers[0].value);
    let (models, decorations) = fields.split_first().expect("models section name");
    assert!(
        decorations.iter().any(|d| d.to_ascii_lowercase().starts_with("nt$arch$")),
        "models decorated with NT$ARCH$ (stamped by stampinf): {decorations:?}"
    );
    let models_section = format!("{models}.{}", decorations[0]);
    let mut installs = inf.section(&models_section).iter().filter_map(|line| {
        let fields = inf.fields(&line.value);
        let (install, ids) = fields.split_first()?;
        ids.iter().any(|id| id.eq_ignore_ascii_case("ovpn-dco")).then(|| install.clone())
    });
    let install = installs.next().expect("a device line with hardware ID ovpn-dco");
    assert!(installs.next().is_none(), "hardware ID ovpn-dco listed once");
    install
}

#[test]
fn version_section_declares_a_net_class_driver_with_a_stamped_version() {
    let inf = Inf::parse(INX);
    assert_eq!(inf.value("Version", "Signature").to_ascii_uppercase(), "\"$WINDOWS NT$\"");
    assert_eq!(inf.value("Version", "Class"), "Net");
    assert!(inf.value("Version", "ClassGuid").eq_ignore_ascii_case("{4d36e972-e325-11ce-bfc1-08002be10318}"));
    assert_eq!(number(inf.value("Version", "PnpLockdown")), 1);
    assert_eq!(inf.value("Version", "CatalogFile"), format!("{}.cat", crate_fs_name()));

    // The version is stamped: the template's DriverVer is empty, and nowhere
    // else does one appear.
    assert_eq!(inf.value("Version", "DriverVer"), "");
    let stamped_elsewhere: Vec<_> = inf
        .sections
        .iter()
        .filter(|(name, _)| name.as_str() != "version")
        .filter(|(_, lines)| lines.iter().any(|l| l.key.as_deref() == Some("driverver")))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(stamped_elsewhere.is_empty(), "DriverVer outside [Version]: {stamped_elsewhere:?}");
}

#[test]
fn build_stamps_the_inf_with_the_windows_drivers_rs_flow() {
    // The stampinf task (`-d * -v *`, `-k <KMDF version>`, `-a <arch>`) comes
    // from wdk-build's rust-driver-makefile.toml; ours must extend it and
    // leave that task alone.
    assert!(MAKEFILE.contains("rust-driver-makefile.toml"), "Makefile.toml extends the windows-drivers-rs makefile");
    assert!(MAKEFILE.contains("load_rust_driver_makefile"), "Makefile.toml links the makefile into target/");
    assert!(!MAKEFILE.contains("[tasks.stampinf]"), "stampinf is not overridden");
    assert!(MAKEFILE.contains("inf/ovpn-dco.inx"), "the template copied to the output is this one");
}

#[test]
fn hardware_id_ovpn_dco_selects_a_virtual_ip_adapter_with_ovpn_dco_win_keywords() {
    let inf = Inf::parse(INX);
    let install = format!("{}.NT", install_section(&inf));

    assert_eq!(number(inf.value(&install, "Characteristics")), 0x1, "NCF_VIRTUAL");
    for (keyword, expected) in [
        ("*IfType", 53),
        ("*MediaType", 19),
        ("*PhysicalMediaType", 0),
        ("*IfConnectorPresent", 0),
        ("*ConnectionType", 1),
        ("*DirectionType", 0),
        ("*AccessType", 2),
        ("*HardwareLoopback", 0),
    ] {
        assert_eq!(number(inf.value(&install, keyword)), expected, "{keyword}");
    }

    // Binding: Ndi\Interfaces UpperRange ndis5, LowerRange nolower, and the
    // Ndi Service naming our service.
    let mut registry = BTreeMap::new();
    for add_reg in inf.values(&install, "AddReg") {
        for section in inf.fields(add_reg) {
            for line in inf.section(&section) {
                let f = inf.fields(&line.value);
                assert_eq!(f.len(), 5, "HKR line with root, subkey, value name, flags, value: {}", line.value);
                assert_eq!(f[0], "HKR");
                registry.insert((f[1].to_ascii_lowercase(), f[2].to_ascii_lowercase()), f[4].clone());
            }
        }
    }
    let reg = |key: &str, name: &str| registry.get(&(key.to_ascii_lowercase(), name.to_ascii_lowercase())).cloned();
    assert_eq!(reg("Ndi\\Interfaces", "UpperRange").as_deref(), Some("ndis5"));
    assert_eq!(reg("Ndi\\Interfaces", "LowerRange").as_deref(), Some("nolower"));
    assert_eq!(reg("Ndi", "Service").as_deref(), Some("ovpn-dco"));
}

#[test]
fn the_adapter_runs_as_a_demand_start_kmdf_service_named_ovpn_dco() {
    let inf = Inf::parse(INX);
    let install = install_section(&inf);
    let sys = format!("{}.sys", crate_fs_name());

    let add_service = inf.fields(inf.value(&format!("{install}.NT.Services"), "AddService"));
    assert_eq!(add_service.len(), 3, "name, flags, install section: {add_service:?}");
    assert_eq!(add_service[0], "ovpn-dco");
    assert_eq!(number(&add_service[1]), 0x2, "SPSVCINST_ASSOCSERVICE: the function driver of the device");
    let service = &add_service[2];
    assert_eq!(number(inf.value(service, "ServiceType")), 1, "SERVICE_KERNEL_DRIVER");
    assert_eq!(number(inf.value(service, "StartType")), 3, "SERVICE_DEMAND_START");
    assert_eq!(number(inf.value(service, "ErrorControl")), 1, "SERVICE_ERROR_NORMAL");
    assert_eq!(inf.value(service, "ServiceBinary"), format!("%13%\\{sys}"), "run from the driver store");

    let kmdf = inf.fields(inf.value(&format!("{install}.NT.Wdf"), "KmdfService"));
    assert_eq!(kmdf.len(), 2);
    assert_eq!(kmdf[0], "ovpn-dco", "KmdfService names the same service");
    assert_eq!(inf.value(&kmdf[1], "KmdfLibraryVersion"), "$KMDFVERSION$", "stamped by stampinf -k");
}

#[test]
fn the_driver_binary_is_copied_from_the_package_into_the_driver_store() {
    let inf = Inf::parse(INX);
    let install = format!("{}.NT", install_section(&inf));
    let sys = format!("{}.sys", crate_fs_name());

    let copy_files = inf.value(&install, "CopyFiles");
    let files: Vec<_> = inf.section(copy_files).iter().map(|l| l.value.as_str()).collect();
    assert_eq!(files, [sys.as_str()]);
    assert_eq!(number(inf.value("DestinationDirs", copy_files)), 13);

    let disk = inf.value("SourceDisksFiles", &sys);
    assert_eq!(number(disk), 1);
    assert!(!inf.values("SourceDisksNames", "1").is_empty(), "disk 1 is named");
}

#[test]
fn every_string_token_is_defined() {
    let inf = Inf::parse(INX);
    for (name, lines) in &inf.sections {
        if name == "strings" {
            continue;
        }
        for line in lines {
            // expand() panics on an undefined or unterminated token.
            inf.expand(&line.value);
        }
    }
}
