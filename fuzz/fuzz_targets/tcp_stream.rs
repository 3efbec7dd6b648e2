//! Any TCP byte stream, cut into any chunks, through the 2-byte-length frame
//! decoder, compared with a decoder written the obvious way over the whole
//! stream at once.
//!
//! Input layout: byte 0 is `n`, the number of chunk-size bytes that follow
//! (at most [`MAX_CHUNK_SIZES`]); each size byte `b` means `b` bytes when
//! below 128, else `(b - 128) * 64` (so chunks up to ~8 KiB, several frames
//! or a fraction of one); the sizes repeat until the stream is used up. The
//! rest of the input is the stream. No sizes, or only zeros: one chunk.
//!
//! Properties: nothing panics; the same packets come out in the same order
//! and the stream fails at the same point with the same error; a packet
//! handed out "in input" lies inside the chunk just passed; after a failure
//! every call fails as poisoned; `is_between_packets` and `is_poisoned`
//! agree with the reference; after `reset` the decoder frames a fresh stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovpn_dco::proto::tcp_frame::{self, Frame, TcpFrameDecoder, TcpFrameError};

/// Chunk-size bytes read at most.
const MAX_CHUNK_SIZES: usize = 32;
/// Decoder calls per chunk at most: each packet takes at least 3 bytes, so a
/// chunk of `n` bytes can never need more than `n / 3 + 2` calls.
fn call_budget(chunk_len: usize) -> usize {
    chunk_len / 3 + 2
}

/// What the stream holds: its packets and how it ends.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    packets: Vec<Vec<u8>>,
    error: Option<TcpFrameError>,
    /// Bytes of an incomplete packet (or length prefix) at the end.
    partial: bool,
}

fn reference(stream: &[u8]) -> Decoded {
    let mut packets = Vec::new();
    let mut at = 0;
    loop {
        if stream.len() - at < 2 {
            return Decoded { packets, error: None, partial: at != stream.len() };
        }
        let len = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
        if len == 0 {
            return Decoded { packets, error: Some(TcpFrameError::ZeroLength), partial: false };
        }
        if len > tcp_frame::MAX_PACKET_LEN {
            return Decoded { packets, error: Some(TcpFrameError::TooLong(len)), partial: false };
        }
        if stream.len() - at - 2 < len {
            return Decoded { packets, error: None, partial: true };
        }
        packets.push(stream[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
}

fn chunk_size(b: u8) -> usize {
    if b < 128 { usize::from(b) } else { usize::from(b - 128) * 64 }
}

fn incremental(decoder: &mut TcpFrameDecoder, stream: &[u8], sizes: &[usize]) -> Decoded {
    let mut packets = Vec::new();
    let mut error = None;
    let mut rest = stream;
    let mut next_size = sizes.iter().copied().filter(|&s| s > 0).cycle();
    while !rest.is_empty() {
        let take = next_size.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, after) = rest.split_at(take);
        rest = after;
        let mut input = chunk;
        for _ in 0..call_budget(chunk.len()) {
            let before = input.len();
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    if let Frame::InInput(p) = frame {
                        let (start, end) = (chunk.as_ptr() as usize, chunk.as_ptr() as usize + chunk.len());
                        let p_start = p.as_ptr() as usize;
                        assert!(p_start >= start && p_start + p.len() <= end, "InInput packet outside the chunk");
                    }
                    let len = frame.bytes().len();
                    assert!((1..=tcp_frame::MAX_PACKET_LEN).contains(&len));
                    assert!(input.len() < before, "a packet came out without consuming input");
                    packets.push(frame.bytes().to_vec());
                }
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) left input unread");
                    break;
                }
                Err(e) => {
                    assert!(decoder.is_poisoned());
                    // Every later call fails the same way, on this chunk or the next.
                    assert_eq!(decoder.decode(&mut input), Err(TcpFrameError::Poisoned));
                    assert_eq!(decoder.decode(&mut &[0u8, 1, 0xff][..]), Err(TcpFrameError::Poisoned));
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
        assert!(input.is_empty(), "the decoder needed more calls than a chunk can hold packets");
    }
    let partial = error.is_none() && !decoder.is_between_packets();
    Decoded { packets, error, partial }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n).min(MAX_CHUNK_SIZES).min(rest.len());
    let (size_bytes, stream) = rest.split_at(n);
    let sizes: Vec<usize> = size_bytes.iter().copied().map(chunk_size).collect();

    let mut decoder = TcpFrameDecoder::new();
    let got = incremental(&mut decoder, stream, &sizes);
    let want = reference(stream);
    assert_eq!(got, want);
    assert_eq!(decoder.is_poisoned(), want.error.is_some());

    // A new connection starts clean whatever the old one left behind.
    decoder.reset();
    let mut fresh: &[u8] = &[0, 3, 7, 8, 9];
    assert_eq!(decoder.decode(&mut fresh), Ok(Some(Frame::InInput(&[7, 8, 9][..]))));
    assert!(decoder.is_between_packets());
});
