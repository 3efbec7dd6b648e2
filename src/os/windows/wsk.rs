//! The project's own declarations of Winsock Kernel (`km/wsk.h`, WDK 22621):
//! registration and NPIs, every dispatch table in its exact field order, the
//! function-pointer types with their exact parameter lists, the constants
//! the driver uses and the `netio` exports.
//!
//! Written from `wdk-abi-facts.md` §4 and independent of `wdk-sys`; on a
//! Windows host with the WDK, `build.rs` checks every layout here against
//! bindgen's view of `wsk.h` (see `docs/windows-bring-up.md`).
//!
//! Types that are not ours to declare stay opaque behind pointers: IRP,
//! MDL, SOCKADDR, CMSGHDR, process/thread objects, security descriptors,
//! UNICODE_STRING, ADDRINFOEXW. The buffer and indication types (`WSK_BUF`,
//! `WSK_BUF_LIST`, `WSK_DATA_INDICATION`, `WSK_DATAGRAM_INDICATION`) belong
//! to `netcx`'s mirrors and are opaque here until those land on this branch.

use core::ffi::c_void;
use core::marker::{PhantomData, PhantomPinned};
use core::mem::{align_of, offset_of, size_of};
use core::ptr;

use crate::ntstatus::NtStatus;

macro_rules! opaque {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
                _marker: PhantomData<(*mut u8, PhantomPinned)>,
            }
        )*
    };
}

opaque! {
    /// `IRP`
    Irp;
    /// `MDL` (mirrored in `netcx`)
    Mdl;
    /// `SOCKADDR` (the caller passes a `SOCKADDR_IN`/`SOCKADDR_IN6`)
    Sockaddr;
    /// `CMSGHDR` (16 bytes on x64, facts §4)
    Cmsghdr;
    /// `EPROCESS`
    Eprocess;
    /// `ETHREAD`
    Ethread;
    /// `SECURITY_DESCRIPTOR`
    SecurityDescriptor;
    /// `UNICODE_STRING`
    UnicodeString;
    /// `ADDRINFOEXW`
    AddrInfoExW;
    /// `WSK_BUF` (24 bytes; mirrored in `netcx`)
    WskBuf;
    /// `WSK_BUF_LIST` (32 bytes)
    WskBufList;
    /// `WSK_DATA_INDICATION` (32 bytes)
    WskDataIndication;
    /// `WSK_DATAGRAM_INDICATION` (56 bytes; mirrored in `netcx`)
    WskDatagramIndication;
}

/// `PWSK_CLIENT`: the provider's handle for a registered client.
pub type WskClient = *mut c_void;

/// `GUID` / `NPIID`: 16 bytes, align 4 (facts §4).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Npiid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

/// `{2227E803-8D8B-11D4-ABAD-009027719E09}`: the value of
/// `NPI_WSK_INTERFACE_ID`. Facts §4 mark it third-party-derived; the driver
/// uses the symbol netio exports, and this copy exists for the bring-up check
/// that both agree.
pub const NPI_WSK_INTERFACE_ID_VALUE: Npiid =
    Npiid { data1: 0x2227_E803, data2: 0x8D8B, data3: 0x11D4, data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09] };

/// `WSK_CONTROL_SOCKET_TYPE` (an `int` enum).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WskControlSocketType(pub i32);

impl WskControlSocketType {
    pub const SET_OPTION: Self = Self(0);
    pub const GET_OPTION: Self = Self(1);
    pub const IOCTL: Self = Self(2);
}

// ---------------------------------------------------------------------------
// Function-pointer types (facts §4 "Function-pointer signatures"; WSKAPI =
// NTAPI). Option<fn> has the C pointer's layout with NULL as None.
// ---------------------------------------------------------------------------

// Client (driver) side.

/// `PFN_WSK_CLIENT_EVENT`
pub type PfnWskClientEvent = Option<
    unsafe extern "system" fn(
        client_context: *mut c_void,
        event_type: u32,
        information: *mut c_void,
        information_length: usize,
    ) -> NtStatus,
>;
/// `PFN_WSK_RECEIVE_FROM_EVENT`: DISPATCH_LEVEL, any CPU, concurrently.
pub type PfnWskReceiveFromEvent = Option<
    unsafe extern "system" fn(
        socket_context: *mut c_void,
        flags: u32,
        data_indication: *mut WskDatagramIndication,
    ) -> NtStatus,
>;
/// `PFN_WSK_RECEIVE_EVENT`
pub type PfnWskReceiveEvent = Option<
    unsafe extern "system" fn(
        socket_context: *mut c_void,
        flags: u32,
        data_indication: *mut WskDataIndication,
        bytes_indicated: usize,
        bytes_accepted: *mut usize,
    ) -> NtStatus,
>;
/// `PFN_WSK_DISCONNECT_EVENT`
pub type PfnWskDisconnectEvent = Option<unsafe extern "system" fn(socket_context: *mut c_void, flags: u32) -> NtStatus>;
/// `PFN_WSK_SEND_BACKLOG_EVENT`
pub type PfnWskSendBacklogEvent =
    Option<unsafe extern "system" fn(socket_context: *mut c_void, ideal_backlog_size: usize) -> NtStatus>;

// Provider-level.

/// `PFN_WSK_SOCKET`
pub type PfnWskSocket = Option<
    unsafe extern "system" fn(
        client: WskClient,
        address_family: u16,
        socket_type: u16,
        protocol: u32,
        flags: u32,
        socket_context: *mut c_void,
        dispatch: *const c_void,
        owning_process: *mut Eprocess,
        owning_thread: *mut Ethread,
        security_descriptor: *mut SecurityDescriptor,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_SOCKET_CONNECT`
pub type PfnWskSocketConnect = Option<
    unsafe extern "system" fn(
        client: WskClient,
        socket_type: u16,
        protocol: u32,
        local_address: *mut Sockaddr,
        remote_address: *mut Sockaddr,
        flags: u32,
        socket_context: *mut c_void,
        dispatch: *const WskClientConnectionDispatch,
        owning_process: *mut Eprocess,
        owning_thread: *mut Ethread,
        security_descriptor: *mut SecurityDescriptor,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_CONTROL_CLIENT`
pub type PfnWskControlClient = Option<
    unsafe extern "system" fn(
        client: WskClient,
        control_code: u32,
        input_size: usize,
        input_buffer: *mut c_void,
        output_size: usize,
        output_buffer: *mut c_void,
        output_size_returned: *mut usize,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_GET_ADDRESS_INFO`
pub type PfnWskGetAddressInfo = Option<
    unsafe extern "system" fn(
        client: WskClient,
        node_name: *mut UnicodeString,
        service_name: *mut UnicodeString,
        name_space: u32,
        provider: *mut Npiid,
        hints: *mut AddrInfoExW,
        result: *mut *mut AddrInfoExW,
        owning_process: *mut Eprocess,
        owning_thread: *mut Ethread,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_FREE_ADDRESS_INFO`
pub type PfnWskFreeAddressInfo = Option<unsafe extern "system" fn(client: WskClient, addr_info: *mut AddrInfoExW)>;
/// `PFN_WSK_GET_NAME_INFO`
pub type PfnWskGetNameInfo = Option<
    unsafe extern "system" fn(
        client: WskClient,
        sock_addr: *mut Sockaddr,
        sock_addr_length: u32,
        node_name: *mut UnicodeString,
        service_name: *mut UnicodeString,
        flags: u32,
        owning_process: *mut Eprocess,
        owning_thread: *mut Ethread,
        irp: *mut Irp,
    ) -> NtStatus,
>;

// Socket-level (provider side).

/// `PFN_WSK_CONTROL_SOCKET`
pub type PfnWskControlSocket = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        request_type: WskControlSocketType,
        control_code: u32,
        level: u32,
        input_size: usize,
        input_buffer: *mut c_void,
        output_size: usize,
        output_buffer: *mut c_void,
        output_size_returned: *mut usize,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_CLOSE_SOCKET`
pub type PfnWskCloseSocket = Option<unsafe extern "system" fn(socket: *mut WskSocket, irp: *mut Irp) -> NtStatus>;
/// `PFN_WSK_BIND`
pub type PfnWskBind = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        local_address: *mut Sockaddr,
        flags: u32,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_CONNECT`
pub type PfnWskConnect = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        remote_address: *mut Sockaddr,
        flags: u32,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_CONNECT_EX`
pub type PfnWskConnectEx = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        remote_address: *mut Sockaddr,
        buffer: *mut WskBuf,
        flags: u32,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_SEND_TO`
pub type PfnWskSendTo = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        buffer: *mut WskBuf,
        flags: u32,
        remote_address: *mut Sockaddr,
        control_info_length: u32,
        control_info: *mut Cmsghdr,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_SEND_MESSAGES`
pub type PfnWskSendMessages = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        buffer_list: *mut WskBufList,
        flags: u32,
        remote_address: *mut Sockaddr,
        control_info_length: u32,
        control_info: *mut Cmsghdr,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_RECEIVE_FROM`
pub type PfnWskReceiveFrom = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        buffer: *mut WskBuf,
        flags: u32,
        remote_address: *mut Sockaddr,
        control_length: *mut u32,
        control_info: *mut Cmsghdr,
        control_flags: *mut u32,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_RELEASE_DATAGRAM_INDICATION_LIST`
pub type PfnWskReleaseDatagramIndicationList = Option<
    unsafe extern "system" fn(socket: *mut WskSocket, datagram_indication: *mut WskDatagramIndication) -> NtStatus,
>;
/// `PFN_WSK_RELEASE_DATA_INDICATION_LIST`
pub type PfnWskReleaseDataIndicationList =
    Option<unsafe extern "system" fn(socket: *mut WskSocket, data_indication: *mut WskDataIndication) -> NtStatus>;
/// `PFN_WSK_GET_LOCAL_ADDRESS` / `PFN_WSK_GET_REMOTE_ADDRESS`
pub type PfnWskGetAddress =
    Option<unsafe extern "system" fn(socket: *mut WskSocket, address: *mut Sockaddr, irp: *mut Irp) -> NtStatus>;
/// `PFN_WSK_SEND`, `PFN_WSK_RECEIVE` and `PFN_WSK_DISCONNECT` share this list.
pub type PfnWskBufferIo = Option<
    unsafe extern "system" fn(socket: *mut WskSocket, buffer: *mut WskBuf, flags: u32, irp: *mut Irp) -> NtStatus,
>;
/// `PFN_WSK_SEND_EX`
pub type PfnWskSendEx = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        buffer: *mut WskBuf,
        flags: u32,
        control_info_length: u32,
        control_info: *mut Cmsghdr,
        irp: *mut Irp,
    ) -> NtStatus,
>;
/// `PFN_WSK_RECEIVE_EX`
pub type PfnWskReceiveEx = Option<
    unsafe extern "system" fn(
        socket: *mut WskSocket,
        buffer: *mut WskBuf,
        flags: u32,
        control_info_length: *mut u32,
        control_info: *mut Cmsghdr,
        control_flags: *mut u32,
        irp: *mut Irp,
    ) -> NtStatus,
>;

// ---------------------------------------------------------------------------
// Registration and NPIs (facts §4).
// ---------------------------------------------------------------------------

/// `WSK_CLIENT_DISPATCH`, size 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskClientDispatch {
    /// `MAKE_WSK_VERSION(major, minor)`
    pub version: u16,
    pub reserved: u16,
    pub wsk_client_event: PfnWskClientEvent,
}

/// `WSK_CLIENT_NPI`, size 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskClientNpi {
    pub client_context: *mut c_void,
    pub dispatch: *const WskClientDispatch,
}

/// `WSK_PROVIDER_NPI`, size 16: filled by `WskCaptureProviderNPI`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskProviderNpi {
    pub client: WskClient,
    pub dispatch: *const WskProviderDispatch,
}

impl WskProviderNpi {
    /// An empty NPI to pass to `WskCaptureProviderNPI`.
    pub const fn empty() -> Self {
        Self { client: ptr::null_mut(), dispatch: ptr::null() }
    }
}

/// `WSK_REGISTRATION`, size 24: storage the client allocates, keeps alive
/// and in place from `WskRegister` to `WskDeregister`, and never touches.
#[repr(C)]
#[derive(Debug)]
pub struct WskRegistration {
    reserved_registration_state: u64,
    reserved_registration_context: *mut c_void,
    /// `KSPIN_LOCK`
    reserved_registration_lock: usize,
}

impl WskRegistration {
    /// Zeroed storage, ready for `WskRegister`.
    pub const fn new() -> Self {
        Self {
            reserved_registration_state: 0,
            reserved_registration_context: ptr::null_mut(),
            reserved_registration_lock: 0,
        }
    }
}

impl Default for WskRegistration {
    fn default() -> Self {
        Self::new()
    }
}

/// `WSK_PROVIDER_CHARACTERISTICS`, size 4.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WskProviderCharacteristics {
    pub highest_version: u16,
    pub lowest_version: u16,
}

/// `WSK_SOCKET`, size 8: cast `dispatch` to the table of the socket's
/// `WSK_FLAG_*_SOCKET` kind; it always starts with the basic table.
#[repr(C)]
#[derive(Debug)]
pub struct WskSocket {
    pub dispatch: *const c_void,
}

/// `WSK_EVENT_CALLBACK_CONTROL`, size 16: input of `SO_WSK_EVENT_CALLBACK`
/// and `WSK_SET_STATIC_EVENT_CALLBACKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskEventCallbackControl {
    pub npi_id: *const Npiid,
    pub event_mask: u32,
}

// ---------------------------------------------------------------------------
// Dispatch tables, in header order (facts §4).
// ---------------------------------------------------------------------------

/// `WSK_PROVIDER_DISPATCH`, size 56.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskProviderDispatch {
    pub version: u16,
    pub reserved: u16,
    pub wsk_socket: PfnWskSocket,
    pub wsk_socket_connect: PfnWskSocketConnect,
    pub wsk_control_client: PfnWskControlClient,
    pub wsk_get_address_info: PfnWskGetAddressInfo,
    pub wsk_free_address_info: PfnWskFreeAddressInfo,
    pub wsk_get_name_info: PfnWskGetNameInfo,
}

/// `WSK_PROVIDER_BASIC_DISPATCH`, size 16: the head of every socket table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskProviderBasicDispatch {
    pub wsk_control_socket: PfnWskControlSocket,
    pub wsk_close_socket: PfnWskCloseSocket,
}

/// `WSK_PROVIDER_DATAGRAM_DISPATCH`, size 64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskProviderDatagramDispatch {
    pub basic: WskProviderBasicDispatch,
    pub wsk_bind: PfnWskBind,
    pub wsk_send_to: PfnWskSendTo,
    pub wsk_receive_from: PfnWskReceiveFrom,
    pub wsk_release: PfnWskReleaseDatagramIndicationList,
    pub wsk_get_local_address: PfnWskGetAddress,
    pub wsk_send_messages: PfnWskSendMessages,
}

/// `WSK_PROVIDER_CONNECTION_DISPATCH`, size 104.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskProviderConnectionDispatch {
    pub basic: WskProviderBasicDispatch,
    pub wsk_bind: PfnWskBind,
    pub wsk_connect: PfnWskConnect,
    pub wsk_get_local_address: PfnWskGetAddress,
    pub wsk_get_remote_address: PfnWskGetAddress,
    pub wsk_send: PfnWskBufferIo,
    pub wsk_receive: PfnWskBufferIo,
    pub wsk_disconnect: PfnWskBufferIo,
    pub wsk_release: PfnWskReleaseDataIndicationList,
    pub wsk_connect_ex: PfnWskConnectEx,
    pub wsk_send_ex: PfnWskSendEx,
    pub wsk_receive_ex: PfnWskReceiveEx,
}

/// `WSK_CLIENT_DATAGRAM_DISPATCH`, size 8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskClientDatagramDispatch {
    pub wsk_receive_from_event: PfnWskReceiveFromEvent,
}

/// `WSK_CLIENT_CONNECTION_DISPATCH`, size 24.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WskClientConnectionDispatch {
    pub wsk_receive_event: PfnWskReceiveEvent,
    pub wsk_disconnect_event: PfnWskDisconnectEvent,
    pub wsk_send_backlog_event: PfnWskSendBacklogEvent,
}

// ---------------------------------------------------------------------------
// Constants (facts §4 "Constants (computed)").
// ---------------------------------------------------------------------------

/// `MAKE_WSK_VERSION(major, minor)` = `(major << 8) | minor`.
pub const fn make_wsk_version(major: u8, minor: u8) -> u16 {
    ((major as u16) << 8) | minor as u16
}
/// WSK 1.0, the version the driver asks for.
pub const WSK_VERSION_1_0: u16 = make_wsk_version(1, 0);

pub const WSK_NO_WAIT: u32 = 0;
pub const WSK_INFINITE_WAIT: u32 = 0xFFFF_FFFF;

// Socket kinds (`WskSocket` flags).
pub const WSK_FLAG_BASIC_SOCKET: u32 = 0x0;
pub const WSK_FLAG_LISTEN_SOCKET: u32 = 0x1;
pub const WSK_FLAG_CONNECTION_SOCKET: u32 = 0x2;
pub const WSK_FLAG_DATAGRAM_SOCKET: u32 = 0x4;
pub const WSK_FLAG_STREAM_SOCKET: u32 = 0x8;

// Event masks.
pub const WSK_EVENT_SEND_BACKLOG: u32 = 0x10;
pub const WSK_EVENT_RECEIVE: u32 = 0x40;
pub const WSK_EVENT_DISCONNECT: u32 = 0x80;
pub const WSK_EVENT_RECEIVE_FROM: u32 = 0x100;
pub const WSK_EVENT_ACCEPT: u32 = 0x200;
pub const WSK_EVENT_DISABLE: u32 = 0x8000_0000;

// I/O and event flags.
pub const WSK_FLAG_OOB: u32 = 0x1;
pub const WSK_FLAG_NODELAY: u32 = 0x2;
pub const WSK_FLAG_WAITALL: u32 = 0x2;
pub const WSK_FLAG_DRAIN: u32 = 0x4;
pub const WSK_FLAG_ABORTIVE: u32 = 0x1;
pub const WSK_FLAG_RELEASE_ASAP: u32 = 0x2;
pub const WSK_FLAG_ENTIRE_MESSAGE: u32 = 0x4;
pub const WSK_FLAG_AT_DISPATCH_LEVEL: u32 = 0x8;

// Client control codes (`WskControlClient`).
pub const WSK_TRANSPORT_LIST_QUERY: u32 = 2;
pub const WSK_TRANSPORT_LIST_CHANGE: u32 = 3;
pub const WSK_CACHE_SD: u32 = 4;
pub const WSK_RELEASE_SD: u32 = 5;
pub const WSK_TDI_DEVICENAME_MAPPING: u32 = 6;
pub const WSK_SET_STATIC_EVENT_CALLBACKS: u32 = 7;
pub const WSK_TDI_BEHAVIOR: u32 = 8;

// Socket ioctls (`WskControlSocket(WskIoctl, ...)`).
pub const IOC_WSK: u32 = 0x0F00_0000;
pub const IOC_IN: u32 = 0x8000_0000;
pub const IOC_OUT: u32 = 0x4000_0000;
pub const SIO_WSK_SET_REMOTE_ADDRESS: u32 = 0x8F00_0001;
pub const SIO_WSK_REGISTER_EXTENSION: u32 = 0xCF00_0002;
pub const SIO_WSK_QUERY_IDEAL_SEND_BACKLOG: u32 = 0x4F00_0003;
pub const SIO_WSK_QUERY_RECEIVE_BACKLOG: u32 = 0x4F00_0004;
pub const SIO_WSK_QUERY_INSPECT_ID: u32 = 0x4F00_0005;
pub const SIO_WSK_SET_SENDTO_ADDRESS: u32 = 0x8F00_0006;
pub const SIO_WSK_SET_TCP_SILENT_MODE: u32 = 0x2F00_0007;
pub const SIO_WSK_SET_RECEIVE_EX_CALLBACK: u32 = 0x8F00_0008;

// Socket options (`WskControlSocket(WskSetOption, ...)`).
pub const SO_WSK_SECURITY: u32 = 0x4001;
pub const SO_WSK_EVENT_CALLBACK: u32 = 0x4002;
pub const SOL_SOCKET: u32 = 0xFFFF;
pub const SO_REUSEADDR: u32 = 0x4;
/// `~SO_REUSEADDR` as an `int`: -5.
pub const SO_EXCLUSIVEADDRUSE: u32 = !SO_REUSEADDR;
pub const SO_KEEPALIVE: u32 = 0x8;
pub const SO_SNDBUF: u32 = 0x1001;
pub const SO_RCVBUF: u32 = 0x1002;
pub const IP_TOS: u32 = 3;
pub const IP_TTL: u32 = 4;
pub const IP_PKTINFO: u32 = 19;
pub const IPV6_UNICAST_HOPS: u32 = 4;
pub const IPV6_PKTINFO: u32 = 19;
pub const IPV6_V6ONLY: u32 = 27;
pub const TCP_NODELAY: u32 = 1;

// Address families, socket types, protocols.
pub const AF_UNSPEC: u16 = 0;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 23;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const SOCK_RAW: u16 = 3;
pub const IPPROTO_IP: u32 = 0;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
pub const IPPROTO_IPV6: u32 = 41;

// Receive message flags.
pub const MSG_TRUNC: u32 = 0x100;
pub const MSG_CTRUNC: u32 = 0x200;
pub const MSG_BCAST: u32 = 0x400;
pub const MSG_MCAST: u32 = 0x800;

const _: () = {
    assert!(WSK_VERSION_1_0 == 0x100);
    assert!(SO_EXCLUSIVEADDRUSE as i32 == -5);
    // The SIO codes are IOC_WSK plus direction bits plus a sequence number.
    assert!(SIO_WSK_SET_REMOTE_ADDRESS == IOC_IN | IOC_WSK | 1);
    assert!(SIO_WSK_REGISTER_EXTENSION == IOC_IN | IOC_OUT | IOC_WSK | 2);
    assert!(SIO_WSK_QUERY_RECEIVE_BACKLOG == IOC_OUT | IOC_WSK | 4);
};

// ---------------------------------------------------------------------------
// netio exports (facts §4 "Exported WSK registration routines").
// ---------------------------------------------------------------------------

#[link(name = "netio")]
unsafe extern "system" {
    /// `WskRegister(PWSK_CLIENT_NPI, PWSK_REGISTRATION)`; PASSIVE_LEVEL.
    pub fn WskRegister(client_npi: *mut WskClientNpi, registration: *mut WskRegistration) -> NtStatus;
    /// `WskDeregister(PWSK_REGISTRATION)`: waits for captures and sockets to
    /// go away; PASSIVE_LEVEL.
    pub fn WskDeregister(registration: *mut WskRegistration);
    /// `WskCaptureProviderNPI(PWSK_REGISTRATION, ULONG WaitTimeout,
    /// PWSK_PROVIDER_NPI)`. Never with `WSK_INFINITE_WAIT` from device add
    /// (ovpn-dco-win's boot hang, interface reference "Lessons").
    pub fn WskCaptureProviderNPI(
        registration: *mut WskRegistration,
        wait_timeout: u32,
        provider_npi: *mut WskProviderNpi,
    ) -> NtStatus;
    /// `WskReleaseProviderNPI(PWSK_REGISTRATION)`
    pub fn WskReleaseProviderNPI(registration: *mut WskRegistration);
    /// `WskQueryProviderCharacteristics(PWSK_REGISTRATION,
    /// PWSK_PROVIDER_CHARACTERISTICS)`
    pub fn WskQueryProviderCharacteristics(
        registration: *mut WskRegistration,
        characteristics: *mut WskProviderCharacteristics,
    ) -> NtStatus;
    /// `extern CONST NPIID NPI_WSK_INTERFACE_ID`
    pub static NPI_WSK_INTERFACE_ID: Npiid;
}

// ---------------------------------------------------------------------------
// Layout asserts: every size, alignment and offset in facts §4 for the
// types declared here.
// ---------------------------------------------------------------------------

macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr $(, $field:ident $(. $sub:ident)? @ $offset:expr)* $(,)?) => {
        const _: () = {
            assert!(size_of::<$ty>() == $size);
            assert!(align_of::<$ty>() == $align);
            $(assert!(offset_of!($ty, $field $(. $sub)?) == $offset);)*
        };
    };
}

assert_layout!(Npiid, size 16, align 4, data1 @ 0, data2 @ 4, data3 @ 6, data4 @ 8);
assert_layout!(WskClientDispatch, size 16, align 8, version @ 0, reserved @ 2, wsk_client_event @ 8);
assert_layout!(WskClientNpi, size 16, align 8, client_context @ 0, dispatch @ 8);
assert_layout!(WskProviderNpi, size 16, align 8, client @ 0, dispatch @ 8);
assert_layout!(WskRegistration, size 24, align 8,
    reserved_registration_state @ 0, reserved_registration_context @ 8, reserved_registration_lock @ 16);
assert_layout!(WskProviderCharacteristics, size 4, align 2, highest_version @ 0, lowest_version @ 2);
assert_layout!(WskSocket, size 8, align 8, dispatch @ 0);
assert_layout!(WskEventCallbackControl, size 16, align 8, npi_id @ 0, event_mask @ 8);
assert_layout!(WskProviderDispatch, size 56, align 8,
    version @ 0, reserved @ 2, wsk_socket @ 8, wsk_socket_connect @ 16, wsk_control_client @ 24,
    wsk_get_address_info @ 32, wsk_free_address_info @ 40, wsk_get_name_info @ 48);
assert_layout!(WskProviderBasicDispatch, size 16, align 8, wsk_control_socket @ 0, wsk_close_socket @ 8);
assert_layout!(WskProviderDatagramDispatch, size 64, align 8,
    basic.wsk_control_socket @ 0, basic.wsk_close_socket @ 8, wsk_bind @ 16, wsk_send_to @ 24,
    wsk_receive_from @ 32, wsk_release @ 40, wsk_get_local_address @ 48, wsk_send_messages @ 56);
assert_layout!(WskProviderConnectionDispatch, size 104, align 8,
    basic.wsk_control_socket @ 0, basic.wsk_close_socket @ 8, wsk_bind @ 16, wsk_connect @ 24,
    wsk_get_local_address @ 32, wsk_get_remote_address @ 40, wsk_send @ 48, wsk_receive @ 56,
    wsk_disconnect @ 64, wsk_release @ 72, wsk_connect_ex @ 80, wsk_send_ex @ 88, wsk_receive_ex @ 96);
assert_layout!(WskClientDatagramDispatch, size 8, align 8, wsk_receive_from_event @ 0);
assert_layout!(WskClientConnectionDispatch, size 24, align 8,
    wsk_receive_event @ 0, wsk_disconnect_event @ 8, wsk_send_backlog_event @ 16);
assert_layout!(WskControlSocketType, size 4, align 4);
