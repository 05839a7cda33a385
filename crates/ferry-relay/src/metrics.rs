//! What `GET /metrics` shows, in Prometheus' text format (prometheus-client).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a family: one `(name, value)` pair.
type Label = Vec<(&'static str, &'static str)>;

/// The relay's metrics.
pub struct Metrics {
    registry: Registry,
    /// Devices connected now.
    pub connections: Gauge,
    /// Changes devices pushed that the store took.
    pub changes_in: Counter,
    /// Changes sent to devices live.
    pub changes_out: Counter,
    /// Changes served by pulls.
    pub changes_pulled: Counter,
    /// Live frames dropped for a device whose queue was full (it catches up by pulling).
    pub live_dropped: Counter,
    rejects: Family<Label, Counter>,
    store_seconds: Family<Label, Histogram>,
}

/// Why the relay refused something, as the `reason` label.
#[derive(Debug, Clone, Copy)]
pub enum Reject {
    /// A wrong, expired or tampered token.
    Token,
    /// A pull outside the token's scopes.
    Scope,
    /// A change the write rule refused (a scope, a model, a version too far ahead...).
    Write,
    /// A malformed, oversize or unexpected frame.
    Frame,
    /// The relay already serves as many connections as it may.
    Capacity,
    /// A connection past the bounds on those not yet authenticated (overall, per address).
    Admission,
    /// A session that answered no ping within the idle timeout (a half-open link), or
    /// did not read what it was sent within the write timeout.
    Idle,
    /// A session whose place a newer session of the same replica took.
    Replaced,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("ferry_relay"),
            connections: Gauge::default(),
            changes_in: Counter::default(),
            changes_out: Counter::default(),
            changes_pulled: Counter::default(),
            live_dropped: Counter::default(),
            rejects: Family::default(),
            store_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
        };
        let r = &mut metrics.registry;
        r.register(
            "connections",
            "Devices connected",
            metrics.connections.clone(),
        );
        r.register(
            "changes_in",
            "Changes written for devices",
            metrics.changes_in.clone(),
        );
        r.register(
            "changes_out",
            "Changes sent to devices live",
            metrics.changes_out.clone(),
        );
        r.register(
            "changes_pulled",
            "Changes served by pulls",
            metrics.changes_pulled.clone(),
        );
        let dropped = metrics.live_dropped.clone();
        r.register(
            "live_dropped",
            "Live frames dropped for slow devices",
            dropped,
        );
        r.register(
            "rejects",
            "Refused tokens, scopes, frames and connections",
            metrics.rejects.clone(),
        );
        let latency = metrics.store_seconds.clone();
        r.register("store_seconds", "Cloud store call latency", latency);
        metrics
    }
}

impl Metrics {
    /// Counts one refusal.
    pub fn reject(&self, reject: Reject) {
        let reason = match reject {
            Reject::Token => "token",
            Reject::Scope => "scope",
            Reject::Write => "write",
            Reject::Frame => "frame",
            Reject::Capacity => "capacity",
            Reject::Admission => "admission",
            Reject::Idle => "idle",
            Reject::Replaced => "replaced",
        };
        self.rejects.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Records how long a store call (`write` or `read`) took.
    pub fn store_call(&self, op: &'static str, seconds: f64) {
        self.store_seconds
            .get_or_create(&vec![("op", op)])
            .observe(seconds);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
