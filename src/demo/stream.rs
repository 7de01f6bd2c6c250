//! Step 6: two streaming answers from inference to the support agent, each its own transaction
//! for alice; one transaction is revoked in `revocations.yaml` while both streams are open. Its
//! stream is cut within a second, the other goes on, and the audit records say why.

use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;

use super::mesh::short;
use super::*;

/// How often the inference app sends an event, and the most it sends.
const EVERY: Duration = Duration::from_millis(100);
const EVENTS: u32 = 300;

/// The inference app's `/stream`: an SSE answer, one event every [`EVERY`].
pub(super) fn sse() -> Response<BoxBody<Bytes, Infallible>> {
    let events = futures_util::stream::unfold(0u32, |n| async move {
        if n >= EVENTS {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(EVERY).await;
        }
        let event = Bytes::from(format!("data: token {n}\n\n"));
        Some((Ok::<_, Infallible>(hyper::body::Frame::data(event)), n + 1))
    });
    let mut rsp = Response::new(StreamBody::new(events).boxed());
    rsp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    rsp
}

/// An SSE answer being read: its events so far, and how it ended.
struct Stream {
    body: Incoming,
    events: usize,
}

impl Stream {
    /// Opens `/stream` on inference, as the support-agent app does, for alice.
    async fn open(mesh: &Mesh) -> anyhow::Result<Self> {
        let outbound = mesh.sidecars.iter().find(|s| s.name == "agent");
        let outbound = outbound.context("the agent sidecar")?.outbound;
        let tcp = tokio::net::TcpStream::connect(outbound).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri("/stream")
            .header("host", "inference.ml")
            .header("authorization", format!("Bearer {}", mesh.alice))
            .header("intent-action", "generate")
            .header("intent-purpose", "support")
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let rsp = sender.send_request(req).await?;
        if rsp.status() != 200 {
            bail!("the stream was answered {}", rsp.status());
        }
        let mut stream = Self {
            body: rsp.into_body(),
            events: 0,
        };
        stream.next().await?;
        Ok(stream)
    }

    /// The next event; an error when the stream was cut or ended.
    async fn next(&mut self) -> anyhow::Result<()> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) if frame.is_data() => {
                    self.events += 1;
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => bail!("cut: {err}"),
                None => bail!("ended"),
            }
        }
    }
}

/// Step 6.
pub(super) async fn step6(mesh: &Mesh) -> Outcome {
    header(
        6,
        "two SSE streams from inference to the agent; one transaction revoked",
    );
    let mark = mesh.mark();
    println!(
        "call: twice, alice's streaming request through the support agent's hopgate to\n      http://inference.ml/stream (SSE, an event every 100 ms): each call is its own transaction"
    );
    match run(mesh).await {
        Ok(outcome) => {
            mesh.print_decisions(&mark);
            outcome
        }
        Err(err) => Outcome {
            ok: false,
            why: format!("{err:#}"),
        },
    }
}

async fn run(mesh: &Mesh) -> anyhow::Result<Outcome> {
    let mut revoked = Stream::open(mesh).await?;
    let txn = txn_of(mesh.app(Role::Inference).last_token())?;
    let mut kept = Stream::open(mesh).await?;
    let other = txn_of(mesh.app(Role::Inference).last_token())?;
    println!(
        "open: stream A (txn {}) and stream B (txn {}), both receiving tokens",
        short(&txn),
        short(&other)
    );
    let file = mesh.dir.path().join("policies").join("revocations.yaml");
    std::fs::write(
        &file,
        format!("- txn: {txn}\n  reason: alice's session ended (demo step 6)\n"),
    )?;
    let written = Instant::now();
    println!(
        "revoke: policies/revocations.yaml now lists txn {}",
        short(&txn)
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(err) = revoked.next().await {
                return err;
            }
        }
    })
    .await
    .context("stream A was still open 5 s after the revocation")?;
    let latency = written.elapsed();
    println!(
        "result: stream A {cut:#} after {} events, {} ms after the file was written",
        revoked.events,
        latency.as_millis()
    );
    let before = kept.events;
    for _ in 0..3 {
        kept.next().await.context("stream B")?;
    }
    println!(
        "result: stream B goes on: {} more events ({} in all)",
        kept.events - before,
        kept.events
    );
    let closed = closed_records(mesh, &txn);
    for (sidecar, record) in &closed {
        println!(
            "  {sidecar:<10} stream_closed reason {} after {} ms, decision {}",
            field(record, "reason").as_str().unwrap_or(""),
            field(record, "duration_us").as_u64().unwrap_or(0) / 1000,
            field(record, "decision_id").as_str().unwrap_or(""),
        );
    }
    // The revocation stays for the rest of the run; a new call is a new transaction.
    let ok = latency <= Duration::from_secs(1)
        && !closed.is_empty()
        && closed
            .iter()
            .all(|(_, r)| field(r, "reason").as_str() == Some("revoked"));
    let why = format!(
        "stream A cut {} ms after its transaction was revoked ({} stream_closed records, reason revoked); stream B went on",
        latency.as_millis(),
        closed.len()
    );
    Ok(Outcome { ok, why })
}

/// The `txn` of the hop token the inference app received last.
fn txn_of(token: Option<String>) -> anyhow::Result<String> {
    let token = token.context("the inference app got no hop token")?;
    let token = hopgate_proxy::token::inspect(&token).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(token.claims().txn().to_owned())
}

/// The `stream_closed` records of `txn`, by sidecar.
fn closed_records(mesh: &Mesh, txn: &str) -> Vec<(&'static str, Value)> {
    let mut found = Vec::new();
    for sidecar in &mesh.sidecars {
        for line in lock(&sidecar.audit).iter() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if field(&record, "event").as_str() == Some("stream_closed")
                && field(&record, "txn").as_str() == Some(txn)
            {
                found.push((sidecar.name, record));
            }
        }
    }
    found
}
