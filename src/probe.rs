//! `hopgate probe live | ready`: one plain HTTP/1.1 `GET` to the admin listener, for a
//! Kubernetes exec probe. The admin listener stays on loopback (its endpoints are
//! unauthenticated, so it must stay off the pod network), kubelet's httpGet probes come from the
//! node, and a distroless image has no curl: the sidecar's own binary asks instead.
//!
//! Prints the status line and the body (the JSON reason of a 503) on stdout, or why there was no
//! answer on stderr. Exit 0 on 200, 1 on anything else.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{ProbeArgs, ProbeCheck};
use crate::output::Out;

/// The most of a response read; the admin's `/live` and `/ready` answers are a few dozen bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// The longest `--timeout`: a probe slower than this is a failed probe anyway.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a probe got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// `--admin` is not an address.
    #[error("--admin `{input}` is not an ip:port, such as `127.0.0.1:15000`")]
    BadAdmin {
        /// The value as given.
        input: String,
    },
    /// `--timeout` is not a duration.
    #[error("--timeout `{input}` is not a duration: {reason}")]
    BadTimeout {
        /// The value as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing accepted the connection in time.
    #[error("cannot connect to the admin listener at `{addr}`: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The connect error (`timed out` past `--timeout`).
        #[source]
        source: io::Error,
    },
    /// The response did not come in time.
    #[error("no response from `{addr}` within {timeout:?}")]
    Timeout {
        /// The admin address.
        addr: SocketAddr,
        /// `--timeout`.
        timeout: Duration,
    },
    /// The connection broke before the response was in.
    #[error("the connection to `{addr}` failed: {source}")]
    Response {
        /// The admin address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Something answered, but not with HTTP.
    #[error("`{addr}` did not answer with HTTP: {reason}")]
    NotHttp {
        /// The admin address.
        addr: SocketAddr,
        /// What was wrong with the answer.
        reason: &'static str,
    },
}

/// An HTTP response, as much as a probe needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    /// `HTTP/1.1 200 OK`.
    status_line: String,
    status: u16,
    body: String,
}

/// `probe live|ready`: 0 on 200, 1 otherwise.
pub(crate) fn run(args: &ProbeArgs) -> ExitCode {
    let mut out = Out::default();
    let path = match args.check {
        ProbeCheck::Live => "/live",
        ProbeCheck::Ready => "/ready",
    };
    let result = parse_admin(&args.admin).and_then(|addr| {
        let timeout = parse_timeout(&args.timeout)?;
        probe(addr, path, timeout)
    });
    let code = match result {
        Ok(reply) => {
            outln!(out, "{}", reply.status_line);
            outln!(out, "{}", reply.body.trim_end());
            if reply.status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            errln!(out, "error: {err}");
            ExitCode::FAILURE
        }
    };
    out.finish(code)
}

fn parse_admin(input: &str) -> Result<SocketAddr, ProbeError> {
    input.parse().map_err(|_| ProbeError::BadAdmin {
        input: input.to_owned(),
    })
}

/// `--timeout`: whole milliseconds (`500ms`) or seconds (`1s`), from 1 ms to 60 s.
fn parse_timeout(input: &str) -> Result<Duration, ProbeError> {
    let bad = |reason| ProbeError::BadTimeout {
        input: input.to_owned(),
        reason,
    };
    let (digits, unit_ms) = if let Some(digits) = input.strip_suffix("ms") {
        (digits, 1)
    } else if let Some(digits) = input.strip_suffix('s') {
        (digits, 1000)
    } else {
        return Err(bad("it must end in `ms` or `s`, such as `1s`"));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("it must be a whole number and a unit, such as `500ms`"));
    }
    let timeout = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Duration::from_millis)
        .filter(|t| *t <= MAX_TIMEOUT)
        .ok_or_else(|| bad("it must be at most 60s"))?;
    if timeout.is_zero() {
        return Err(bad("it must be longer than zero"));
    }
    Ok(timeout)
}

/// `GET path` on `addr`: `timeout` for the connect, then `timeout` for the whole response.
fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, ProbeError> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let deadline = Instant::now() + timeout;
    // A read or write past its timeout fails with WouldBlock (or TimedOut): say it timed out.
    let response_error = |source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ProbeError::Timeout { addr, timeout }
        }
        _ => ProbeError::Response { addr, source },
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hopgate-probe\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(response_error)?;
    let mut received = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Timeout { addr, timeout });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(response_error)?;
        let n = stream.read(&mut chunk).map_err(response_error)?;
        let eof = n == 0;
        received.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if received.len() > MAX_RESPONSE {
            return Err(ProbeError::NotHttp {
                addr,
                reason: "the response is larger than 64 KiB",
            });
        }
        match parse_response(&received, eof) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) if !eof => {}
            Ok(None) => {
                return Err(ProbeError::NotHttp {
                    addr,
                    reason: "the connection closed before the response was complete",
                });
            }
            Err(reason) => return Err(ProbeError::NotHttp { addr, reason }),
        }
    }
}

/// The response in `received`, once it is complete: its head, and a body framed by
/// `Content-Length`, chunked, or (`eof`) by the end of the connection. `Ok(None)`: more to come.
fn parse_response(received: &[u8], eof: bool) -> Result<Option<Reply>, &'static str> {
    let Some(head_end) = find(received, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(received.get(..head_end).unwrap_or_default())
        .map_err(|_| "the response head is not text")?;
    let rest = received.get(head_end + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("the first line is not an HTTP status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a header line has no `:`");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        match rest.get(..length) {
            Some(body) => body.to_vec(),
            None => return Ok(None),
        }
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        status_line: status_line.to_owned(),
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// A chunked body, once its last chunk is in; `Ok(None)` until then.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(rest.get(..line_end).unwrap_or_default())
            .map_err(|_| "a bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "a bad chunk size")?;
        rest = rest.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(Some(body));
        }
        // A chunk larger than what arrived (even one of usize::MAX bytes) is more to come.
        let after = size.checked_add(2).and_then(|end| rest.get(end..));
        let (Some(data), Some(after)) = (rest.get(..size), after) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        rest = after;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(response: &str) -> Reply {
        parse_response(response.as_bytes(), true).unwrap().unwrap()
    }

    #[test]
    fn a_response_framed_by_content_length_is_complete_without_the_connection_closing() {
        let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                        content-length: 40\r\n\r\n{\"ready\":false,\"reason\":\"no_identity\"}\r\n";
        let reply = parse_response(response.as_bytes(), false).unwrap().unwrap();
        assert_eq!(reply.status_line, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            "{\"ready\":false,\"reason\":\"no_identity\"}\r\n"
        );
        let short = &response.as_bytes()[..response.len() - 3];
        assert_eq!(parse_response(short, false), Ok(None));
    }

    #[test]
    fn a_chunked_body_is_decoded() {
        let reply = parsed(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"liv\r\n8;x=y\r\ne\":true}\r\n0\r\n\r\n",
        );
        assert_eq!(reply.body, "{\"live\":true}");
        let unfinished = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"liv\r\n";
        assert_eq!(parse_response(unfinished, false), Ok(None));
    }

    #[test]
    fn without_framing_the_body_ends_with_the_connection() {
        let head = "HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse_response(head.as_bytes(), false), Ok(None));
        assert_eq!(parsed(head).body, "body");
    }

    #[test]
    fn what_is_not_http_is_said_to_be_so() {
        for (response, reason) in [
            ("SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP status line"),
            ("HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP status line"),
            ("HTTP/1.1 200 OK\r\nbroken\r\n\r\n", "no `:`"),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
        ] {
            let err = parse_response(response.as_bytes(), true).unwrap_err();
            assert!(err.contains(reason), "{response:?}: {err}");
        }
    }

    #[test]
    fn timeouts_are_whole_milliseconds_or_seconds_up_to_a_minute() {
        assert_eq!(parse_timeout("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_timeout("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_timeout("60s").unwrap(), MAX_TIMEOUT);
        for bad in ["", "1", "1m", "0s", "61s", "-1s", "1.5s", "ms"] {
            let err = parse_timeout(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--timeout `{bad}`")), "{err}");
        }
    }

    #[test]
    fn a_chunk_size_past_the_address_space_is_more_to_come_not_a_panic() {
        let huge = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert_eq!(parse_response(huge, false), Ok(None));
    }

    proptest::proptest! {
        #[test]
        fn parse_response_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512), eof in proptest::bool::ANY) {
            let _ = parse_response(&bytes, eof);
        }

        #[test]
        fn parse_response_never_panics_on_near_responses(
            head in "HTTP/1\\.[01] [0-9]{3} [A-Za-z ]{0,10}",
            headers in "((content-length|transfer-encoding): [0-9a-z]{0,6}\r\n){0,3}",
            body in "[0-9a-fA-F;\r\n{}a-z]{0,64}",
        ) {
            let response = format!("{head}\r\n{headers}\r\n{body}");
            let _ = parse_response(response.as_bytes(), true);
            let _ = parse_response(response.as_bytes(), false);
        }

        #[test]
        fn parse_timeout_never_panics(input in "\\PC{0,12}") {
            let _ = parse_timeout(&input);
        }
    }

    #[test]
    fn a_bad_admin_address_is_named() {
        let err = parse_admin("localhost:15000").unwrap_err().to_string();
        assert_eq!(
            err,
            "--admin `localhost:15000` is not an ip:port, such as `127.0.0.1:15000`"
        );
    }
}
