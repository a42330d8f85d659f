//! What the server did and how long it took, for Prometheus: `[metrics] listen` serves it
//! over HTTP (`endpoint`), off by default.
//!
//! Two kinds of figures. Counters and histograms bumped as things happen (requests by client,
//! result and reason; decision, directory, store and SMS latencies; portal requests) live in
//! the families of [`Metrics`]; the subsystems that record them get an `Arc<Metrics>`, or are
//! wrapped by `timed`'s decorators, so none of them knows of Prometheus. Figures the subsystems
//! already keep (the RADIUS edge's discard counters, the SMS outcomes, the directory's servers
//! and connections, whether the store can be used) are read when scraped, through
//! [`Metrics::watch`]. Label values are client names, reasons and operation names: never a
//! user name, an address a user typed, or anything secret.

pub mod endpoint;
pub mod settings;
pub mod timed;
mod watched;

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use settings::{MetricsSection, MetricsSettings};
pub use watched::{AuditWatch, CounterSet, DirectoryWatch, RadsecWatch, StoreAvailability};

/// From half a millisecond to about 16 s, doubling: a cached second step takes under a
/// millisecond, an SMS gateway or a directory at its timeout seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    client: String,
    /// Access-Request, Status-Server or Accounting-Request.
    code: &'static str,
    /// accept, reject, challenge, none (no answer); answered (Status-Server, accounting).
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    /// `first` (the password, or password and code in one field) or `code` (the answer to a
    /// challenge).
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    /// ok or error.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SmsLabels {
    gateway: &'static str,
    /// sent or failed.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortalLabels {
    /// The route as declared (`/tokens/{id}/remove`), so ids do not make new series.
    route: String,
    method: String,
    status: u16,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Figures read when scraped, from something that keeps them anyway.
pub trait Watched: Send + Sync + 'static {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error>;
}

/// Every figure radmfa reports. Cheap to record into when nothing scrapes it.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    decisions: Histograms<StepLabels>,
    directory: Histograms<OperationLabels>,
    store: Histograms<OperationLabels>,
    sms: Histograms<SmsLabels>,
    portal: Family<PortalLabels, Counter>,
    portal_seconds: Histograms<StepLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("radmfa");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "radius_requests",
            "Verified RADIUS requests by client, request code, result (accept, reject, challenge, none; answered for Status-Server and accounting) and reason",
            requests.clone(),
        );
        let decisions: Histograms<StepLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "radius_decision_seconds",
            "Time from a request's arrival to its decision, by step: first (password, or password and code) or code (a challenge's answer)",
            decisions.clone(),
        );
        let directory: Histograms<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "directory_operation_seconds",
            "Directory operations (find, check_password, groups) by outcome, waits for a connection included",
            directory.clone(),
        );
        let store: Histograms<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("store_operation_seconds", "Store (database) operations by name and outcome", store.clone());
        let sms: Histograms<SmsLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("sms_send_seconds", "Each attempt to hand an SMS to the gateway, by gateway and outcome", sms.clone());
        let portal = Family::<PortalLabels, Counter>::default();
        registry.register("portal_requests", "Portal HTTP requests by route, method and status", portal.clone());
        let portal_seconds: Histograms<StepLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("portal_request_seconds", "Portal HTTP request handling time, by kind: page or action", portal_seconds.clone());
        registry.register("build", "The radmfa build running", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        Self { registry: Mutex::new(registry), requests, decisions, directory, store, sms, portal, portal_seconds }
    }

    /// Reports `watched`'s figures at every scrape from now on.
    pub fn watch(&self, watched: impl Watched) {
        self.registry().register_collector(Box::new(WatchedCollector(Box::new(watched))));
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The OpenMetrics text of every figure.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a collector,
        // and a truncated page is what the scraper then gets.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry()) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        text
    }

    /// A verified request and what became of it.
    pub fn request(&self, client: &str, code: &'static str, result: &'static str, reason: &'static str) {
        self.requests.get_or_create(&RequestLabels { client: client.to_owned(), code, result, reason }).inc();
    }

    /// How long an Access-Request took to decide, from its arrival.
    pub fn decision(&self, code_step: bool, took: Duration) {
        let step = if code_step { "code" } else { "first" };
        self.decisions.get_or_create(&StepLabels { step }).observe(took.as_secs_f64());
    }

    pub fn directory_operation(&self, operation: &'static str, ok: bool, took: Duration) {
        self.directory.get_or_create(&OperationLabels { operation, outcome: outcome(ok) }).observe(took.as_secs_f64());
    }

    pub fn store_operation(&self, operation: &'static str, ok: bool, took: Duration) {
        self.store.get_or_create(&OperationLabels { operation, outcome: outcome(ok) }).observe(took.as_secs_f64());
    }

    pub fn sms_attempt(&self, gateway: &'static str, sent: bool, took: Duration) {
        let outcome = if sent { "sent" } else { "failed" };
        self.sms.get_or_create(&SmsLabels { gateway, outcome }).observe(took.as_secs_f64());
    }

    /// A portal request: `route` is the matched route's pattern, never the path as sent.
    pub fn portal_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        // A client may send any method name: only the ones the portal serves become series.
        let method = match method {
            "GET" | "HEAD" | "POST" => method,
            _ => "other",
        };
        self.portal.get_or_create(&PortalLabels { route: route.to_owned(), method: method.to_owned(), status }).inc();
        let step = if method == "GET" || method == "HEAD" { "page" } else { "action" };
        self.portal_seconds.get_or_create(&StepLabels { step }).observe(took.as_secs_f64());
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

struct WatchedCollector(Box<dyn Watched>);

impl std::fmt::Debug for WatchedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchedCollector")
    }
}

impl Collector for WatchedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(&mut encoder)
    }
}

/// Writes a counter named `radmfa_<name>_total` (the registry's prefix and the suffix are
/// added by the encoder), with labels.
pub fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    encode_series(encoder, name, help, series, ConstCounter::new)
}

/// Writes a gauge, with labels.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], i64)],
) -> Result<(), std::fmt::Error> {
    encode_series(encoder, name, help, series, ConstGauge::new)
}

/// One metric family: its descriptor, then each labelled value as `metric` makes it.
fn encode_series<V: Copy, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], V)],
    metric: impl Fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = series.first() else { return Ok(()) };
    let mut family = encoder.encode_descriptor(name, help.trim(), None, metric(*first).metric_type())?;
    for (labels, value) in series {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        metric(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
