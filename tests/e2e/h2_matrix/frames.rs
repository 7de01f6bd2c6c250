//! A raw HTTP/2 client for the matrix: frames and HPACK fields written by hand (RFC 9113 §4,
//! RFC 7541 §6), so a test can send what no conforming client would, and a frame reader that
//! reports what the server did with stream 1.
//!
//! HPACK fields are static-table indexed or literals without indexing, never Huffman-coded;
//! the reader decodes only the first field of a response block, `:status` (indexed, or a
//! literal with indexed name 8 and a plain or Huffman-coded value of digits).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The RST_STREAM error code of a client that gives up on a stream (RFC 9113 §7).
pub(crate) const CANCEL: u32 = 0x8;

/// HPACK static-table entries (RFC 7541 Appendix A).
pub(crate) const GET: u8 = 2;
pub(crate) const POST: u8 = 3;
pub(crate) const HTTP: u8 = 6;
pub(crate) const HTTPS: u8 = 7;
const AUTHORITY: u8 = 1;
const PATH: u8 = 4;

/// The largest frame payload a peer must accept (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16_384;
/// The upper bound of every wait: generous, never a performance claim.
const WAIT: Duration = Duration::from_secs(10);

/// One frame: the 9-byte header (RFC 9113 §4.1), then `payload`.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24, "frame too long");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend((stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block, as HEADERS then CONTINUATION frames of at most 16 KiB, the last with
/// END_HEADERS.
pub(crate) fn headers(stream: u32, block: &Block, end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.0.chunks(MAX_FRAME).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        if i == 0 && end_stream {
            flags |= END_STREAM;
        }
        out.extend(frame(kind, flags, stream, chunk));
    }
    out
}

/// A DATA frame.
pub(crate) fn data(stream: u32, body: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, body)
}

/// RST_STREAM with `code`.
pub(crate) fn reset(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK header block, field by field.
#[derive(Clone, Debug, Default)]
pub(crate) struct Block(pub(crate) Vec<u8>);

impl Block {
    /// `:method`, `:scheme`, `:path`, `:authority`: a request's pseudo-headers, in that order.
    pub(crate) fn request(method: u8, scheme: u8, path: &str, authority: &str) -> Self {
        Self::default()
            .indexed(method)
            .indexed(scheme)
            .path(path)
            .authority(authority)
    }

    /// `:authority` as a literal with an indexed name.
    pub(crate) fn authority(self, authority: &str) -> Self {
        self.name_indexed(AUTHORITY, authority.as_bytes())
    }

    /// An indexed field (RFC 7541 §6.1): a whole static-table entry.
    pub(crate) fn indexed(mut self, index: u8) -> Self {
        int(&mut self.0, 7, 0x80, index.into());
        self
    }

    /// `:path` as a literal with an indexed name.
    pub(crate) fn path(self, path: &str) -> Self {
        self.name_indexed(PATH, path.as_bytes())
    }

    /// A literal without indexing with an indexed name (RFC 7541 §6.2.2).
    pub(crate) fn name_indexed(mut self, index: u8, value: &[u8]) -> Self {
        int(&mut self.0, 4, 0x00, index.into());
        string(&mut self.0, value);
        self
    }

    /// A literal without indexing with a new name (`0x00`, name, value), taken as given: any
    /// case, any bytes.
    pub(crate) fn literal(mut self, name: &[u8], value: &[u8]) -> Self {
        self.0.push(0x00);
        string(&mut self.0, name);
        string(&mut self.0, value);
        self
    }
}

/// An HPACK integer with an `n`-bit prefix after the bits of `flags` (RFC 7541 §5.1).
fn int(out: &mut Vec<u8>, n: u32, flags: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).unwrap());
        return;
    }
    out.push(flags | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// A string literal, not Huffman-coded (RFC 7541 §5.2).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    int(out, 7, 0x00, bytes.len());
    out.extend_from_slice(bytes);
}

/// What the server did, as far as the reader looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response HEADERS on the stream, with its `:status` (0 when not decodable here).
    Status(u16),
    /// RST_STREAM on the stream, with its error code.
    Reset(u32),
    /// GOAWAY, with its error code.
    GoAway(u32),
    /// The connection closed (EOF or an error) first.
    Closed,
}

impl Outcome {
    /// The request went no further: a reset, a GOAWAY, a close, or a 4xx.
    pub(crate) fn is_refusal(self) -> bool {
        match self {
            Self::Status(status) => (400..500).contains(&status),
            Self::Reset(_) | Self::GoAway(_) | Self::Closed => true,
        }
    }
}

/// Anything a connection can run over: TLS to the inbound side, TCP to the outbound side.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw HTTP/2 client connection, past the preface and the SETTINGS exchange.
pub(crate) struct Conn {
    rd: ReadHalf<Box<dyn Io>>,
    wr: WriteHalf<Box<dyn Io>>,
    buf: Vec<u8>,
}

impl Conn {
    /// Sends the preface and an empty SETTINGS, waits for the server's SETTINGS and acks it.
    pub(crate) async fn open(io: Box<dyn Io>) -> Self {
        let (rd, wr) = tokio::io::split(io);
        let mut conn = Self {
            rd,
            wr,
            buf: Vec::new(),
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.send(&hello).await.unwrap();
        let settings = async {
            loop {
                match conn.next_frame().await {
                    Some((SETTINGS, flags, _, _)) if flags & ACK == 0 => return,
                    Some(_) => {}
                    None => panic!("the server closed before its SETTINGS"),
                }
            }
        };
        tokio::time::timeout(WAIT, settings)
            .await
            .expect("the server's SETTINGS within 10 s");
        conn.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        conn
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes).await?;
        self.wr.flush().await
    }

    /// Reads until the server answers or resets `stream`, sends GOAWAY, or closes.
    pub(crate) async fn outcome(&mut self, stream: u32) -> Outcome {
        tokio::time::timeout(WAIT, self.until(Some(stream)))
            .await
            .expect("an outcome within 10 s")
    }

    /// Writes `frames` while reading: what happened, GOAWAY or a close, before or after the
    /// last frame went out (a server that hangs up makes the writes fail, which ends them).
    pub(crate) async fn flood(&mut self, frames: impl Iterator<Item = Vec<u8>>) -> Outcome {
        let Self { rd, wr, buf } = self;
        let writing = async {
            for f in frames {
                if wr.write_all(&f).await.is_err() {
                    break;
                }
            }
            let _ = wr.flush().await;
            std::future::pending::<()>().await;
        };
        let reading = async {
            let mut reader = Reader { rd, buf };
            reader.until(None).await
        };
        let both = async {
            tokio::select! {
                () = writing => unreachable!(),
                outcome = reading => outcome,
            }
        };
        tokio::time::timeout(WAIT, both)
            .await
            .expect("GOAWAY or a close within 10 s")
    }

    /// After a GOAWAY: true once the server has closed the connection, within the bound.
    pub(crate) async fn closed(&mut self) -> bool {
        let drain = async { while self.next_frame().await.is_some() {} };
        tokio::time::timeout(WAIT, drain).await.is_ok()
    }

    async fn until(&mut self, stream: Option<u32>) -> Outcome {
        Reader {
            rd: &mut self.rd,
            buf: &mut self.buf,
        }
        .until(stream)
        .await
    }

    async fn next_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        Reader {
            rd: &mut self.rd,
            buf: &mut self.buf,
        }
        .next_frame()
        .await
    }
}

/// The read half and its buffer, borrowed, so a flood can write while it reads.
struct Reader<'a> {
    rd: &'a mut ReadHalf<Box<dyn Io>>,
    buf: &'a mut Vec<u8>,
}

impl Reader<'_> {
    /// `stream`'s response head or reset (when given), or the connection's GOAWAY or close.
    async fn until(&mut self, stream: Option<u32>) -> Outcome {
        loop {
            let Some((kind, flags, id, payload)) = self.next_frame().await else {
                return Outcome::Closed;
            };
            match kind {
                GOAWAY => {
                    let code = payload
                        .get(4..8)
                        .map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap_or_default()));
                    return Outcome::GoAway(code);
                }
                RST_STREAM if Some(id) == stream => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap_or_default()));
                    return Outcome::Reset(code);
                }
                HEADERS if Some(id) == stream => {
                    return Outcome::Status(status(&payload, flags).unwrap_or(0));
                }
                _ => {}
            }
        }
    }

    /// The next whole frame: (type, flags, stream, payload); `None` at EOF or an error.
    async fn next_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::try_from(u32::from_be_bytes([
                    0,
                    self.buf[0],
                    self.buf[1],
                    self.buf[2],
                ]))
                .unwrap();
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload: Vec<u8> = self.buf.drain(..len).collect();
                    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some((head[3], head[4], id, payload));
                }
            }
            let mut chunk = [0u8; 16_384];
            match self.rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// The `:status` of a response HEADERS payload, from its first field only.
fn status(payload: &[u8], flags: u8) -> Option<u16> {
    let mut block = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*block.first()?);
        block = block.get(1..)?;
    }
    if flags & PRIORITY != 0 {
        block = block.get(5..)?;
    }
    let block = block.get(..block.len().checked_sub(pad)?)?;
    match *block.first()? {
        0x88 => Some(200),
        0x89 => Some(204),
        0x8a => Some(206),
        0x8b => Some(304),
        0x8c => Some(400),
        0x8d => Some(404),
        0x8e => Some(500),
        // A literal (incremental indexing, without indexing, never indexed) named `:status`.
        0x48 | 0x08 | 0x18 => {
            let len_byte = *block.get(1)?;
            let value = block.get(2..2 + usize::from(len_byte & 0x7f))?;
            let text = if len_byte & 0x80 != 0 {
                huffman_digits(value)?
            } else {
                String::from_utf8(value.to_vec()).ok()?
            };
            text.parse().ok()
        }
        _ => None,
    }
}

/// Decodes a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: `0`-`2` are the 5-bit
/// codes 0-2, `3`-`9` the 6-bit codes 0x19-0x1f); `None` for anything else.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let take = |at: usize, n: usize| -> Option<u8> {
        bits.get(at..at + n)
            .map(|s| s.iter().fold(0, |acc, bit| (acc << 1) | bit))
    };
    let (mut at, mut out) = (0, String::new());
    while at < bits.len() {
        // The padding: fewer than 8 bits, all ones (the EOS prefix).
        if bits.len() - at < 8 && bits[at..].iter().all(|&b| b == 1) {
            break;
        }
        match take(at, 5)? {
            code @ 0..=2 => {
                out.push(char::from(b'0' + code));
                at += 5;
            }
            _ => match take(at, 6)? {
                code @ 0x19..=0x1f => {
                    out.push(char::from(b'3' + code - 0x19));
                    at += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}
