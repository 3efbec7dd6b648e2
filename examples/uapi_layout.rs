//! Prints the ovpn-dco-win IOCTL ABI as JSON: every IOCTL code and every
//! structure's size, alignment and field offsets, as this crate lays them
//! out (x64 Windows). Clients in other languages can compare their own.
//!
//! `cargo run --example uapi_layout`

fn main() {
    let mut json = String::new();
    ovpn_dco::uapi::layout::write_json(&mut json).expect("writing to a String cannot fail");
    print!("{json}");
}
