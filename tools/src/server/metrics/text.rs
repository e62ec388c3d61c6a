//! OpenMetrics text to the Prometheus text format (version 0.0.4).
//!
//! `prometheus-client` writes OpenMetrics, where a counter family `x` has
//! samples `x_total`. The Prometheus text parser (`promtool check metrics`,
//! scrapers that do not ask for OpenMetrics) reads a sample whose name
//! differs from its family's as a new family without HELP or TYPE. So a
//! counter's HELP and TYPE name `x_total`, `unknown` becomes `untyped`, and
//! the `# UNIT` and `# EOF` lines (OpenMetrics only) go.

/// Rewrites one OpenMetrics exposition as the Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP line waits for its TYPE line, which tells how to name it.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = rest.split_once(' ').or(Some((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            flush_help(&mut out, help.take(), Some(&name));
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, help.take(), None);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, help, None);
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, renamed: Option<&str>) {
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {} {text}\n", renamed.unwrap_or(name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let openmetrics =
            "# HELP a_requests Requests served.\n# TYPE a_requests counter\na_requests_total{route=\"/\"} 3\n\
# HELP a_wait_seconds Waits.\n# TYPE a_wait_seconds histogram\n# UNIT a_wait_seconds seconds\n\
a_wait_seconds_sum 0.5\na_wait_seconds_count 1\na_wait_seconds_bucket{le=\"+Inf\"} 1\n\
# HELP a_head Head.\n# TYPE a_head gauge\na_head 7\n# HELP a_odd Odd.\n# TYPE a_odd unknown\na_odd 1\n# EOF\n";
        let expected = "# HELP a_requests_total Requests served.\n# TYPE a_requests_total counter\na_requests_total{route=\"/\"} 3\n\
# HELP a_wait_seconds Waits.\n# TYPE a_wait_seconds histogram\n\
a_wait_seconds_sum 0.5\na_wait_seconds_count 1\na_wait_seconds_bucket{le=\"+Inf\"} 1\n\
# HELP a_head Head.\n# TYPE a_head gauge\na_head 7\n# HELP a_odd Odd.\n# TYPE a_odd untyped\na_odd 1\n";
        assert_eq!(to_prometheus_text(openmetrics), expected);
    }
}
