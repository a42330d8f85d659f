//! Figures the subsystems keep anyway, read at each scrape: counter sets, the directory's
//! servers and connections, whether the store can be used.

use std::sync::Weak;

use prometheus_client::encoding::DescriptorEncoder;

use super::{Watched, encode_counter, encode_gauge};
use crate::directory::DirectoryStatus;

/// A set of [`crate::counters`] counters, each reported as `radmfa_<prefix>_<name>_total`
/// with its doc line as help, and `labels` on each.
pub struct CounterSet<F> {
    pub prefix: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub read: F,
}

impl<F> Watched for CounterSet<F>
where
    F: Fn() -> Vec<crate::counters::Described> + Send + Sync + 'static,
{
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for counter in (self.read)() {
            let name = format!("{}_{}", self.prefix, counter.name);
            encode_counter(encoder, &name, counter.help, &[(&self.labels, counter.value)])?;
        }
        Ok(())
    }
}

/// Whether the store can be used now (what makes the server leave requests unanswered).
/// Weak, as what it watches holds the metrics: nothing here keeps the store open.
pub struct StoreAvailability(pub Weak<dyn crate::store::Store>);

impl Watched for StoreAvailability {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(store) = self.0.upgrade() else { return Ok(()) };
        let up = i64::from(store.available());
        encode_gauge(
            encoder,
            "store_available",
            "1 while the store (database) can be used, 0 while requests are left unanswered for it",
            &[(&[], up)],
        )
    }
}

/// One figure of a directory server.
type ServerFigure = fn(&crate::directory::ServerStatus) -> usize;

/// The directory's servers and connections, read from whichever directory `current` gives
/// (a reload may replace it).
pub struct DirectoryWatch<F>(pub F);

impl<F> Watched for DirectoryWatch<F>
where
    F: Fn() -> Option<DirectoryStatus> + Send + Sync + 'static,
{
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(status) = (self.0)() else { return Ok(()) };
        let states: Vec<[(&str, &str); 2]> = status
            .servers
            .iter()
            .flat_map(|s| ["up", "failing", "skipped"].map(|state| [("server", s.url.as_str()), ("state", state)]))
            .collect();
        let state_series: Vec<(&[(&str, &str)], i64)> = states
            .iter()
            .map(|labels| {
                let server = status.servers.iter().find(|s| s.url == labels[0].1);
                (labels.as_slice(), i64::from(server.is_some_and(|s| s.state == labels[1].1)))
            })
            .collect();
        encode_gauge(
            encoder,
            "directory_server_state",
            "1 for each directory server's current state: up, failing (still asked, no other server is), skipped (for dead_server_backoff)",
            &state_series,
        )?;
        let per_server = |value: ServerFigure| -> Vec<([(&str, &str); 1], i64)> {
            status.servers.iter().map(|s| ([("server", s.url.as_str())], i64::try_from(value(s)).unwrap_or(i64::MAX))).collect()
        };
        let gauges: [(&str, &str, ServerFigure); 6] = [
            ("directory_connections_open", "Connections open to each directory server, idle or in use", |s| s.open),
            ("directory_connections_idle_service", "Idle connections bound as the service account (for searches)", |s| s.idle_service),
            ("directory_connections_idle_bind", "Idle connections kept for user binds", |s| s.idle_bind),
            ("directory_operations_in_flight", "Operations running on each directory server", |s| s.in_flight),
            ("directory_operations_waiting", "Operations waiting for one of a server's max_connections places", |s| s.waiting),
            ("directory_max_connections", "Operations a server may run at once (max_connections)", |s| s.max_connections),
        ];
        for (name, help, value) in gauges {
            let series = per_server(value);
            let series: Vec<(&[(&str, &str)], i64)> = series.iter().map(|(labels, v)| (labels.as_slice(), *v)).collect();
            encode_gauge(encoder, name, help, &series)?;
        }
        let totals = [
            ("directory_searches", "Searches the service account made", status.searches),
            ("directory_binds", "User binds (password checks)", status.binds),
            ("directory_connects", "Connections opened (each binds the service account or is kept for user binds)", status.connects),
            ("directory_waits", "Operations that waited for a connection", status.waited),
            ("directory_timeouts", "Operations and connections not answered within the directory timeout", status.timed_out),
        ];
        for (name, help, value) in totals {
            encode_counter(encoder, name, help, &[(&[], value)])?;
        }
        let wait = prometheus_client::metrics::counter::ConstCounter::new(status.wait_seconds);
        let metric = encoder.encode_descriptor(
            "directory_wait_seconds",
            "Time operations spent waiting for a connection, in all",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        prometheus_client::encoding::EncodeMetric::encode(&wait, metric)
    }
}

/// The audit trail's queue: events waiting for the store, and those dropped (queue full, or an
/// account's share of a minute spent). Weak, like the store's.
pub struct AuditWatch(pub Weak<crate::audit::Trail>);

impl Watched for AuditWatch {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(trail) = self.0.upgrade() else { return Ok(()) };
        encode_gauge(
            encoder,
            "audit_events_pending",
            "Audit events queued for the store (written about once a second)",
            &[(&[], trail.pending() as i64)],
        )?;
        encode_counter(
            encoder,
            "audit_events_dropped",
            "Audit events not kept in the store: the queue was full (the store slow or down), or one account had more than 60 in a minute (the log has them all)",
            &[(&[], trail.dropped())],
        )
    }
}

/// RadSec connections open now, per TLS client (the names of the configuration).
pub struct RadsecWatch<F>(pub F);

impl<F> Watched for RadsecWatch<F>
where
    F: Fn() -> Vec<(String, usize)> + Send + Sync + 'static,
{
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let open = (self.0)();
        let labels: Vec<[(&str, &str); 1]> = open.iter().map(|(client, _)| [("client", client.as_str())]).collect();
        let series: Vec<(&[(&str, &str)], i64)> =
            labels.iter().zip(&open).map(|(labels, (_, n))| (labels.as_slice(), i64::try_from(*n).unwrap_or(i64::MAX))).collect();
        encode_gauge(encoder, "radsec_connections_open", "RadSec (RADIUS over TLS) connections open now, per client", &series)
    }
}
