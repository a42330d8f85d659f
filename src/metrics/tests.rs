use std::time::Duration;

use super::*;
use crate::directory::{DirectoryStatus, ServerStatus};

/// The value of the series `name{labels}` in `text`, labels in the order written.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[test]
fn requests_are_counted_by_client_result_and_reason() {
    let metrics = Metrics::new();
    metrics.request("netscaler", "Access-Request", "reject", "bad_password");
    metrics.request("netscaler", "Access-Request", "reject", "bad_password");
    metrics.request("vpn", "Access-Request", "accept", "authenticated");
    let text = metrics.render();
    assert_eq!(
        value(&text, r#"radmfa_radius_requests_total{client="netscaler",code="Access-Request",result="reject",reason="bad_password"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"radmfa_radius_requests_total{client="vpn",code="Access-Request",result="accept",reason="authenticated"}"#),
        Some(1.0)
    );
    assert!(text.contains("# HELP radmfa_radius_requests Verified RADIUS requests"), "{text}");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics page ends with EOF");
}

#[test]
fn a_client_name_cannot_break_the_format() {
    let metrics = Metrics::new();
    metrics.request("evil\"}\nradmfa_fake 1", "Access-Request", "accept", "authenticated");
    let text = metrics.render();
    assert!(!text.lines().any(|l| l.starts_with("radmfa_fake")), "{text}");
}

#[test]
fn latencies_land_in_buckets_by_step() {
    let metrics = Metrics::new();
    metrics.decision(false, Duration::from_millis(30));
    metrics.decision(true, Duration::from_micros(300));
    metrics.decision(true, Duration::from_micros(300));
    let text = metrics.render();
    assert_eq!(value(&text, r#"radmfa_radius_decision_seconds_count{step="code"}"#), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"radmfa_radius_decision_seconds_bucket{le="0.0005",step="code"}"#), Some(2.0), "{text}");
    assert_eq!(value(&text, r#"radmfa_radius_decision_seconds_bucket{le="0.016",step="first"}"#), Some(0.0), "{text}");
    assert_eq!(value(&text, r#"radmfa_radius_decision_seconds_bucket{le="0.032",step="first"}"#), Some(1.0), "{text}");
}

#[test]
fn portal_methods_clients_invent_share_one_series() {
    let metrics = Metrics::new();
    for method in ["BREW", "PROPFIND", "X-ANYTHING"] {
        metrics.portal_request("unmatched", method, 405, Duration::from_millis(1));
    }
    let text = metrics.render();
    assert_eq!(value(&text, r#"radmfa_portal_requests_total{route="unmatched",method="other",status="405"}"#), Some(3.0), "{text}");
}

crate::counters::counters! {
    /// Test counters.
    struct Two {
        /// Things dropped.
        dropped,
        kept,
    }
}

#[test]
fn counter_sets_keep_their_doc_lines_as_help() {
    let metrics = Metrics::new();
    let two = std::sync::Arc::new(Two::default());
    two.dropped.inc();
    let read = std::sync::Arc::clone(&two);
    metrics.watch(CounterSet { prefix: "radius", labels: vec![("gateway", "http")], read: move || read.described() });
    two.dropped.inc();
    assert_eq!(two.snapshot(), [("dropped", 2), ("kept", 0)]);
    let text = metrics.render();
    assert_eq!(value(&text, r#"radmfa_radius_dropped_total{gateway="http"}"#), Some(2.0), "read at the scrape: {text}");
    assert_eq!(value(&text, r#"radmfa_radius_kept_total{gateway="http"}"#), Some(0.0), "{text}");
    assert!(text.contains("# HELP radmfa_radius_dropped Things dropped.\n"), "{text}");
}

#[test]
fn directory_servers_report_their_state_and_connections() {
    let metrics = Metrics::new();
    let server = |url: &str, state| ServerStatus {
        url: url.into(),
        state,
        open: 5,
        idle_service: 2,
        idle_bind: 1,
        in_flight: 2,
        waiting: 0,
        max_connections: 32,
    };
    let status = DirectoryStatus {
        servers: vec![server("ldaps://dc1.example.test", "up"), server("ldaps://dc2.example.test", "skipped")],
        searches: 10,
        binds: 9,
        connects: 4,
        waited: 1,
        wait_seconds: 0.25,
        timed_out: 0,
    };
    metrics.watch(DirectoryWatch(move || Some(status.clone())));
    let text = metrics.render();
    assert_eq!(value(&text, r#"radmfa_directory_server_state{server="ldaps://dc1.example.test",state="up"}"#), Some(1.0), "{text}");
    assert_eq!(value(&text, r#"radmfa_directory_server_state{server="ldaps://dc1.example.test",state="skipped"}"#), Some(0.0));
    assert_eq!(value(&text, r#"radmfa_directory_server_state{server="ldaps://dc2.example.test",state="skipped"}"#), Some(1.0));
    assert_eq!(value(&text, r#"radmfa_directory_connections_open{server="ldaps://dc2.example.test"}"#), Some(5.0));
    assert_eq!(value(&text, r#"radmfa_directory_operations_in_flight{server="ldaps://dc1.example.test"}"#), Some(2.0));
    assert_eq!(value(&text, "radmfa_directory_binds_total"), Some(9.0));
    assert_eq!(value(&text, "radmfa_directory_wait_seconds_total"), Some(0.25), "{text}");
}

#[test]
fn a_users_file_directory_reports_no_servers() {
    let metrics = Metrics::new();
    metrics.watch(DirectoryWatch(|| None));
    assert!(!metrics.render().contains("directory_server_state"));
}

#[tokio::test]
async fn every_series_the_grafana_dashboard_asks_for_exists() {
    use std::sync::Arc;

    use crate::keys::{KeyRing, Keys};
    use crate::store::memory::MemoryStore;

    let metrics = Arc::new(Metrics::new());
    // Each family recorded once, each watched set as the server registers it.
    metrics.request("nas", "Access-Request", "accept", "authenticated");
    metrics.decision(false, Duration::from_millis(1));
    metrics.directory_operation("find", true, Duration::from_millis(1));
    metrics.store_operation("tokens", true, Duration::from_millis(1));
    metrics.sms_attempt("http", true, Duration::from_millis(1));
    metrics.portal_request("/", "GET", 200, Duration::from_millis(1));
    let stats = Arc::new(crate::server::Stats::default());
    metrics.watch(CounterSet { prefix: "radius", labels: Vec::new(), read: move || stats.described() });
    let sms = Arc::new(crate::sms::SmsStats::default());
    metrics.watch(CounterSet { prefix: "sms", labels: Vec::new(), read: move || sms.described() });
    let server = ServerStatus {
        url: "ldaps://dc1.example.test".into(),
        state: "up",
        open: 1,
        idle_service: 1,
        idle_bind: 0,
        in_flight: 0,
        waiting: 0,
        max_connections: 32,
    };
    metrics.watch(DirectoryWatch(move || Some(DirectoryStatus { servers: vec![server.clone()], ..DirectoryStatus::default() })));
    let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::in_memory(Arc::new(Keys::fixed(KeyRing::generate("k1")))));
    metrics.watch(StoreAvailability(Arc::downgrade(&store)));
    let page = metrics.render();

    let dashboard = include_str!("../../contrib/grafana/radmfa-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
    assert_eq!(parsed["uid"], "radmfa");
    let names = regex::Regex::new(r"radmfa_[a-z0-9_]+").unwrap();
    let asked: std::collections::BTreeSet<&str> = names.find_iter(dashboard).map(|m| m.as_str()).collect();
    assert!(asked.len() > 15, "{asked:?}");
    for name in asked {
        assert!(
            page.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
            "the dashboard asks for {name}, which radmfa does not serve:\n{page}"
        );
    }
}
