//! The rules at work: TCP from the app is redirected to the outbound port and TCP from the
//! network to the inbound port, and what is exempt is not.
//!
//! These tests need listeners inside the namespace, so they re-execute this test binary there
//! (see [`crate::netns`]), in a namespace wired by a veth pair to a second one, the "network".
//! A connection that is not redirected reaches the network, where nothing listens, and is
//! refused; one that is redirected is accepted by the test's listener, which reads its original
//! destination.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::HOPGATE;
use crate::netns::{self, Netns};

/// The network namespace of the capture tests' peer, for the re-executed binary.
const PEER_ENV: &str = "HOPGATE_PEER_NETNS";
/// The capture tests' addresses: the app's side of the veth pair, and the network's.
const APP_V4: &str = "10.99.0.1";
const PEER_V4: &str = "10.99.0.5";
const EXCLUDED_PEER_V4: &str = "10.99.0.6";
const APP_V6: &str = "fd99::1";
const PEER_V6: &str = "fd99::5";
/// A uid that is not the proxy's: the app.
const APP_UID: u32 = 1000;
/// curl's exit code for a refused connection.
const CURL_COULD_NOT_CONNECT: i32 = 7;

#[test]
fn outbound_capture_redirects_the_app_but_not_the_proxy_loopback_or_exclusions() {
    run_with_peer("iptables::capture::inner_outbound_capture");
}

#[test]
fn inbound_capture_redirects_connections_from_the_network_but_not_excluded_ports() {
    run_with_peer("iptables::capture::inner_inbound_capture");
}

#[test]
#[ignore = "run inside a network namespace by the outer test"]
fn inner_outbound_capture() {
    netns::assert_inner("iptables::capture::outbound_capture_*");
    let v4 = Catcher::bind("127.0.0.1:0".parse().unwrap(), "redirected");
    let v6 = Catcher::bind(
        SocketAddr::new("::1".parse().unwrap(), v4.port),
        "redirected",
    );
    let local = Catcher::bind("127.0.0.1:0".parse().unwrap(), "local");
    let port = v4.port.to_string();
    let excluded = format!("{EXCLUDED_PEER_V4}/32");
    let applied = netns::run(
        HOPGATE,
        &[
            "iptables",
            "apply",
            "--outbound-port",
            &port,
            "--exclude-ports",
            "9090",
            "--exclude-cidrs",
            &excluded,
        ],
    );
    assert!(
        applied.contains("IPv6 via"),
        "IPv6 was not captured: {applied}"
    );

    // The app's connections, to anywhere on the network, arrive at the outbound port, with the
    // address they were made to as their original destination.
    let to_peer = format!("{PEER_V4}:8080");
    assert_eq!(curl_as(APP_UID, &to_peer), Ok("redirected".to_owned()));
    let to_peer_v6 = format!("[{PEER_V6}]:8080");
    assert_eq!(curl_as(APP_UID, &to_peer_v6), Ok("redirected".to_owned()));
    assert_eq!(v4.seen(), [to_peer.parse::<SocketAddr>().unwrap()]);
    assert_eq!(v6.seen(), [to_peer_v6.parse::<SocketAddr>().unwrap()]);

    // What is exempt reaches the network (which refuses it: nothing listens there), or, for
    // loopback, its own listener.
    assert_eq!(
        curl_as(1337, &to_peer),
        Err(CURL_COULD_NOT_CONNECT),
        "the proxy uid"
    );
    assert_eq!(
        curl_as(APP_UID, &format!("{PEER_V4}:9090")),
        Err(CURL_COULD_NOT_CONNECT),
        "an excluded port"
    );
    assert_eq!(
        curl_as(APP_UID, &format!("{EXCLUDED_PEER_V4}:8080")),
        Err(CURL_COULD_NOT_CONNECT),
        "an excluded CIDR"
    );
    let loopback = format!("127.0.0.1:{}", local.port);
    assert_eq!(
        curl_as(APP_UID, &loopback),
        Ok("local".to_owned()),
        "loopback"
    );
    assert_eq!(
        v4.seen().len() + v6.seen().len(),
        2,
        "nothing else was redirected"
    );

    // After remove, nothing is.
    netns::run(HOPGATE, &["iptables", "remove"]);
    assert_eq!(curl_as(APP_UID, &to_peer), Err(CURL_COULD_NOT_CONNECT));
    assert_eq!(v4.seen().len(), 1);
}

#[test]
#[ignore = "run inside a network namespace by the outer test"]
fn inner_inbound_capture() {
    netns::assert_inner("iptables::capture::inbound_capture_*");
    let peer = std::env::var(PEER_ENV).unwrap();
    let v4 = Catcher::bind("0.0.0.0:0".parse().unwrap(), "inbound");
    let v6 = Catcher::bind(SocketAddr::new("::".parse().unwrap(), v4.port), "inbound");
    let direct = Catcher::bind("0.0.0.0:9090".parse().unwrap(), "direct");
    let port = v4.port.to_string();
    netns::run(
        HOPGATE,
        &[
            "iptables",
            "apply",
            "--capture-inbound",
            "--inbound-port",
            &port,
            "--exclude-ports",
            "9090",
        ],
    );

    // From the network, to any port of the app's address: the inbound port takes it.
    let from_peer = |target: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &peer])
            .args(curl_args(target))
            .output()
            .unwrap();
        curl_result(&out)
    };
    let to_app = format!("{APP_V4}:8080");
    assert_eq!(from_peer(&to_app), Ok("inbound".to_owned()));
    assert_eq!(v4.seen(), [to_app.parse::<SocketAddr>().unwrap()]);
    let to_app_v6 = format!("[{APP_V6}]:8080");
    assert_eq!(from_peer(&to_app_v6), Ok("inbound".to_owned()));
    assert_eq!(v6.seen(), [to_app_v6.parse::<SocketAddr>().unwrap()]);
    // An excluded port is served by whatever listens on it.
    assert_eq!(
        from_peer(&format!("{APP_V4}:9090")),
        Ok("direct".to_owned())
    );
    assert_eq!(v4.seen().len(), 1);
    drop(direct);
}

/// Runs `path` in a namespace wired to a peer namespace by a veth pair: `APP_V4`/`APP_V6` on
/// the app's side, `PEER_V4`, `EXCLUDED_PEER_V4` and `PEER_V6` on the peer's, and `lo` up in both.
fn run_with_peer(path: &str) {
    if netns::skip_or_check("transparent capture") {
        return;
    }
    let (app, peer) = (Netns::create(), Netns::create());
    netns::run(
        "ip",
        &[
            "-n", &app.name, "link", "add", "hgv0", "type", "veth", "peer", "name", "hgv1",
            "netns", &peer.name,
        ],
    );
    for (ns, device, addrs) in [
        (
            &app,
            "hgv0",
            vec![format!("{APP_V4}/24"), format!("{APP_V6}/64")],
        ),
        (
            &peer,
            "hgv1",
            vec![
                format!("{PEER_V4}/24"),
                format!("{EXCLUDED_PEER_V4}/24"),
                format!("{PEER_V6}/64"),
            ],
        ),
    ] {
        for addr in &addrs {
            // nodad: an IPv6 address is usable at once, not after duplicate detection.
            netns::run(
                "ip",
                &["-n", &ns.name, "addr", "add", addr, "dev", device, "nodad"],
            );
        }
        netns::run("ip", &["-n", &ns.name, "link", "set", device, "up"]);
        netns::run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
    }
    app.run_inner(path, &[(PEER_ENV, peer.name.as_str())]);
}

fn curl_args(target: &str) -> Vec<String> {
    [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "5",
        "--noproxy",
        "*",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("http://{target}/")])
    .collect()
}

/// `curl http://target/` as `uid`: the body, or curl's exit code.
fn curl_as(uid: u32, target: &str) -> Result<String, i32> {
    let out = Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .args(curl_args(target))
        .output()
        .expect("setpriv (util-linux) and curl are installed");
    curl_result(&out)
}

fn curl_result(out: &Output) -> Result<String, i32> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

/// A listener answering every connection with a short HTTP response, recording each one's
/// original destination (`SO_ORIGINAL_DST`).
struct Catcher {
    port: u16,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Catcher {
    fn bind(addr: SocketAddr, body: &'static str) -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        if addr.is_ipv6() {
            // Its own family only: an IPv4 listener may hold the same port.
            socket.set_only_v6(true).unwrap();
        }
        socket.bind(&addr.into()).unwrap();
        socket.listen(16).unwrap();
        let listener: TcpListener = socket.into();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(dst) = original_dst(&stream) {
                    record.lock().unwrap().push(dst);
                }
                answer(stream, body);
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().unwrap().clone()
    }
}

/// Where a redirected connection was made to; `None` for one that was not redirected.
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let dst = if stream.local_addr().ok()?.is_ipv4() {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    dst.ok()?
        .as_socket()
        .filter(|dst| Some(*dst) != stream.local_addr().ok())
}

fn answer(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
        head.push(byte[0]);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
