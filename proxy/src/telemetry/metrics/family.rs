//! A metric family whose series come out in label order on every scrape.
//!
//! `prometheus_client`'s own `Family` keeps its series in a `HashMap`: two sidecars with the
//! same series (or one sidecar after a restart, or after a new series made the map grow) list
//! them in different orders, and a diff of two scrapes, a golden file or a reader scanning by
//! eye sees churn where nothing changed. Here the series sit in a `BTreeMap` keyed by their
//! label set, whose `Ord` follows the labels' declared order and each enum's declaration order.
//!
//! Nothing on the request path looks a series up here: the request counters are resolved once
//! per label set and kept (`requests.rs`), the other families count rare events.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Series of one metric, by label set, in label order.
pub(super) struct SortedFamily<S, M> {
    series: Arc<RwLock<BTreeMap<S, M>>>,
    make: fn() -> M,
}

impl<S: Ord + Clone, M: Clone + Default> SortedFamily<S, M> {
    /// A family whose new series start at their default (zero).
    pub(super) fn new() -> Self {
        Self::with_constructor(M::default)
    }
}

impl<S: Ord + Clone, M: Clone> SortedFamily<S, M> {
    /// A family whose new series are made by `make` (a histogram's buckets).
    pub(super) fn with_constructor(make: fn() -> M) -> Self {
        Self {
            series: Arc::default(),
            make,
        }
    }

    /// The series of `labels`, made (at zero) when it is new. Metrics are handles: the one
    /// returned counts into the family.
    pub(super) fn get_or_create(&self, labels: &S) -> M {
        if let Some(metric) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            return metric.clone();
        }
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert_with(self.make)
            .clone()
    }
}

impl<S, M> Clone for SortedFamily<S, M> {
    fn clone(&self) -> Self {
        Self {
            series: Arc::clone(&self.series),
            make: self.make,
        }
    }
}

impl<S, M> std::fmt::Debug for SortedFamily<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedFamily").finish_non_exhaustive()
    }
}

impl<S: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for SortedFamily<S, M> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, metric) in series.iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    /// Never: a family with no series yet still shows its `# HELP` and `# TYPE`, so a scrape
    /// names every metric from start-up (the request counters appear with the first request).
    fn is_empty(&self) -> bool {
        false
    }
}
