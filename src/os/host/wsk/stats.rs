//! What one modelled socket did: enough to see that retention works, that
//! back-pressure happened (or not), and what a benchmark's numbers mean.

use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $field:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fm])* pub $field: AtomicU64,)* }

        /// A copy of the counters at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $snap { $($(#[$fm])* pub $field: u64,)* }

        impl $name {
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Per-socket counters (relaxed atomics: read them when the socket is quiet).
    SocketCounters / SocketStats {
        /// Datagrams handed to the driver in indication lists.
        datagrams_indicated,
        /// Of those, datagrams split over two MDLs.
        datagrams_split,
        /// Receive events delivered (lists indicated).
        lists_indicated,
        /// Lists the receive event returned STATUS_SUCCESS for.
        lists_reclaimed,
        /// Lists retained (STATUS_PENDING) and later released.
        lists_released,
        /// Lists retained now.
        lists_retained,
        /// Most lists retained at once.
        lists_retained_max,
        /// Bytes the wire wrote into receive buffers (the one copy a NIC does).
        rx_wire_bytes,
        /// Bytes the model copied on receive beyond the wire read: stays 0,
        /// the driver gets the wire buffers themselves.
        rx_model_copied_bytes,
        /// Datagrams dropped: no free receive buffer (the stack's own drop
        /// under memory pressure).
        rx_dropped_no_buffer,
        /// Datagrams dropped: not from the socket's fixed remote address.
        rx_filtered,
        /// Datagrams dropped: larger than a receive buffer.
        rx_truncated,
        /// Sends accepted.
        sends,
        /// Send completions delivered.
        send_completions,
        /// Sends that completed with fewer bytes than asked (TCP).
        partial_sends,
        /// Sends that completed with an error status.
        send_errors,
        /// Bytes put on the wire.
        tx_wire_bytes,
        /// Stream bytes delivered with stream_received.
        stream_bytes_received,
        /// stream_received calls.
        stream_chunks,
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
