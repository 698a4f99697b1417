//! The SPDY/3 framing the API server speaks to a kubelet's streaming endpoints
//! (`Upgrade: SPDY/3.1`): frames, and header blocks compressed with zlib and the protocol's
//! dictionary.
//!
//! Written here because no maintained Rust crate speaks SPDY (the protocol was retired for
//! HTTP/2 everywhere but Kubernetes' streaming), and only what a port-forward server needs:
//! reading every frame type, writing SYN_REPLY, DATA, RST_STREAM, PING and GOAWAY. Flow control
//! frames are read and ignored, as the API server's own SPDY library does.
//!
//! Every length comes from the peer: a frame is refused above [`MAX_FRAME_BYTES`] and a header
//! block above [`MAX_HEADER_BYTES`] once decompressed, before anything is allocated for it.

use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame read (the peer writes data in pieces of at most 32 KiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// The largest header block accepted, decompressed.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// `FLAG_FIN` of data and control frames.
pub const FLAG_FIN: u8 = 0x01;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// Why the SPDY session broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or closed mid-frame.
    #[error("reading the SPDY stream: {0}")]
    Io(#[from] std::io::Error),
    /// A frame over the size limit.
    #[error("SPDY frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// A frame that does not follow SPDY/3.
    #[error("invalid SPDY frame: {0}")]
    Invalid(&'static str),
    /// A header block that does not decompress, or is too large.
    #[error("invalid SPDY header block: {0}")]
    Headers(String),
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A new stream from the peer, with its headers (names lower case).
    SynStream {
        /// The stream.
        stream_id: u32,
        /// Its headers.
        headers: Vec<(String, String)>,
        /// Whether the peer will send nothing on it.
        fin: bool,
    },
    /// Data on a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// The bytes.
        data: Vec<u8>,
        /// Whether this is the peer's last frame on the stream.
        fin: bool,
    },
    /// The peer reset a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
    },
    /// A ping to answer (or the answer to ours).
    Ping {
        /// Its id.
        id: u32,
    },
    /// The peer closes the session.
    GoAway,
    /// A frame with nothing for a port-forward server to do (SETTINGS, WINDOW_UPDATE,
    /// HEADERS, SYN_REPLY, unknown types).
    Other,
}

/// The zlib state of one direction of a session: header blocks are one continuing zlib
/// stream per direction, primed with the SPDY/3 dictionary.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        // The dictionary is set before the first byte, as the peer's reader expects it.
        let _ = deflate.set_dictionary(&DICTIONARY);
        HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

impl HeaderCodec {
    /// Decompresses one header block (the rest of the peer's zlib stream so far).
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            match self
                .inflate
                .decompress(input, &mut chunk, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| Error::Headers(e.to_string()))?;
                }
                Err(e) => return Err(Error::Headers(e.to_string())),
            }
            let read = (self.inflate.total_in() - before_in) as usize;
            let written = (self.inflate.total_out() - before_out) as usize;
            input = &input[read..];
            out.extend_from_slice(&chunk[..written]);
            if out.len() > MAX_HEADER_BYTES {
                return Err(Error::Headers(format!(
                    "more than {MAX_HEADER_BYTES} bytes decompressed"
                )));
            }
            if input.is_empty() && written < chunk.len() {
                return Ok(out);
            }
            if read == 0 && written == 0 {
                return Err(Error::Headers("the zlib stream makes no progress".into()));
            }
        }
    }

    /// Compresses one header block, flushed so the peer can read it at once.
    fn deflate(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            let _ = self
                .deflate
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync);
            let all_in = (self.deflate.total_in() - start) as usize == block.len();
            // With room left in the output, zlib has written the whole flush.
            if all_in && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(256));
        }
    }
}

/// Reads one frame. Header blocks are decompressed with `codec`.
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    codec: &mut HeaderCodec,
) -> Result<Frame> {
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).await?;
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(Error::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Frame::Data {
            stream_id,
            data: body,
            fin,
        });
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    control_frame(kind, fin, &body, codec)
}

fn control_frame(kind: u16, fin: bool, body: &[u8], codec: &mut HeaderCodec) -> Result<Frame> {
    let word = |at: usize| -> Result<u32> {
        body.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
            .ok_or(Error::Invalid("control frame too short"))
    };
    Ok(match kind {
        SYN_STREAM => {
            let stream_id = word(0)?;
            let block = body
                .get(10..)
                .ok_or(Error::Invalid("SYN_STREAM too short"))?;
            let headers = parse_headers(&codec.inflate(block)?)?;
            Frame::SynStream {
                stream_id,
                headers,
                fin,
            }
        }
        SYN_REPLY => {
            // The peer's header blocks share one zlib stream: read this one to stay in step.
            codec.inflate(body.get(4..).unwrap_or_default())?;
            Frame::Other
        }
        RST_STREAM => Frame::RstStream {
            stream_id: word(0)?,
        },
        PING => Frame::Ping {
            id: body
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(Error::Invalid("PING too short"))?,
        },
        GOAWAY => Frame::GoAway,
        8 => {
            codec.inflate(body.get(4..).unwrap_or_default())?;
            Frame::Other
        }
        _ => Frame::Other,
    })
}

/// `count, (name length, name, value length, value)*`, all lengths 32-bit big-endian.
fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>> {
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(Error::Invalid("header block shorter than its lengths"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
    // Each pair takes at least 8 bytes, so the count is bounded by the block itself.
    let mut headers = Vec::with_capacity((count as usize).min(block.len() / 8));
    for _ in 0..count {
        let mut field = || -> Result<String> {
            let n = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
            Ok(String::from_utf8_lossy(take(n)?).into_owned())
        };
        let name = field()?.to_ascii_lowercase();
        let value = field()?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// A SYN_REPLY with no headers, accepting the peer's stream.
pub fn syn_reply(stream_id: u32, codec: &mut HeaderCodec) -> Vec<u8> {
    let block = codec.deflate(&0u32.to_be_bytes());
    let mut body = stream_id.to_be_bytes().to_vec();
    body.extend_from_slice(&block);
    control(SYN_REPLY, 0, &body)
}

/// A DATA frame.
pub fn data(stream_id: u32, bytes: &[u8], fin: bool) -> Vec<u8> {
    let mut frame = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
    frame.push(if fin { FLAG_FIN } else { 0 });
    frame.extend_from_slice(&length(bytes.len()));
    frame.extend_from_slice(bytes);
    frame
}

/// A RST_STREAM with `status` (1: protocol error, 5: cancel).
pub fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
    let mut body = stream_id.to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

/// A PING carrying `id`.
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// A GOAWAY naming the last stream accepted, status OK.
pub fn go_away(last_stream: u32) -> Vec<u8> {
    let mut body = last_stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = (0x8000 | VERSION).to_be_bytes().to_vec();
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&length(body.len()));
    frame.extend_from_slice(body);
    frame
}

fn length(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

/// The SPDY/3 header compression dictionary: the length-prefixed words of the specification
/// (draft 3, section 2.6.10.1), then its run of status codes, dates and media types.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=",
        "iso-8859-1,utf-,*,enq=0.",
    );
    let mut dictionary = Vec::with_capacity(1423);
    for word in WORDS {
        dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(word.as_bytes());
    }
    dictionary.extend_from_slice(TAIL.as_bytes());
    dictionary
});

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in bytes {
            a = (a + u32::from(*byte)) % 65_521;
            b = (b + a) % 65_521;
        }
        (b << 16) | a
    }

    #[test]
    fn the_dictionary_is_the_one_peers_ask_for() {
        // The zlib streams of the API server's SPDY library name the dictionary by this
        // Adler-32 (DICTID); any other byte would fail every header block.
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }

    fn block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    fn syn_stream(id: u32, pairs: &[(&str, &str)], peer: &mut HeaderCodec) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&peer.deflate(&block(pairs)));
        control(SYN_STREAM, 0, &body)
    }

    #[tokio::test]
    async fn frames_round_trip_through_one_zlib_stream_per_direction() {
        let mut peer = HeaderCodec::default();
        let mut wire = syn_stream(1, &[("streamType", "error"), ("port", "8080")], &mut peer);
        wire.extend(syn_stream(
            3,
            &[("streamtype", "data"), ("requestid", "0")],
            &mut peer,
        ));
        wire.extend(data(3, b"GET /", true));
        wire.extend(ping(7));
        wire.extend(rst_stream(1, 5));
        let mut ours = HeaderCodec::default();
        let mut reader = wire.as_slice();
        let first = read_frame(&mut reader, &mut ours).await.unwrap();
        assert_eq!(
            first,
            Frame::SynStream {
                stream_id: 1,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into())
                ],
                fin: false
            }
        );
        assert!(matches!(
            read_frame(&mut reader, &mut ours).await.unwrap(),
            Frame::SynStream { stream_id: 3, .. }
        ));
        assert_eq!(
            read_frame(&mut reader, &mut ours).await.unwrap(),
            Frame::Data {
                stream_id: 3,
                data: b"GET /".to_vec(),
                fin: true
            }
        );
        assert_eq!(
            read_frame(&mut reader, &mut ours).await.unwrap(),
            Frame::Ping { id: 7 }
        );
        assert_eq!(
            read_frame(&mut reader, &mut ours).await.unwrap(),
            Frame::RstStream { stream_id: 1 }
        );
        // Our replies decompress on the peer's side of the same dictionary.
        let mut reply = syn_reply(1, &mut ours);
        reply.extend(syn_reply(3, &mut ours));
        let mut peer_in = HeaderCodec::default();
        let first_len = 8 + u32::from_be_bytes([0, reply[5], reply[6], reply[7]]) as usize;
        for frame in [&reply[..first_len], &reply[first_len..]] {
            let got = peer_in.inflate(&frame[12..]).unwrap();
            assert_eq!(parse_headers(&got).unwrap(), vec![]);
        }
    }

    #[tokio::test]
    async fn hostile_lengths_are_refused_before_allocation() {
        let mut codec = HeaderCodec::default();
        let huge = [0u8, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        let err = read_frame(&mut huge.as_slice(), &mut codec)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        let lying = block(&[("a", "b")]);
        let mut short = lying.clone();
        short.truncate(lying.len() - 1);
        assert!(parse_headers(&short).is_err());
        let mut many = u32::MAX.to_be_bytes().to_vec();
        many.extend_from_slice(&[0; 8]);
        assert!(parse_headers(&many).is_err());
    }

    proptest::proptest! {
        #[test]
        fn properties_any_bytes_are_read_as_frames_or_refused(bytes: Vec<u8>) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut codec = HeaderCodec::default();
                let mut reader = bytes.as_slice();
                while read_frame(&mut reader, &mut codec).await.is_ok() {}
            });
        }
    }
}
