//! The export queue and the span processors: ended spans encoded onto a bounded queue, sent
//! in batches by a task in the runtime; or kept in memory by a [`SpanCollector`].

use super::*;

// === impl Export ===

impl Export {
    /// Sends batches until the provider shuts down and the queue is empty.
    pub(super) async fn run(mut self) {
        let mut warned = false;
        loop {
            // A first span (or the end) ...
            loop {
                {
                    let state = self.queue.lock();
                    if !state.spans.is_empty() {
                        break;
                    }
                    if state.closed {
                        return;
                    }
                }
                self.queue.ready.notified().await;
            }
            // ... then a full batch, the end, or the batch delay, whichever comes first.
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            loop {
                {
                    let state = self.queue.lock();
                    if state.spans.len() >= BATCH || state.closed {
                        break;
                    }
                }
                let woken = tokio::time::timeout_at(deadline, self.queue.ready.notified());
                if woken.await.is_err() {
                    break;
                }
            }
            let spans = self.queue.lock().spans.take();
            let count = spans.len();
            let request = self.encoder.request(spans);
            // Retries included: meanwhile new spans queue up, and past its bound are dropped.
            let deadline = tokio::time::Instant::now() + EXPORT_TIMEOUT;
            if let Err(error) = self.exporter.export(request, deadline).await {
                self.metrics.record_spans_dropped(count);
                // Once per outage, not once per batch; the counter carries the rest.
                if !warned {
                    tracing::warn!(spans = count, error = %error, "span export failed; dropping spans until the collector answers");
                    warned = true;
                }
            } else {
                warned = false;
            }
        }
    }
}

// === impl QueueProcessor ===

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let queued = {
            let mut state = self.queue.lock();
            if state.closed || state.spans.len() >= QUEUE {
                None
            } else {
                state.spans.push(&span);
                Some(state.spans.len())
            }
        };
        match queued {
            None => self.metrics.record_spans_dropped(1),
            Some(1 | BATCH) => self.queue.ready.notify_one(),
            Some(_) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
        Ok(())
    }
}

// === impl ExportQueue ===

impl ExportQueue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl CollectProcessor ===

impl SpanProcessor for CollectProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.collector.push(span, self.resource.as_ref());
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

// === impl SpanCollector ===

impl SpanCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn push(&self, mut span: SpanData, resource: Option<&Resource>) {
        // The service name rides along as an attribute: a collected span has no resource.
        if let Some(name) = resource.and_then(|r| r.get(&opentelemetry::Key::new("service.name"))) {
            span.attributes.push(KeyValue::new("service.name", name));
        }
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }

    /// Every span collected so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the spans collected so far.
    pub fn clear(&self) {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
