//! Output the way the docker CLI prints it: tab-aligned tables, "2 minutes ago",
//! JSON inspect arrays.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use crate::template::{Template, go_json};

/// docker's tabwriter: `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Columns aligned like Go's tabwriter as docker configures it: a column is as wide as
/// its widest cell plus 3 spaces, and at least 10; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .map(|w| (w + PADDING).max(MIN_WIDTH))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn to_system_time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// RFC 3339 with nanoseconds, trailing zeros dropped, as docker's inspect prints times
/// (Go's `time.RFC3339Nano`: "2020-06-20T05:57:17.57684293Z").
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    to_system_time(ts)
        .map(|t| {
            let full = humantime::format_rfc3339_nanos(t).to_string();
            let body = full.trim_end_matches('Z');
            match body.split_once('.') {
                Some((secs, frac)) => {
                    let frac = frac.trim_end_matches('0');
                    if frac.is_empty() {
                        format!("{secs}Z")
                    } else {
                        format!("{secs}.{frac}Z")
                    }
                }
                None => full,
            }
        })
        .unwrap_or_default()
}

/// docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = minutes / 60;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// "5 minutes ago", or "" without a time.
pub fn ago(ts: Option<&prost_types::Timestamp>) -> String {
    to_system_time(ts)
        .map(|t| {
            let elapsed = SystemTime::now().duration_since(t).unwrap_or_default();
            format!("{} ago", human_duration(elapsed))
        })
        .unwrap_or_default()
}

/// Base64 (standard alphabet, padded), as docker's inspect shows data.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// docker's `formatter.PrettyPrint` on a string: first letter upper case, the rest
/// lower case ("READY" / "ready" → "Ready").
pub fn pretty(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) if s.chars().count() == 1 => first.to_lowercase().collect(),
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
    }
}

/// The lower-case name of a protobuf enum value without its type prefix:
/// `TASK_STATE_RUNNING` with prefix `TASK_STATE_` → `running`.
pub fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Natural order as docker sorts names (`sortorder.NaturalLess`): runs of digits
/// compare by value, everything else byte by byte ("node2" < "node10").
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            // Digits before anything else.
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if da {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = trim_zeros(&a[si..i]);
            let nb = trim_zeros(&b[sj..j]);
            let by_value = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if by_value != Ordering::Equal {
                return by_value;
            }
            // Equal values: fewer leading zeros first.
            let by_len = (i - si).cmp(&(j - sj));
            if by_len != Ordering::Equal {
                return by_len;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

/// docker's `units.BytesSize`: binary units with 4 significant digits ("3.686GiB",
/// "20MiB").
pub fn bytes_size(bytes: i64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", format_g4(size), UNITS[unit])
}

/// Go's `%.4g` for values the size units produce (0 ≤ v < 10000).
fn format_g4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    let decimals = usize::try_from((3 - exp).max(0)).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A time as Go's `time.Time.String()` shows a UTC time, after docker's `PrettyPrint`
/// ("2020-06-20 05:57:17.57684293 +0000 utc").
pub fn go_time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = to_system_time(ts) else {
        return "0001-01-01 00:00:00 +0000 utc".into();
    };
    // 2020-06-20T05:57:17.576842930Z
    let rfc = humantime::format_rfc3339_nanos(t).to_string();
    let rfc = rfc.trim_end_matches('Z');
    let (date_time, frac) = rfc.split_once('.').unwrap_or((rfc, ""));
    let frac = frac.trim_end_matches('0');
    let mut out = date_time.replacen('T', " ", 1);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.push_str(" +0000 utc");
    out
}

/// docker's short ids: the first 12 characters.
pub fn truncate_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// docker's `formatter.Ellipsis`: at most `max` characters, the last one `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max || max == 0 {
        return if max == 0 { String::new() } else { s.into() };
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// JSON indented with 4 spaces, as docker's inspect prints it.
pub fn json_indented(value: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    if value.serialize(&mut ser).is_err() {
        return "[]".into();
    }
    String::from_utf8(buf).unwrap_or_else(|_| "[]".into())
}

/// Go's `time.Duration.String`: "5s", "1m30s", "1h0m0s", "300ms", "1.5s", "0s".
pub fn go_duration(d: Duration) -> String {
    fn frac(whole: u128, rem: u128, digits: u32) -> String {
        let rem = format!("{rem:0width$}", width = digits as usize);
        let rem = rem.trim_end_matches('0');
        if rem.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{rem}")
        }
    }
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let s = format!("{}s", frac(s, sub, 9));
    if h > 0 {
        format!("{h}h{m}m{s}")
    } else if m > 0 {
        format!("{m}m{s}")
    } else {
        s
    }
}

/// An object's id from its meta ("" without one).
pub fn meta_id(meta: Option<&shoal_proto::v1::Meta>) -> &str {
    meta.map(|m| m.id.as_str()).unwrap_or("")
}

/// An object's name from its spec's annotations ("" without them).
pub fn annotations_name(annotations: Option<&shoal_proto::v1::Annotations>) -> &str {
    annotations.map(|a| a.name.as_str()).unwrap_or("")
}

/// docker's formatter: `table` (the default table), `table TEMPLATE` (a header row from
/// the column names, aligned), `json` (one object per line) or a bare template per row.
pub fn formatted(
    rows: &[serde_json::Value],
    headers: &serde_json::Value,
    format: Option<&str>,
    default_table: &str,
) -> anyhow::Result<String> {
    let format = match format.map(str::trim) {
        None | Some("") | Some("table") => default_table,
        Some("json") => {
            return Ok(rows.iter().map(|r| format!("{}\n", go_json(r))).collect());
        }
        Some(other) => other,
    };
    // docker takes `\t` and `\n` typed on a command line as tab and newline.
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start_matches(' ').to_string()),
        None => (false, format),
    };
    let template = Template::parse(&body)?;
    let mut lines = Vec::new();
    for r in rows {
        lines.push(template.execute(r)?);
    }
    if !table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let header = template.execute(headers)?;
    let cols: Vec<String> = header.split('\t').map(str::to_string).collect();
    let mut t = Table::new(&cols.iter().map(String::as_str).collect::<Vec<_>>());
    for line in lines {
        t.row(line.split('\t').map(str::to_string).collect());
    }
    Ok(t.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(36)), "36 seconds");
        assert_eq!(human_duration(Duration::from_secs(61)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(60 * 5)), "5 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600 * 3)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3600 * 24 * 3)), "3 days");
    }

    #[test]
    fn table_aligns_with_three_spaces() {
        let mut t = Table::new(&["ID", "NAME", "X"]);
        t.row(vec!["abc".into(), "web".into(), "1".into()]);
        t.row(vec!["0123456789ab".into(), "".into(), "2".into()]);
        assert_eq!(
            t.render(),
            "ID             NAME      X\nabc            web       1\n0123456789ab             2\n"
        );
    }

    #[test]
    fn pretty_prints_like_docker() {
        assert_eq!(pretty("READY"), "Ready");
        assert_eq!(pretty("reachable"), "Reachable");
        assert_eq!(pretty("x"), "x");
        assert_eq!(pretty(""), "");
        assert_eq!(enum_word("TASK_STATE_RUNNING", "TASK_STATE_"), "running");
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["node10", "node2", "manager", "node1", "node02", "Node3"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            vec!["Node3", "manager", "node1", "node2", "node02", "node10"]
        );
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_eq!(natural_cmp("a", "ab"), Ordering::Less);
    }

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(bytes_size(3958075392), "3.686GiB");
        assert_eq!(bytes_size(20 * 1024 * 1024), "20MiB");
        assert_eq!(bytes_size(512), "512B");
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1023 * 1024 + 1000), "1024KiB");
        assert_eq!(bytes_size(1536), "1.5KiB");
    }

    #[test]
    fn rfc3339_like_go() {
        let ts = prost_types::Timestamp {
            seconds: 1592632637,
            nanos: 576842930,
        };
        assert_eq!(rfc3339(Some(&ts)), "2020-06-20T05:57:17.57684293Z");
        let whole = prost_types::Timestamp {
            seconds: 1592632637,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&whole)), "2020-06-20T05:57:17Z");
        assert_eq!(rfc3339(None), "");
    }

    #[test]
    fn go_time_strings() {
        let ts = prost_types::Timestamp {
            seconds: 1592632637,
            nanos: 576842930,
        };
        assert_eq!(go_time(Some(&ts)), "2020-06-20 05:57:17.57684293 +0000 utc");
        let whole = prost_types::Timestamp {
            seconds: 1257894000,
            nanos: 0,
        };
        assert_eq!(go_time(Some(&whole)), "2009-11-10 23:00:00 +0000 utc");
    }

    #[test]
    fn ellipsis_and_ids() {
        assert_eq!(ellipsis("short", 30), "short");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(truncate_id("yf5uqm1kzx6dbt7n26e4akhsu"), "yf5uqm1kzx6d");
    }

    #[test]
    fn json_uses_four_spaces() {
        let v = serde_json::json!([{"ID": "x", "Labels": {}}]);
        assert_eq!(
            json_indented(&v),
            "[\n    {\n        \"ID\": \"x\",\n        \"Labels\": {}\n    }\n]"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"port=80"), "cG9ydD04MA==");
    }
}
