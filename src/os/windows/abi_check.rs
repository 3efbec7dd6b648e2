//! Build-time proof that the project's declarations (`netadaptercx`, `wsk`)
//! match the real WDK headers: `build.rs` runs bindgen over them into
//! `$OUT_DIR/wdk_abi.rs`, and every `const` below fails the build if a size,
//! an alignment, an offset or a table index differs.
//!
//! Compiled only on a Windows host with the WDK (`wdk` feature); it has
//! never been compiled on the Linux CI. Bindgen's naming of anonymous members
//! and of the `NETFUNCENUM` constants is the likeliest thing to need a fix-up
//! on the first Windows build (`docs/windows-bring-up.md`, step 2).

use core::mem::{align_of, offset_of, size_of};

use super::netadaptercx as ncx;
use super::wsk;

#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/wdk_abi.rs"));
}

macro_rules! same_layout {
    ($ours:ty, $theirs:ty { $($o:ident => $t:ident),* $(,)? }) => {
        const _: () = {
            assert!(size_of::<$ours>() == size_of::<$theirs>());
            assert!(align_of::<$ours>() == align_of::<$theirs>());
            $(assert!(offset_of!($ours, $o) == offset_of!($theirs, $t));)*
        };
    };
}

same_layout!(ncx::NetAdapterLinkLayerCapabilities, sys::NET_ADAPTER_LINK_LAYER_CAPABILITIES {
    size => Size, max_tx_link_speed => MaxTxLinkSpeed, max_rx_link_speed => MaxRxLinkSpeed,
});
same_layout!(ncx::NetAdapterLinkState, sys::NET_ADAPTER_LINK_STATE {
    size => Size, tx_link_speed => TxLinkSpeed, rx_link_speed => RxLinkSpeed,
    media_connect_state => MediaConnectState, media_duplex_state => MediaDuplexState,
    supported_pause_functions => SupportedPauseFunctions, auto_negotiation_flags => AutoNegotiationFlags,
});
same_layout!(ncx::NetAdapterDatapathCallbacks, sys::NET_ADAPTER_DATAPATH_CALLBACKS {
    size => Size, evt_adapter_create_tx_queue => EvtAdapterCreateTxQueue,
    evt_adapter_create_rx_queue => EvtAdapterCreateRxQueue,
});
same_layout!(ncx::NetPacketQueueConfig, sys::NET_PACKET_QUEUE_CONFIG {
    size => Size, evt_start => EvtStart, evt_stop => EvtStop, evt_advance => EvtAdvance,
    evt_set_notification_enabled => EvtSetNotificationEnabled, evt_cancel => EvtCancel,
    execution_context => ExecutionContext,
});
same_layout!(ncx::NetAdapterDmaCapabilities, sys::NET_ADAPTER_DMA_CAPABILITIES {
    size => Size, dma_enabler => DmaEnabler, maximum_physical_address => MaximumPhysicalAddress,
    cache_enabled => CacheEnabled, preferred_node => PreferredNode,
});
same_layout!(ncx::NetAdapterTxCapabilities, sys::NET_ADAPTER_TX_CAPABILITIES {
    size => Size, mapping_requirement => MappingRequirement, payload_backfill => PayloadBackfill,
    maximum_number_of_fragments => MaximumNumberOfFragments, fragment_buffer_alignment => FragmentBufferAlignment,
    fragment_ring_number_of_elements_hint => FragmentRingNumberOfElementsHint,
    maximum_number_of_queues => MaximumNumberOfQueues, dma_capabilities => DmaCapabilities,
});
// The anonymous union (offset 32) is bindgen's `__bindgen_anon_1`; its arms
// are covered by the total size and the offsets around it.
same_layout!(ncx::NetAdapterRxCapabilities, sys::NET_ADAPTER_RX_CAPABILITIES {
    size => Size, allocation_mode => AllocationMode, attachment_mode => AttachmentMode,
    fragment_ring_number_of_elements_hint => FragmentRingNumberOfElementsHint,
    maximum_frame_size => MaximumFrameSize, maximum_number_of_queues => MaximumNumberOfQueues,
    mode_slot => __bindgen_anon_1,
});
same_layout!(ncx::WdfObjectAttributes, sys::WDF_OBJECT_ATTRIBUTES {
    size => Size, evt_cleanup_callback => EvtCleanupCallback, evt_destroy_callback => EvtDestroyCallback,
    execution_level => ExecutionLevel, synchronization_scope => SynchronizationScope,
    parent_object => ParentObject, context_size_override => ContextSizeOverride,
    context_type_info => ContextTypeInfo,
});

same_layout!(wsk::WskClientDispatch, sys::WSK_CLIENT_DISPATCH {
    version => Version, reserved => Reserved, wsk_client_event => WskClientEvent,
});
same_layout!(wsk::WskClientNpi, sys::WSK_CLIENT_NPI { client_context => ClientContext, dispatch => Dispatch });
same_layout!(wsk::WskProviderNpi, sys::WSK_PROVIDER_NPI { client => Client, dispatch => Dispatch });
same_layout!(wsk::WskRegistration, sys::WSK_REGISTRATION {});
same_layout!(wsk::WskProviderCharacteristics, sys::WSK_PROVIDER_CHARACTERISTICS {
    highest_version => HighestVersion, lowest_version => LowestVersion,
});
same_layout!(wsk::WskSocket, sys::WSK_SOCKET { dispatch => Dispatch });
same_layout!(wsk::WskEventCallbackControl, sys::WSK_EVENT_CALLBACK_CONTROL { npi_id => NpiId, event_mask => EventMask });
same_layout!(wsk::WskProviderDispatch, sys::WSK_PROVIDER_DISPATCH {
    version => Version, reserved => Reserved, wsk_socket => WskSocket, wsk_socket_connect => WskSocketConnect,
    wsk_control_client => WskControlClient, wsk_get_address_info => WskGetAddressInfo,
    wsk_free_address_info => WskFreeAddressInfo, wsk_get_name_info => WskGetNameInfo,
});
same_layout!(wsk::WskProviderBasicDispatch, sys::WSK_PROVIDER_BASIC_DISPATCH {
    wsk_control_socket => WskControlSocket, wsk_close_socket => WskCloseSocket,
});
// The embedded basic table is an anonymous member in C (`__bindgen_anon_1`).
same_layout!(wsk::WskProviderDatagramDispatch, sys::WSK_PROVIDER_DATAGRAM_DISPATCH {
    basic => __bindgen_anon_1, wsk_bind => WskBind, wsk_send_to => WskSendTo,
    wsk_receive_from => WskReceiveFrom, wsk_release => WskRelease,
    wsk_get_local_address => WskGetLocalAddress, wsk_send_messages => WskSendMessages,
});
same_layout!(wsk::WskProviderConnectionDispatch, sys::WSK_PROVIDER_CONNECTION_DISPATCH {
    basic => __bindgen_anon_1, wsk_bind => WskBind, wsk_connect => WskConnect,
    wsk_get_local_address => WskGetLocalAddress, wsk_get_remote_address => WskGetRemoteAddress,
    wsk_send => WskSend, wsk_receive => WskReceive, wsk_disconnect => WskDisconnect,
    wsk_release => WskRelease, wsk_connect_ex => WskConnectEx, wsk_send_ex => WskSendEx,
    wsk_receive_ex => WskReceiveEx,
});
same_layout!(wsk::WskClientDatagramDispatch, sys::WSK_CLIENT_DATAGRAM_DISPATCH {
    wsk_receive_from_event => WskReceiveFromEvent,
});
same_layout!(wsk::WskClientConnectionDispatch, sys::WSK_CLIENT_CONNECTION_DISPATCH {
    wsk_receive_event => WskReceiveEvent, wsk_disconnect_event => WskDisconnectEvent,
    wsk_send_backlog_event => WskSendBacklogEvent,
});

// Function-table indices. `BuilderExt::wdk_default` (wdk-build 0.6,
// bindgen.rs) sets `default_enum_style(EnumVariation::ModuleConsts)`, so the
// enum `_NETFUNCENUM` becomes a module of constants, as wdk-sys's own enums
// are (`_WDF_TRI_STATE::WdfFalse`): `_NETFUNCENUM::XTableIndex`, not the
// default `Consts` style's `_NETFUNCENUM_XTableIndex`.
macro_rules! same_index {
    ($($ours:ident => $theirs:ident),* $(,)?) => {
        const _: () = { $(assert!(ncx::table_index::$ours == sys::_NETFUNCENUM::$theirs as usize);)* };
    };
}

same_index! {
    NET_ADAPTER_INIT_ALLOCATE => NetAdapterInitAllocateTableIndex,
    NET_ADAPTER_INIT_FREE => NetAdapterInitFreeTableIndex,
    NET_ADAPTER_INIT_SET_DATAPATH_CALLBACKS => NetAdapterInitSetDatapathCallbacksTableIndex,
    NET_ADAPTER_CREATE => NetAdapterCreateTableIndex,
    NET_ADAPTER_START => NetAdapterStartTableIndex,
    NET_ADAPTER_STOP => NetAdapterStopTableIndex,
    NET_ADAPTER_SET_LINK_LAYER_CAPABILITIES => NetAdapterSetLinkLayerCapabilitiesTableIndex,
    NET_ADAPTER_SET_LINK_LAYER_MTU_SIZE => NetAdapterSetLinkLayerMtuSizeTableIndex,
    NET_ADAPTER_SET_DATA_PATH_CAPABILITIES => NetAdapterSetDataPathCapabilitiesTableIndex,
    NET_ADAPTER_SET_LINK_STATE => NetAdapterSetLinkStateTableIndex,
    NET_ADAPTER_GET_LINK_LAYER_MTU_SIZE => NetAdapterGetLinkLayerMtuSizeTableIndex,
    NET_DEVICE_INIT_CONFIG => NetDeviceInitConfigTableIndex,
    NET_RX_QUEUE_CREATE => NetRxQueueCreateTableIndex,
    NET_RX_QUEUE_NOTIFY_MORE_RECEIVED_PACKETS_AVAILABLE =>
        NetRxQueueNotifyMoreReceivedPacketsAvailableTableIndex,
    NET_RX_QUEUE_INIT_GET_QUEUE_ID => NetRxQueueInitGetQueueIdTableIndex,
    NET_RX_QUEUE_GET_RING_COLLECTION => NetRxQueueGetRingCollectionTableIndex,
    NET_RX_QUEUE_GET_EXTENSION => NetRxQueueGetExtensionTableIndex,
    NET_TX_QUEUE_CREATE => NetTxQueueCreateTableIndex,
    NET_TX_QUEUE_NOTIFY_MORE_COMPLETED_PACKETS_AVAILABLE =>
        NetTxQueueNotifyMoreCompletedPacketsAvailableTableIndex,
    NET_TX_QUEUE_INIT_GET_QUEUE_ID => NetTxQueueInitGetQueueIdTableIndex,
    NET_TX_QUEUE_GET_RING_COLLECTION => NetTxQueueGetRingCollectionTableIndex,
    NET_TX_QUEUE_GET_EXTENSION => NetTxQueueGetExtensionTableIndex,
}

const _: () = assert!(ncx::NET_FUNCTION_TABLE_ENTRIES_V2_2 == sys::_NETFUNCENUM::NetFunctionTableNumEntries as usize);
