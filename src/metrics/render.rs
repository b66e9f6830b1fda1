//! One scrape's text: the process's counters and histograms, plus the values read from
//! the daemon at scrape time ([`Snapshot`]), encoded by prometheus-client.
//!
//! prometheus-client writes OpenMetrics 1.0 text. Scrapers that ask for it (Prometheus
//! does, in its Accept header) get exactly that. Everyone else (curl, older agents) gets
//! the Prometheus text format 0.0.4, which differs from OpenMetrics here in three ways
//! only, all rewritten line by line: a counter family is named with its `_total` suffix,
//! there are no `# UNIT` lines, and there is no `# EOF`.

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::metrics;

/// The text format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the client's Accept header lists it, else Prometheus 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// What is read from the daemon's state at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub cache_entries: usize,
    /// Upstreams with a live connection or no failed attempt since their last success.
    pub upstreams_up: usize,
    pub upstreams_configured: usize,
    pub connections: Vec<UpstreamConnections>,
}

/// Live connections to one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConnections {
    pub upstream: String,
    pub tls: usize,
    pub plain: usize,
    pub https: usize,
    /// The upstream may use clear text (opportunistic): its `plain` series is shown.
    pub plain_possible: bool,
    /// The upstream serves DNS over HTTPS (`https_port`): its `https` series is shown.
    pub https_possible: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    upstream: String,
    transport: &'static str,
}

fn gauge(value: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// The whole scrape body in `format`.
pub fn render(snapshot: &Snapshot, format: Format) -> String {
    let mut scraped = Registry::with_prefix("stubborn");
    scraped.register("cache_entries", "Answers in the cache now", gauge(snapshot.cache_entries));
    scraped.register(
        "upstreams_up",
        "Upstreams with a live connection or no failed attempt since their last success",
        gauge(snapshot.upstreams_up),
    );
    scraped.register("upstreams_configured", "Upstreams in the config", gauge(snapshot.upstreams_configured));
    let connections = Family::<ConnectionLabels, Gauge>::default();
    for c in &snapshot.connections {
        let mut series = vec![("tls", c.tls)];
        if c.plain_possible || c.plain > 0 {
            series.push(("plain", c.plain));
        }
        if c.https_possible || c.https > 0 {
            series.push(("https", c.https));
        }
        for (transport, n) in series {
            connections
                .get_or_create(&ConnectionLabels { upstream: c.upstream.clone(), transport })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    scraped.register(
        "upstream_connections",
        "Upstream connections up (primary and warm spare), by upstream and transport",
        connections,
    );
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = text::encode_registry(&mut out, metrics().registry());
    let _ = text::encode_registry(&mut out, &scraped);
    match format {
        Format::OpenMetrics => {
            let _ = text::encode_eof(&mut out);
            out
        }
        Format::Prometheus => to_prometheus_004(&out),
    }
}

/// Rewrites OpenMetrics text from prometheus-client into Prometheus text format 0.0.4.
fn to_prometheus_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which says whether the family is a counter.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let family = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            if let Some(help_line) = help.take() {
                let text = help_line.strip_prefix("# HELP ").and_then(|h| h.strip_prefix(name)).unwrap_or("");
                out.push_str(&format!("# HELP {family}{text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
    }

    #[test]
    fn counters_get_their_total_suffix_and_openmetrics_lines_go() {
        let om = "# HELP stubborn_hits Hits.\n# TYPE stubborn_hits counter\nstubborn_hits_total 3\n\
                  # HELP stubborn_rtt_seconds RTT.\n# TYPE stubborn_rtt_seconds histogram\n\
                  # UNIT stubborn_rtt_seconds seconds\nstubborn_rtt_seconds_sum 0.5\n\
                  # HELP stubborn_entries Entries.\n# TYPE stubborn_entries gauge\nstubborn_entries 7\n# EOF\n";
        assert_eq!(
            to_prometheus_004(om),
            "# HELP stubborn_hits_total Hits.\n# TYPE stubborn_hits_total counter\nstubborn_hits_total 3\n\
             # HELP stubborn_rtt_seconds RTT.\n# TYPE stubborn_rtt_seconds histogram\n\
             stubborn_rtt_seconds_sum 0.5\n\
             # HELP stubborn_entries Entries.\n# TYPE stubborn_entries gauge\nstubborn_entries 7\n"
        );
    }

    #[test]
    fn a_scrape_has_every_family_in_both_formats() {
        let snapshot = Snapshot {
            cache_entries: 4,
            upstreams_up: 1,
            upstreams_configured: 2,
            connections: vec![
                UpstreamConnections {
                    upstream: "a".into(),
                    tls: 1,
                    plain: 0,
                    https: 0,
                    plain_possible: false,
                    https_possible: false,
                },
                UpstreamConnections {
                    upstream: "lan".into(),
                    tls: 0,
                    plain: 1,
                    https: 0,
                    plain_possible: true,
                    https_possible: false,
                },
            ],
        };
        // Labelled families appear once they have a series.
        metrics().upstream_rtt("unit").observe(0.01);
        metrics().attempt("ready", "tls");
        metrics().pin_mismatch("unit");
        let om = render(&snapshot, Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let prom = render(&snapshot, Format::Prometheus);
        assert!(!prom.contains("# EOF") && !prom.contains("# UNIT"), "{prom}");
        for needle in [
            "# TYPE stubborn_queries_total counter",
            "stubborn_queries_total{transport=\"udp\",rcode=\"NOERROR\"}",
            "# TYPE stubborn_cache_hits_total counter",
            "# TYPE stubborn_upstream_rtt_seconds histogram",
            "# TYPE stubborn_race_attempts_total counter",
            "# TYPE stubborn_hedges_sent_total counter",
            "# TYPE stubborn_hedges_won_total counter",
            "# TYPE stubborn_upstream_plain_queries_total counter",
            "# TYPE stubborn_pin_mismatches_total counter",
            "stubborn_cache_entries 4",
            "stubborn_upstreams_up 1",
            "stubborn_upstream_connections{upstream=\"a\",transport=\"tls\"} 1",
            "stubborn_upstream_connections{upstream=\"lan\",transport=\"plain\"} 1",
        ] {
            assert!(prom.contains(needle), "{needle} missing:\n{prom}");
        }
        assert!(
            !prom.contains("upstream=\"a\",transport=\"plain\""),
            "strict upstreams show no plain series"
        );
    }
}
