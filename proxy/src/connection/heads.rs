//! Where an HTTP/2 client is in its frames, to bound every request head by `header_read`
//! (DOS-01), not only the first: a HEADERS frame dripped a byte at a time keeps bytes moving,
//! so `idle` never fires, and h2 holds the connection until the header block is complete.
//!
//! This reads only the frames' 9-byte headers (RFC 9113 §4.1) off the decrypted bytes the
//! server reads, and skips their payloads: it notes when a header block (HEADERS, then
//! CONTINUATION frames until END_HEADERS) is still incomplete at the end of a read. A head
//! that arrives within one read, as nearly every head does, costs a few comparisons and no
//! clock. Anything that is not HTTP/2 (the preface does not match) switches it off: hyper
//! bounds HTTP/1.1 heads itself. Frames h2 would refuse as malformed are not this module's
//! business; h2 closes the connection on them.

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the reader is in the client's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FrameHeads {
    at: At,
    /// A header block has started and its END_HEADERS frame has not been read in full.
    in_block: bool,
    /// How many header blocks have started (wrapping): tells one open block from the next.
    blocks: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum At {
    /// This many bytes of the preface matched so far.
    Preface(u8),
    /// This many bytes of a frame header read, into `header`.
    Header { header: [u8; 9], have: u8 },
    /// Inside a frame's payload, with this many bytes left; `ends_block` when the frame ends
    /// the header block in progress.
    Payload { left: u32, ends_block: bool },
    /// Not HTTP/2: nothing to follow.
    Off,
}

impl Default for FrameHeads {
    fn default() -> Self {
        Self {
            at: At::Preface(0),
            in_block: false,
            blocks: 0,
        }
    }
}

impl FrameHeads {
    /// Reads `bytes`, the next ones the client sent; true when a header block is left
    /// incomplete at their end.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            bytes = match &mut self.at {
                At::Off => return false,
                At::Preface(matched) => {
                    let done = usize::from(*matched);
                    let want = PREFACE.get(done..).unwrap_or_default();
                    let n = want.len().min(bytes.len());
                    let (head, rest) = bytes.split_at(n);
                    if want.get(..n) != Some(head) {
                        self.at = At::Off;
                        return false;
                    }
                    if n == want.len() {
                        self.at = At::Header {
                            header: [0; 9],
                            have: 0,
                        };
                    } else {
                        // n < want.len() <= 24, so this fits.
                        *matched = matched.saturating_add(u8::try_from(n).unwrap_or(u8::MAX));
                    }
                    rest
                }
                At::Header { header, have } => {
                    let start = usize::from(*have);
                    let n = (header.len() - start).min(bytes.len());
                    let (head, rest) = bytes.split_at(n);
                    if let Some(slot) = header.get_mut(start..start + n) {
                        slot.copy_from_slice(head);
                    }
                    *have = have.saturating_add(u8::try_from(n).unwrap_or(u8::MAX));
                    if usize::from(*have) == header.len() {
                        let header = *header;
                        self.frame(&header);
                    }
                    rest
                }
                At::Payload { left, .. } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    // n <= left, which is a u32.
                    *left -= u32::try_from(n).unwrap_or(*left);
                    if *left == 0 {
                        self.payload_done();
                    }
                    bytes.get(n..).unwrap_or_default()
                }
            };
        }
        self.in_block
    }

    /// Which header block is the latest to have started: a block left open by two reads is
    /// the same block only if this did not change between them.
    pub(super) fn block(&self) -> u32 {
        self.blocks
    }

    /// A whole frame header has been read.
    fn frame(&mut self, header: &[u8; 9]) {
        let [l0, l1, l2, kind, flags, ..] = *header;
        let left = u32::from_be_bytes([0, l0, l1, l2]);
        let ends = flags & END_HEADERS != 0;
        let ends_block = match kind {
            HEADERS => {
                self.in_block = true;
                self.blocks = self.blocks.wrapping_add(1);
                ends
            }
            CONTINUATION => self.in_block && ends,
            _ => false,
        };
        self.at = At::Payload { left, ends_block };
        if left == 0 {
            self.payload_done();
        }
    }

    fn payload_done(&mut self) {
        if let At::Payload {
            ends_block: true, ..
        } = self.at
        {
            self.in_block = false;
        }
        self.at = At::Header {
            header: [0; 9],
            have: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        bytes.extend_from_slice(payload);
        bytes
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[])); // SETTINGS
        for f in frames {
            bytes.extend_from_slice(f);
        }
        bytes
    }

    #[test]
    fn a_head_that_arrives_in_one_read_leaves_no_block_open_dos_01() {
        let mut heads = FrameHeads::default();
        let bytes = connection(&[frame(HEADERS, END_HEADERS | 0x1, &[0x82; 30])]);
        assert!(!heads.feed(&bytes));
    }

    #[test]
    fn a_head_dripped_a_byte_at_a_time_is_open_until_its_last_byte_dos_01() {
        let mut heads = FrameHeads::default();
        assert!(!heads.feed(&connection(&[])));
        let headers = frame(HEADERS, END_HEADERS, &[0x82; 20]);
        let (last, rest) = headers.split_last().unwrap();
        for (i, byte) in rest.iter().enumerate() {
            // Open from the end of the frame header on.
            assert_eq!(heads.feed(&[*byte]), i >= 8, "after byte {i}");
        }
        assert!(!heads.feed(&[*last]));
    }

    #[test]
    fn a_block_stays_open_across_continuation_frames_until_end_headers_dos_01() {
        let mut heads = FrameHeads::default();
        assert!(heads.feed(&connection(&[frame(HEADERS, 0, &[0x82; 8])])));
        assert!(heads.feed(&frame(CONTINUATION, 0, &[0x84; 8])));
        assert!(!heads.feed(&frame(CONTINUATION, END_HEADERS, &[0x86; 8])));
    }

    #[test]
    fn a_read_that_ends_one_block_and_leaves_the_next_open_names_a_new_block_dos_01() {
        let mut heads = FrameHeads::default();
        let first = frame(HEADERS, END_HEADERS, &[0x82; 20]);
        let second = frame(HEADERS, END_HEADERS, &[0x82; 20]);
        assert!(heads.feed(&connection(&[first[..12].to_vec()])));
        let open = heads.block();
        let mut read = first[12..].to_vec();
        read.extend_from_slice(&second[..12]);
        assert!(heads.feed(&read));
        assert_ne!(heads.block(), open, "still open, but another block");
    }

    #[test]
    fn data_frames_split_anywhere_never_open_a_block() {
        let mut heads = FrameHeads::default();
        assert!(!heads.feed(&connection(&[frame(HEADERS, END_HEADERS, &[0x83; 10])])));
        let mut data = frame(0x0, 0, &[END_HEADERS; 300]);
        data.extend(frame(0x0, 0x1, &[HEADERS; 5]));
        for chunk in data.chunks(7) {
            assert!(!heads.feed(chunk));
        }
    }

    #[test]
    fn bytes_that_are_not_the_http2_preface_switch_the_reader_off() {
        let mut heads = FrameHeads::default();
        assert!(!heads.feed(b"GET / HTTP/1.1\r\n"));
        assert_eq!(heads.at, At::Off);
        assert!(!heads.feed(&frame(HEADERS, 0, &[1, 2, 3])));
    }

    proptest! {
        #[test]
        fn the_frame_reader_never_panics(chunks in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut heads = FrameHeads::default();
            let mut preface = FrameHeads::default();
            preface.feed(PREFACE);
            for chunk in &chunks {
                heads.feed(chunk);
                preface.feed(chunk);
            }
        }

        #[test]
        fn how_the_bytes_are_split_does_not_change_the_answer(
            cut in 0usize..200, payload in prop::collection::vec(any::<u8>(), 0..40)) {
            let bytes = connection(&[
                frame(HEADERS, 0, &payload),
                frame(CONTINUATION, END_HEADERS, &payload),
                frame(HEADERS, 0, &payload),
            ]);
            let cut = cut.min(bytes.len());
            let mut whole = FrameHeads::default();
            let mut split = FrameHeads::default();
            let (a, b) = bytes.split_at(cut);
            split.feed(a);
            prop_assert_eq!(whole.feed(&bytes), split.feed(b));
            prop_assert_eq!(whole, split);
        }
    }
}
