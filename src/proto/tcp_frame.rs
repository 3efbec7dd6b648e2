//! OpenVPN over TCP: every packet is preceded by its length, two bytes big
//! endian, and the stream carries nothing else.
//!
//! The receive side is a decoder fed whatever chunks the transport delivers
//! (a packet torn across many WSK indications, or many packets in one). It
//! hands out each complete packet as a slice: straight out of the caller's
//! chunk when the packet lies wholly inside it, out of its own fixed buffer
//! when the packet had to be put together from pieces. A length the peer may
//! not send ends the stream: once the framing is lost there is no way to find
//! the next packet boundary, so the decoder refuses every later byte until it
//! is reset for a new connection.

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 2;

/// Largest packet a TCP frame may carry. ovpn-dco-win socket.cpp
/// (`OvpnSocketTcpReceiveEvent`) rejects a length of 0 or above
/// `OVPN_SOCKET_RX_PACKET_BUFFER_SIZE`, which bufferpool.h sets to 2048.
pub const MAX_PACKET_LEN: usize = 2048;

/// Size of the decoder's reassembly buffer: one packet of the largest length.
pub const REASSEMBLY_CAPACITY: usize = MAX_PACKET_LEN;

/// Why a frame cannot be built or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFrameError {
    /// A length of zero, which frames nothing.
    ZeroLength,
    /// A length above [`MAX_PACKET_LEN`]; carries the length.
    TooLong(usize),
    /// An earlier framing error lost the packet boundaries of this stream.
    Poisoned,
}

/// The length prefix for a packet of `len` bytes.
///
/// The encoder refuses what ovpn-dco-win's receiver (and so this module's
/// decoder) would refuse, so the driver never sends a frame that tears down
/// the peer's stream.
pub fn length_prefix(len: usize) -> Result<[u8; LENGTH_PREFIX_LEN], TcpFrameError> {
    let wire_len = checked_length(len)?;
    Ok(wire_len.to_be_bytes())
}

/// `len` as the 16-bit wire value, if a frame may carry it.
fn checked_length(len: usize) -> Result<u16, TcpFrameError> {
    if len == 0 {
        return Err(TcpFrameError::ZeroLength);
    }
    if len > MAX_PACKET_LEN {
        return Err(TcpFrameError::TooLong(len));
    }
    u16::try_from(len).map_err(|_| TcpFrameError::TooLong(len))
}

/// One complete packet out of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'d, 'i> {
    /// The packet lay wholly inside the chunk just passed in: these bytes are
    /// the caller's, nothing was copied.
    InInput(&'i [u8]),
    /// The packet spanned chunks and was put together in the decoder's buffer.
    Reassembled(&'d [u8]),
}

impl Frame<'_, '_> {
    /// The packet, without its length prefix.
    pub fn bytes(&self) -> &[u8] {
        match *self {
            Frame::InInput(packet) | Frame::Reassembled(packet) => packet,
        }
    }
}

/// Where the decoder is within the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between packets; `high` holds the first length byte once it arrived
    /// alone.
    Length { high: Option<u8> },
    /// Inside a packet of `len` bytes (1..=MAX_PACKET_LEN), the first `have`
    /// (< len) of which are in the buffer.
    Body { len: usize, have: usize },
    /// A bad length was read; nothing more can be framed.
    Poisoned,
}

/// The receive side of one TCP connection.
pub struct TcpFrameDecoder {
    state: State,
    buf: [u8; REASSEMBLY_CAPACITY],
}

impl Default for TcpFrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpFrameDecoder {
    pub const fn new() -> Self {
        Self { state: State::Length { high: None }, buf: [0; REASSEMBLY_CAPACITY] }
    }

    /// Forgets any partial packet and any framing error: for a new connection.
    pub fn reset(&mut self) {
        self.state = State::Length { high: None };
    }

    /// Whether a framing error ended this stream.
    pub fn is_poisoned(&self) -> bool {
        self.state == State::Poisoned
    }

    /// Whether the stream so far ended exactly at a packet boundary (nothing
    /// partial is held).
    pub fn is_between_packets(&self) -> bool {
        self.state == State::Length { high: None }
    }

    /// Reads from the front of `input` until one packet is complete, and
    /// returns it; `input` is left at the first byte after it. `Ok(None)`
    /// means `input` is used up (it is then empty) and the packet under way,
    /// if any, is held for the next chunk. Call again while it returns a
    /// packet: a chunk may hold many.
    ///
    /// On a bad length the two length bytes are consumed, the error is
    /// returned and every later call fails with [`TcpFrameError::Poisoned`]
    /// until [`reset`](Self::reset).
    pub fn decode<'d, 'i>(&'d mut self, input: &mut &'i [u8]) -> Result<Option<Frame<'d, 'i>>, TcpFrameError> {
        let (len, have) = match self.state {
            State::Poisoned => return Err(TcpFrameError::Poisoned),
            State::Body { len, have } => (len, have),
            State::Length { high } => {
                let chunk: &'i [u8] = input;
                let wire_len = match (high, chunk) {
                    (_, []) => return Ok(None),
                    (None, [only]) => {
                        self.state = State::Length { high: Some(*only) };
                        *input = &[];
                        return Ok(None);
                    }
                    (None, [hi, lo, rest @ ..]) => {
                        *input = rest;
                        u16::from_be_bytes([*hi, *lo])
                    }
                    (Some(hi), [lo, rest @ ..]) => {
                        *input = rest;
                        u16::from_be_bytes([hi, *lo])
                    }
                };
                match checked_length(usize::from(wire_len)) {
                    Ok(len) => (usize::from(len), 0),
                    Err(e) => {
                        self.state = State::Poisoned;
                        return Err(e);
                    }
                }
            }
        };

        let chunk: &'i [u8] = input;
        if let (0, Some((packet, rest))) = (have, chunk.split_at_checked(len)) {
            *input = rest;
            self.state = State::Length { high: None };
            return Ok(Some(Frame::InInput(packet)));
        }

        // `have < len <= REASSEMBLY_CAPACITY` by construction of `State::Body`.
        let Some(unfilled) = self.buf.get_mut(have..len) else {
            self.state = State::Poisoned;
            return Err(TcpFrameError::Poisoned);
        };
        let take = unfilled.len().min(chunk.len());
        let (piece, rest) = chunk.split_at(take);
        unfilled[..take].copy_from_slice(piece);
        *input = rest;

        let have = have + take;
        if have < len {
            self.state = State::Body { len, have };
            return Ok(None);
        }
        self.state = State::Length { high: None };
        Ok(self.buf.get(..len).map(Frame::Reassembled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A packet of `len` bytes whose content tells packets apart.
    fn packet(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn framed(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for p in packets {
            stream.extend_from_slice(&length_prefix(p.len()).unwrap());
            stream.extend_from_slice(p);
        }
        stream
    }

    /// Feeds `chunks` in order; returns the packets and, for each, whether it
    /// was borrowed from the input.
    fn decode_all<'a>(
        decoder: &mut TcpFrameDecoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<(Vec<u8>, bool)>, TcpFrameError> {
        let mut out = Vec::new();
        for mut chunk in chunks {
            while let Some(frame) = decoder.decode(&mut chunk)? {
                out.push((frame.bytes().to_vec(), matches!(frame, Frame::InInput(_))));
            }
            assert!(chunk.is_empty(), "Ok(None) leaves nothing unread");
        }
        Ok(out)
    }

    #[test]
    fn length_prefix_is_big_endian_within_bounds() {
        assert_eq!(length_prefix(1), Ok([0x00, 0x01]));
        assert_eq!(length_prefix(0x123), Ok([0x01, 0x23]));
        assert_eq!(length_prefix(MAX_PACKET_LEN), Ok([0x08, 0x00]));
        assert_eq!(length_prefix(0), Err(TcpFrameError::ZeroLength));
        assert_eq!(length_prefix(MAX_PACKET_LEN + 1), Err(TcpFrameError::TooLong(2049)));
        assert_eq!(length_prefix(70_000), Err(TcpFrameError::TooLong(70_000)));
    }

    #[test]
    fn a_packet_inside_one_chunk_is_borrowed_not_copied() {
        let stream = framed(&[packet(5, 1)]);
        let mut decoder = TcpFrameDecoder::new();
        let mut input = &stream[..];
        let frame = decoder.decode(&mut input).unwrap().unwrap();
        let Frame::InInput(bytes) = frame else { panic!("copied: {frame:?}") };
        assert_eq!(bytes, &packet(5, 1)[..]);
        // The very bytes of the input, not a copy.
        assert_eq!(bytes.as_ptr(), stream[2..].as_ptr());
        assert!(input.is_empty());
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert!(decoder.is_between_packets());
    }

    #[test]
    fn coalesced_packets_come_out_one_per_call() {
        let packets = [packet(1, 1), packet(60, 2), packet(MAX_PACKET_LEN, 3), packet(2, 4)];
        let stream = framed(&packets);
        let mut decoder = TcpFrameDecoder::new();
        let mut input = &stream[..];
        let mut consumed = 0;
        for p in &packets {
            let frame = decoder.decode(&mut input).unwrap().unwrap();
            assert_eq!(frame, Frame::InInput(&p[..]));
            consumed += LENGTH_PREFIX_LEN + p.len();
            assert_eq!(input.len(), stream.len() - consumed, "input advances past each packet only");
        }
        assert_eq!(decoder.decode(&mut input), Ok(None));
    }

    #[test]
    fn every_split_point_yields_the_same_packets() {
        let packets = [packet(1, 9), packet(3, 8), packet(300, 7), packet(2, 6)];
        let stream = framed(&packets);
        for split in 0..=stream.len() {
            let mut decoder = TcpFrameDecoder::new();
            let got = decode_all(&mut decoder, [&stream[..split], &stream[split..]]).unwrap();
            let got: Vec<Vec<u8>> = got.into_iter().map(|(p, _)| p).collect();
            assert_eq!(got, packets, "split at {split}");
            assert!(decoder.is_between_packets());
        }
    }

    #[test]
    fn a_packet_split_across_chunks_is_reassembled() {
        let p = packet(40, 5);
        let stream = framed(core::slice::from_ref(&p));
        let mut decoder = TcpFrameDecoder::new();
        let got = decode_all(&mut decoder, [&stream[..10], &stream[10..]]).unwrap();
        assert_eq!(got, [(p, false)]);
    }

    #[test]
    fn one_byte_at_a_time_works_including_the_length() {
        let packets = [packet(2, 1), packet(MAX_PACKET_LEN, 2), packet(1, 3)];
        let stream = framed(&packets);
        let mut decoder = TcpFrameDecoder::new();
        let got = decode_all(&mut decoder, stream.chunks(1)).unwrap();
        // A 1-byte packet fits the 1-byte chunk that carries it, so it is borrowed.
        let expected = [(packets[0].clone(), false), (packets[1].clone(), false), (packets[2].clone(), true)];
        assert_eq!(got, expected);
    }

    #[test]
    fn the_packet_after_a_split_length_can_still_be_borrowed() {
        let p = packet(7, 2);
        let stream = framed(core::slice::from_ref(&p));
        let mut decoder = TcpFrameDecoder::new();
        let got = decode_all(&mut decoder, [&stream[..1], &stream[1..]]).unwrap();
        assert_eq!(got, [(p, true)]);
    }

    #[test]
    fn empty_input_changes_nothing() {
        let mut decoder = TcpFrameDecoder::new();
        let mut input: &[u8] = &[];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert!(decoder.is_between_packets());
        let mut input: &[u8] = &[0x00];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert!(!decoder.is_between_packets());
        let mut input: &[u8] = &[];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        let mut input: &[u8] = &[0x01, 0xab, 0xff];
        assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::InInput(&[0xab]))));
        assert_eq!(input, &[0xff]);
    }

    #[test]
    fn a_zero_length_poisons_the_stream() {
        let mut decoder = TcpFrameDecoder::new();
        let mut input: &[u8] = &[0x00, 0x00, 0x00, 0x01, 0xaa];
        assert_eq!(decoder.decode(&mut input), Err(TcpFrameError::ZeroLength));
        assert_eq!(input, &[0x00, 0x01, 0xaa], "only the length bytes are consumed");
        assert!(decoder.is_poisoned());
        // A well-formed frame after it is refused: the boundary is lost.
        assert_eq!(decoder.decode(&mut input), Err(TcpFrameError::Poisoned));
        assert_eq!(input.len(), 3);
        let mut empty: &[u8] = &[];
        assert_eq!(decoder.decode(&mut empty), Err(TcpFrameError::Poisoned));
        decoder.reset();
        assert!(!decoder.is_poisoned());
        assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::InInput(&[0xaa]))));
    }

    #[test]
    fn an_oversize_length_poisons_the_stream_even_when_split() {
        for wire in [[0x08, 0x01], [0xff, 0xff], [0x10, 0x00]] {
            let expected = TcpFrameError::TooLong(usize::from(u16::from_be_bytes(wire)));
            let mut decoder = TcpFrameDecoder::new();
            let mut first: &[u8] = &wire[..1];
            assert_eq!(decoder.decode(&mut first), Ok(None));
            let mut second: &[u8] = &wire[1..];
            assert_eq!(decoder.decode(&mut second), Err(expected));
            let mut more: &[u8] = &[0x00, 0x01, 0x00];
            assert_eq!(decoder.decode(&mut more), Err(TcpFrameError::Poisoned));
        }
        // The largest allowed length is fine.
        let mut decoder = TcpFrameDecoder::new();
        let mut input: &[u8] = &[0x08, 0x00];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert!(!decoder.is_poisoned());
    }

    #[test]
    fn reset_drops_a_partial_packet() {
        let mut decoder = TcpFrameDecoder::new();
        let mut input: &[u8] = &[0x00, 0x05, 1, 2];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        decoder.reset();
        assert!(decoder.is_between_packets());
        let mut input: &[u8] = &[0x00, 0x01, 9];
        assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::InInput(&[9]))));
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_reproduces_the_packets(
            lens in proptest::collection::vec(
                proptest::prop_oneof![1usize..=64, 65usize..=MAX_PACKET_LEN, proptest::strategy::Just(MAX_PACKET_LEN)],
                0..12,
            ),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..40),
        ) {
            let packets: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &len)| packet(len, i as u8)).collect();
            let stream = framed(&packets);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);
            let mut decoder = TcpFrameDecoder::new();
            let got: Vec<Vec<u8>> = decode_all(&mut decoder, chunks).unwrap().into_iter().map(|(p, _)| p).collect();
            proptest::prop_assert_eq!(got, packets);
            proptest::prop_assert!(decoder.is_between_packets());
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut decoder = TcpFrameDecoder::new();
            for mut chunk in chunks.iter().map(Vec::as_slice) {
                loop {
                    match decoder.decode(&mut chunk) {
                        Ok(Some(frame)) => proptest::prop_assert!(!frame.bytes().is_empty() && frame.bytes().len() <= MAX_PACKET_LEN),
                        Ok(None) => break,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}
