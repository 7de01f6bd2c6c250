//! `inbound.timeouts.header_read` bounds the whole time from accept to a complete request head
//! (DOS-01, docs/security.md, "Resource limits and timeouts"): the TLS handshake, then the wait
//! for a first head, whether the connection then speaks HTTP/1.1, HTTP/2 or nothing at all. A
//! connection that only holds a slot is gone well before `idle`, and at the connection cap it
//! gives its place to a new connection sooner still (DOS-04).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::client::Proto;
use crate::support::proxy::Mesh;
use crate::support::upstream::Upstream;
use crate::support::workload::{Workload, Workloads};

const TIMEOUTS: &str = "  timeouts: { header_read: 500ms, idle: 30s }\n";

/// The HTTP/2 connection preface and an empty SETTINGS frame: a client that then never sends
/// a request.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn a_tls_connection_that_sends_no_request_is_closed_at_header_read_dos_01() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).inbound_yaml(TIMEOUTS).start().await;
    for proto in [Proto::H1, Proto::H2] {
        let start = Instant::now();
        let tls = mesh
            .client("caller", proto)
            .connect(proxy.inbound)
            .await
            .unwrap();
        let closed_after = closed(tls, start).await;
        assert!(
            closed_after < Duration::from_secs(5),
            "{proto:?}: {closed_after:?}"
        );
    }
}

#[tokio::test]
async fn an_http2_connection_that_never_sends_a_head_is_closed_at_header_read_dos_01() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).inbound_yaml(TIMEOUTS).start().await;
    let start = Instant::now();
    let mut tls = mesh
        .client("caller", Proto::H2)
        .connect(proxy.inbound)
        .await
        .unwrap();
    tls.write_all(H2_PREFACE).await.unwrap();
    let closed_after = closed(tls, start).await;
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
}

#[tokio::test]
async fn an_app_connection_to_the_outbound_side_that_sends_nothing_is_closed_dos_01() {
    let mesh = Workloads::new();
    let agent = mesh.workload("agent").inbound_yaml(TIMEOUTS).start().await;
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    let closed_after = closed(tcp, start).await;
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
}

#[tokio::test]
async fn a_connection_that_sent_its_head_in_time_is_not_cut_by_header_read() {
    let (_mesh, _server, agent) = server_and_agent(TIMEOUTS, TIMEOUTS).await;
    let mut tcp = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: server.svc\r\n\r\n";
    // Each head within header_read of the last response (hyper bounds a kept-alive wait for the
    // next HTTP/1.1 head by it too), the second one past header_read since the accept.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tcp.write_all(request).await.unwrap();
        let reply = read_some(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

/// A cap of two places, and a `header_read` long enough that only eviction frees one.
const CAPPED: &str =
    "  timeouts: { header_read: 30s, idle: 30s }\n  limits: { max_connections: 2 }\n";

#[tokio::test]
async fn inbound_at_the_cap_gives_a_headless_connection_s_place_to_a_new_one_dos_04() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).inbound_yaml(CAPPED).start().await;
    let client = mesh.client("caller", Proto::H1);
    // One place taken by a connection that has sent a request, one by a TCP connection that
    // never starts TLS.
    let mut served = client.open(proxy.inbound).await.unwrap();
    assert_eq!(served.get("/first", &[]).await.status, 200);
    let start = Instant::now();
    let silent = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    // A new caller gets in, in the silent connection's place...
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(proxy.inbound, "/new", &[]),
    )
    .await
    .expect("the new connection was not served at the cap")
    .unwrap();
    assert_eq!(reply.status, 200);
    let closed_after = closed(silent, start).await;
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
    // ...and the connection that had sent a head kept its own.
    assert_eq!(served.get("/again", &[]).await.status, 200);
}

#[tokio::test]
async fn outbound_at_the_cap_gives_a_headless_connection_s_place_to_a_new_one_dos_04() {
    let (_mesh, _server, agent) = server_and_agent("", CAPPED).await;
    let request = b"GET / HTTP/1.1\r\nHost: server.svc\r\n\r\n";
    let mut served = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    served.write_all(request).await.unwrap();
    let reply = read_some(&mut served).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let start = Instant::now();
    // Two silent connections for one place: the older one goes first.
    let older = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut newer = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    let closed_after = closed(older, start).await;
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
    // The newer one holds the place it was given, and is served when it speaks.
    newer.write_all(request).await.unwrap();
    let reply = read_some(&mut newer).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    served.write_all(request).await.unwrap();
    let reply = read_some(&mut served).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn at_the_cap_connections_that_sent_a_head_are_never_closed_for_a_new_one_dos_04() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).inbound_yaml(CAPPED).start().await;
    let client = mesh.client("caller", Proto::H2);
    let mut first = client.open(proxy.inbound).await.unwrap();
    let mut second = client.open(proxy.inbound).await.unwrap();
    assert_eq!(first.get("/", &[]).await.status, 200);
    assert_eq!(second.get("/", &[]).await.status, 200);
    let waiting = tokio::spawn({
        let client = client.clone();
        let addr = proxy.inbound;
        async move { client.get(addr, "/third", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served");
    assert_eq!(first.get("/", &[]).await.status, 200);
    assert_eq!(second.get("/", &[]).await.status, 200);
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting connection was not served once a place freed up")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_http2_head_dripped_on_a_later_stream_is_cut_at_header_read_on_both_sides_dos_01() {
    let (_mesh, _server, agent) = server_and_agent(TIMEOUTS, TIMEOUTS).await;
    // The app's h2c connection to the outbound side...
    let tcp = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    let closed_after = drip_second_head(tcp, b"\x86", "server.svc").await;
    assert!(
        closed_after < Duration::from_secs(5),
        "outbound: {closed_after:?}"
    );
    // ...and a peer's TLS connection to the inbound side.
    let app = Upstream::start().await;
    let inbound = Mesh::new();
    let proxy = inbound.proxy(app.addr).inbound_yaml(TIMEOUTS).start().await;
    let tls = inbound
        .client("caller", Proto::H2)
        .connect(proxy.inbound)
        .await
        .unwrap();
    let closed_after = drip_second_head(tls, b"\x87", "hopgate.test").await;
    assert!(
        closed_after < Duration::from_secs(5),
        "inbound: {closed_after:?}"
    );
}

#[tokio::test]
async fn at_the_cap_a_new_connection_does_not_close_one_that_sends_its_head_within_a_second_dos_04()
{
    let (_mesh, _server, agent) = server_and_agent(
        "",
        "  timeouts: { header_read: 30s, idle: 30s }\n  limits: { max_connections: 1 }\n",
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: server.svc\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A burst at the cap: the newcomer is held, not given the first one's place at once...
    let mut second = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so the first connection's head, sent after the newcomer came, is served.
    first.write_all(request).await.unwrap();
    let reply = read_some(&mut first).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(first);
    second.write_all(request).await.unwrap();
    let reply = read_some(&mut second).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn http2_heads_each_split_across_two_reads_are_each_timed_on_their_own_dos_01() {
    let (_mesh, _server, agent) = server_and_agent(TIMEOUTS, TIMEOUTS).await;
    let tcp = tokio::net::TcpStream::connect(agent.outbound)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tcp);
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    });
    // Every read ends inside a head for 1.5 s, three times `header_read`, but each head is
    // complete 100 ms after its first byte.
    wr.write_all(H2_PREFACE).await.unwrap();
    let mut rest: Vec<u8> = Vec::new();
    for stream in (1u8..=29).step_by(2) {
        let head = get_headers(stream, b"\x86", "server.svc");
        let (first, second) = head.split_at(12);
        let mut write = std::mem::take(&mut rest);
        write.extend_from_slice(first);
        wr.write_all(&write).await.unwrap();
        rest = second.to_vec();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wr.write_all(&rest).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !reader.is_finished(),
        "closed after {:?}",
        reader.await.unwrap()
    );
}

// === helpers ===

/// How long after `start` the other end closed `stream` (reading until EOF or an error).
async fn closed<S: AsyncRead + Unpin>(mut stream: S, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the connection was still open after 20 s")
}

/// What the server sent next, as text.
async fn read_some(tcp: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("a response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_request_body_that_stalls_is_cut_after_idle_and_answered_400_dos_02() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  timeouts: { idle: 1s }\n")
        .start()
        .await;
    let mut tls = mesh
        .client("caller", Proto::H1)
        .connect(proxy.inbound)
        .await
        .unwrap();
    let start = Instant::now();
    // 100 of the 1,000 bytes announced, then nothing.
    let head = "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n";
    tls.write_all(format!("{head}{}", "x".repeat(100)).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let answered_after = start.elapsed();
    // One idle period of stall, give or take the app's own reading; the connection's idle
    // check alone took up to three.
    assert!(
        answered_after < Duration::from_millis(2500),
        "{answered_after:?}"
    );
    // The caller's fault, not the app's: hopgate's own 400, not the app's answer to a body it
    // saw end in a reset.
    assert!(reply.contains("bad_request"), "{reply}");
}

#[tokio::test]
async fn an_http2_connection_with_no_streams_is_idle_even_while_it_pings_dos_02() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  timeouts: { idle: 1s }\n")
        .start()
        .await;
    let tls = mesh
        .client("caller", Proto::H2)
        .connect(proxy.inbound)
        .await
        .unwrap();
    let (send, mut connection) = h2::client::handshake(tls).await.unwrap();
    let mut pings = connection.ping_pong().unwrap();
    let driver = tokio::spawn(connection);
    // One request, so the connection is past its first head, then PINGs only.
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get("https://app/").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let start = Instant::now();
    let pinging = async {
        while pings.ping(h2::Ping::opaque()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), pinging)
        .await
        .expect("a connection with no streams stayed open while it pinged");
    // Two idle checks at most, and the GOAWAY's grace.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(send);
    let _ = driver.await;
}

/// Sends a whole GET on stream 1, then the head of a GET on stream 3 a byte every 100 ms:
/// how long after the drip began the server closed the connection. `scheme` is the HPACK byte
/// of `:scheme`.
async fn drip_second_head<S>(stream: S, scheme: &[u8], authority: &str) -> Duration
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let headers = |stream_id: u8| get_headers(stream_id, scheme, authority);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut first = H2_PREFACE.to_vec();
    first.extend(headers(1));
    wr.write_all(&first).await.unwrap();
    let mut buf = [0u8; 4096];
    // The response to the first request (and the server's SETTINGS) comes back.
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf))
        .await
        .expect("an answer to the first request")
        .unwrap();
    assert!(n > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let second = headers(3);
    tokio::spawn(async move {
        for byte in second {
            if wr.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    closed(rd, start).await
}

/// A HEADERS frame (END_STREAM, END_HEADERS) for a GET / on `stream_id`: `:method`, `:path`,
/// `scheme` (its HPACK byte), then `:authority` as a literal without indexing.
fn get_headers(stream_id: u8, scheme: &[u8], authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x84];
    block.extend_from_slice(scheme);
    block.extend([0x01, u8::try_from(authority.len()).unwrap()]);
    block.extend_from_slice(authority.as_bytes());
    let len = u8::try_from(block.len()).unwrap();
    let mut frame = vec![0, 0, len, 0x1, 0x5, 0, 0, 0, stream_id];
    frame.extend_from_slice(&block);
    frame
}

/// A server workload with `server_yaml` in its inbound section, and an agent with
/// `agent_yaml` and a route `server.svc` to it; the mesh holds their files.
async fn server_and_agent(server_yaml: &str, agent_yaml: &str) -> (Workloads, Workload, Workload) {
    let mesh = Workloads::new();
    let server = mesh
        .workload("server")
        .inbound_yaml(server_yaml)
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .inbound_yaml(agent_yaml)
        .route("server.svc", &server, &["generate"])
        .start()
        .await;
    (mesh, server, agent)
}
