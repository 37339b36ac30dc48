//! Prometheus metrics: the families wharf counts as it works, and the text exposition.
//!
//! Counters and histograms live in [`Metrics`] and are updated where the event happens, once: the
//! request log ([`crate::server::log`]) counts every downstream request and its bytes, the upstream
//! client counts every request it sends. Values that other parts of wharf own (fills in flight, the
//! upstreams' rate limits, the cache's size) are not copied into gauges as they change but
//! read when `/metrics` is scraped, by a [`Collector`] the caller of [`Metrics::encode`] passes
//! (see `admin::Live`).
//!
//! Families (all prefixed `wharf_`):
//! - `http_requests_total{route,method,status,cache}`: downstream requests; `route` is `manifest`,
//!   `blob`, `tags`, `referrers`, `base` or `other`, `cache` the `X-Cache` outcome or `none`.
//! - `http_response_bytes_total{cache}`: body bytes sent, by cache outcome.
//! - `coalesced_requests_total`: requests that followed a download another request started.
//! - `upstream_requests_total{upstream,method,status}`: requests sent to upstreams (redirect hops
//!   and token requests included); `status` is the HTTP status or `error` for transport failures.
//! - `upstream_request_duration_seconds{upstream,method}`: time to the upstream's response headers.
//! - `client_auth_failures_total`: requests with wrong or malformed credentials.
//! - `reloads_total{what,result}`: configuration (`what="configuration"`), certificate and
//!   htpasswd reloads, `ok` or `error`.
//! - `build_info{version}`: always 1.
//!
//! Read at scrape time by `admin::Live`: `fills_in_flight`, `upstream_rate_limit_{remaining,limit}`,
//! `cache_bytes`, `cache_entries`, `cache_max_bytes`, `evictions_total`, `evicted_bytes_total`,
//! `storage_free_bytes`, `storage_paused`, `storage_failures_total`; with a shared object store,
//! `shared_store_paused`, `shared_store_reads_total`, `shared_store_writes_total`,
//! `shared_store_failures_total`.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metric families of one running wharf.
pub struct Metrics {
    registry: Registry,
    /// Downstream requests.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Downstream body bytes.
    pub http_response_bytes: Family<CacheLabel, Counter>,
    /// Requests that joined a fill in flight.
    pub coalesced_requests: Counter,
    /// Upstream requests.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    /// Upstream latency to headers.
    pub upstream_duration: Family<UpstreamMethod, Histogram>,
    /// Wrong or malformed client credentials.
    pub client_auth_failures: Counter,
    /// Reloads of files.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections closed at once because their address held `max_connections_per_ip`.
    pub connections_refused: Counter,
    /// What the status page shows of the traffic (pull charts, top lists, failed requests, sync
    /// runs): kept here so it lives as long as the metrics, across configuration reloads.
    pub activity: crate::activity::Activity,
}

/// Labels of `wharf_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `manifest`, `blob`, `tags`, `referrers`, `base` or `other`.
    pub route: &'static str,
    /// The HTTP method (`other` for anything unusual, to bound the label's values).
    pub method: &'static str,
    /// The status code.
    pub status: u16,
    /// The cache outcome, or `none`.
    pub cache: &'static str,
}

/// The cache outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// The cache outcome, or `none`.
    pub cache: &'static str,
}

/// Labels of `wharf_upstream_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream's configured name.
    pub upstream: String,
    /// The HTTP method.
    pub method: &'static str,
    /// The status code, or `error`.
    pub status: UpstreamStatus,
}

/// Labels of `wharf_upstream_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamMethod {
    /// The upstream's configured name.
    pub upstream: String,
    /// The HTTP method.
    pub method: &'static str,
}

/// An upstream request's outcome.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UpstreamStatus {
    /// A response with this status.
    Code(u16),
    /// No response: the connection failed or timed out.
    Error,
}

/// Labels of `wharf_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `TLS certificate` or `htpasswd`.
    pub what: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wharf");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests served, by route, method, status and cache outcome",
            http_requests.clone(),
        );
        let http_response_bytes = Family::<CacheLabel, Counter>::default();
        registry.register(
            "http_response_bytes",
            "Response body bytes sent, by cache outcome",
            http_response_bytes.clone(),
        );
        let coalesced_requests = Counter::default();
        registry.register(
            "coalesced_requests",
            "Requests that followed a download another request had started",
            coalesced_requests.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstream registries, by upstream, method and status (error: no response)",
            upstream_requests.clone(),
        );
        let upstream_duration = Family::<UpstreamMethod, Histogram>::new_with_constructor(|| {
            // 5 ms to about 20 s.
            Histogram::new(exponential_buckets(0.005, 2.5, 10))
        });
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request to an upstream to its response headers",
            upstream_duration.clone(),
        );
        let client_auth_failures = Counter::default();
        registry.register(
            "client_auth_failures",
            "Client requests with wrong or malformed credentials",
            client_auth_failures.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of the TLS certificate and the htpasswd file, by result",
            reloads.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed at once because their address held server.max_connections_per_ip",
            connections_refused.clone(),
        );
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "wharf's version", build_info);
        Self {
            registry,
            http_requests,
            http_response_bytes,
            coalesced_requests,
            upstream_requests,
            upstream_duration,
            client_auth_failures,
            reloads,
            connections_open,
            connections_refused,
            activity: crate::activity::Activity::new(),
        }
    }

    /// Counts a connection refused for its address's cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts one downstream request once its response is done.
    pub fn request(&self, labels: RequestLabels, bytes: u64) {
        if labels.cache == "coalesced" {
            self.coalesced_requests.inc();
        }
        self.http_response_bytes
            .get_or_create(&CacheLabel {
                cache: labels.cache,
            })
            .inc_by(bytes);
        self.http_requests.get_or_create(&labels).inc();
    }

    /// Counts one upstream request and its time to headers.
    pub fn upstream(
        &self,
        upstream: &str,
        method: &http::Method,
        status: UpstreamStatus,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
                method,
                status,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&UpstreamMethod {
                upstream: upstream.to_owned(),
                method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a reload.
    pub fn reloaded(&self, what: &'static str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The exposition: every family, then what `live` reads at this moment (under the same
    /// `wharf_` prefix).
    pub fn encode(&self, live: impl Collector) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut scrape = Registry::with_prefix("wharf");
        scrape.register_collector(Box::new(live));
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scrape);
        let _ = encode_eof(&mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The method as a label with a bounded set of values.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

// === impl UpstreamStatus ===

impl EncodeLabelValue for UpstreamStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self {
            Self::Code(code) => write!(encoder, "{code}"),
            Self::Error => encoder.write_str("error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::gauge::ConstGauge;

    #[derive(Debug)]
    struct Live;

    impl Collector for Live {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(7i64);
            g.encode(encoder.encode_descriptor("live_thing", "help", None, g.metric_type())?)
        }
    }

    #[test]
    fn exposition_has_every_family_and_the_live_values() {
        let m = Metrics::new();
        m.request(
            RequestLabels {
                route: "blob",
                method: "GET",
                status: 200,
                cache: "coalesced",
            },
            100,
        );
        m.upstream(
            "docker.io",
            &http::Method::GET,
            UpstreamStatus::Error,
            Duration::from_millis(3),
        );
        let text = m.encode(Live);
        for line in [
            "wharf_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\",cache=\"coalesced\"} 1",
            "wharf_http_response_bytes_total{cache=\"coalesced\"} 100",
            "wharf_coalesced_requests_total 1",
            "wharf_upstream_requests_total{upstream=\"docker.io\",method=\"GET\",status=\"error\"} 1",
            "wharf_upstream_request_duration_seconds_count{upstream=\"docker.io\",method=\"GET\"} 1",
            "wharf_live_thing 7",
            "wharf_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
