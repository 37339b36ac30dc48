//! `wharf status` in the terminal: a [`StatusReport`] as aligned tables, one section each (cache,
//! value, upstreams, fills, top, pins, sync, errors), coloured only when asked (stdout is a
//! terminal). Pure, so the tests compare the text.

use std::fmt::Write as _;

use super::report::{Counts, StatusReport};
use crate::size::format_size;

/// ANSI styles, or nothing.
#[derive(Clone, Copy)]
struct Paint(bool);

// === impl Paint ===

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn title(self, text: &str) -> String {
        self.wrap("1;36", text)
    }

    fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
}

/// A column's cells are left-aligned, or right-aligned (numbers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A cell: its text and, when coloured, the style applied after padding.
struct Cell {
    text: String,
    style: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, style: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            style: None,
        }
    }
}

fn styled(text: impl Into<String>, style: &'static str) -> Cell {
    Cell {
        text: text.into(),
        style: Some(style),
    }
}

/// The whole report, as `wharf status` prints it.
pub fn render(report: &StatusReport, colour: bool) -> String {
    let paint = Paint(colour);
    let mut out = String::new();
    let now = report.now;
    let _ = writeln!(
        out,
        "{} {} (up {})",
        paint.bold("wharf"),
        report.version,
        duration(now.saturating_sub(report.started))
    );

    section(&mut out, paint, "Cache");
    let c = &report.cache;
    let mut rows: Vec<Vec<Cell>> = vec![vec![
        "stored".into(),
        match c.max_bytes {
            Some(max) => format!(
                "{} of {} ({}%)",
                format_size(c.bytes),
                format_size(max),
                percent(c.bytes, max)
            ),
            None => format!("{} (no max_size)", format_size(c.bytes)),
        }
        .into(),
    ]];
    if let (Some(high), Some(low)) = (c.high_watermark_bytes, c.low_watermark_bytes) {
        rows.push(vec![
            "watermarks".into(),
            format!(
                "evicts above {} down to {}",
                format_size(high),
                format_size(low)
            )
            .into(),
        ]);
    }
    rows.push(vec!["entries".into(), c.entries.to_string().into()]);
    rows.push(vec!["pinned".into(), format_size(c.pinned_bytes).into()]);
    rows.push(vec![
        "evictions".into(),
        format!("{} ({})", c.evictions, format_size(c.evicted_bytes)).into(),
    ]);
    if let Some(free) = c.free_bytes {
        rows.push(vec!["free space".into(), format_size(free).into()]);
    }
    rows.push(vec![
        "caching".into(),
        if c.paused {
            styled("paused (storage failure or min_free)", "31")
        } else {
            styled("on", "32")
        },
    ]);
    table(&mut out, paint, None, &[Align::Left, Align::Left], rows);

    section(&mut out, paint, "Value");
    let hour = sum(&report.value.hour.points);
    let day = sum(&report.value.day.points);
    let rows = [
        ("last hour", hour),
        ("last day", day),
        ("since start", report.value.total),
    ]
    .into_iter()
    .map(|(name, n)| {
        vec![
            name.into(),
            n.hits.to_string().into(),
            n.misses.to_string().into(),
            format!("{}%", percent(n.hits, n.hits + n.misses)).into(),
            format_size(n.hit_bytes).into(),
            format_size(n.miss_bytes).into(),
        ]
    })
    .collect();
    table(
        &mut out,
        paint,
        Some(&[
            "",
            "hits",
            "misses",
            "hit ratio",
            "from cache (saved)",
            "from upstream",
        ]),
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
        rows,
    );

    section(&mut out, paint, "Upstreams");
    let rows = report
        .upstreams
        .iter()
        .map(|u| {
            let state = if u.offline {
                styled("offline", "33")
            } else {
                match u.reachable {
                    None => "not asked yet".into(),
                    Some(true) => styled("reachable", "32"),
                    Some(false) => styled("unreachable", "31"),
                }
            };
            let last_error = match (&u.last_error, u.last_error_at) {
                (Some(e), Some(at)) => styled(format!("{e} ({})", ago(now, at)), "31"),
                (Some(e), None) => styled(e.clone(), "31"),
                _ => "-".into(),
            };
            vec![
                u.name.as_str().into(),
                u.url.as_str().into(),
                state,
                u.backoff_seconds
                    .map_or_else(|| "-".into(), |s| styled(format!("{s} s"), "33")),
                match (u.rate_limit_remaining, u.rate_limit_limit) {
                    (Some(r), Some(l)) => format!("{r}/{l}").into(),
                    _ => "-".into(),
                },
                last_error,
            ]
        })
        .collect();
    table(
        &mut out,
        paint,
        Some(&[
            "name",
            "url",
            "state",
            "back-off",
            "rate limit",
            "last error",
        ]),
        &[Align::Left; 6],
        rows,
    );

    section(&mut out, paint, "Fills in flight");
    if report.fills.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = report
            .fills
            .iter()
            .map(|f| {
                vec![
                    f.digest.as_str().into(),
                    format!("{}/{}", f.upstream, f.repository).into(),
                    match f.size {
                        Some(size) => format!(
                            "{} of {} ({}%)",
                            format_size(f.received),
                            format_size(size),
                            percent(f.received, size)
                        ),
                        None => format_size(f.received),
                    }
                    .into(),
                    f.clients.to_string().into(),
                    duration(now.saturating_sub(f.started)).into(),
                ]
            })
            .collect();
        table(
            &mut out,
            paint,
            Some(&["digest", "repository", "received", "clients", "running"]),
            &[
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Right,
            ],
            rows,
        );
    }

    section(
        &mut out,
        paint,
        &format!("Top (last {})", duration(report.top.window)),
    );
    for (title, list) in [
        ("repositories by pulls", &report.top.repositories_by_pulls),
        ("repositories by bytes", &report.top.repositories_by_bytes),
        ("images by pulls", &report.top.images_by_pulls),
        ("images by bytes", &report.top.images_by_bytes),
    ] {
        let _ = writeln!(out, "  {}", paint.bold(title));
        if list.is_empty() {
            out.push_str("    none\n");
            continue;
        }
        let rows = list
            .iter()
            .map(|e| {
                vec![
                    e.name.as_str().into(),
                    e.pulls.to_string().into(),
                    format_size(e.bytes).into(),
                ]
            })
            .collect();
        table(
            &mut out,
            paint,
            Some(&["name", "pulls", "bytes"]),
            &[Align::Left, Align::Right, Align::Right],
            rows,
        );
    }

    section(&mut out, paint, "Pins");
    if report.pins.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = report
            .pins
            .iter()
            .map(|p| vec![p.image.as_str().into(), p.source.as_str().into()])
            .collect();
        table(
            &mut out,
            paint,
            Some(&["image", "source"]),
            &[Align::Left, Align::Left],
            rows,
        );
    }

    section(&mut out, paint, "Sync");
    if report.sync.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = report
            .sync
            .iter()
            .map(|s| {
                let last = s.last_run.as_ref().map_or_else(
                    || "not run yet".to_owned(),
                    |r| {
                        format!(
                            "{}: {} images, {} changed, {} failed, {} blobs ({})",
                            ago(now, r.started),
                            r.images,
                            r.changed.len(),
                            r.failed,
                            r.blobs_fetched,
                            format_size(r.bytes_fetched)
                        )
                    },
                );
                vec![
                    s.entry.to_string().into(),
                    s.images.join(", ").into(),
                    duration(s.interval).into(),
                    last.into(),
                ]
            })
            .collect();
        table(
            &mut out,
            paint,
            Some(&["entry", "images", "every", "last run"]),
            &[Align::Right, Align::Left, Align::Right, Align::Left],
            rows,
        );
        for s in &report.sync {
            for changed in s.last_run.iter().flat_map(|r| &r.changed) {
                let _ = writeln!(out, "  [{}] {changed}", s.entry);
            }
        }
    }

    section(&mut out, paint, "Recent errors");
    if report.errors.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = report
            .errors
            .iter()
            .map(|e| {
                vec![
                    ago(now, e.at).into(),
                    e.request_id.as_str().into(),
                    styled(e.status.to_string(), "31"),
                    format!("{} {}", e.method, e.path).into(),
                    e.code.as_deref().unwrap_or("-").into(),
                    e.message.as_str().into(),
                ]
            })
            .collect();
        table(
            &mut out,
            paint,
            Some(&["when", "request id", "status", "request", "code", "message"]),
            &[
                Align::Right,
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Left,
            ],
            rows,
        );
    }
    out
}

fn section(out: &mut String, paint: Paint, title: &str) {
    let _ = writeln!(out, "\n{}", paint.title(title));
}

/// Writes `rows` under `headers`, each column as wide as its widest cell, two spaces apart.
fn table(
    out: &mut String,
    paint: Paint,
    headers: Option<&[&str]>,
    align: &[Align],
    rows: Vec<Vec<Cell>>,
) {
    let columns = align.len();
    let mut widths = vec![0; columns];
    for (i, h) in headers.unwrap_or(&[]).iter().enumerate() {
        widths[i] = widths[i].max(h.chars().count());
    }
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<(String, Option<&'static str>)>| {
        let mut text = String::from("  ");
        for (i, (cell, style)) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let last = i + 1 == columns;
            let padded = match align[i] {
                Align::Right => format!("{}{cell}", " ".repeat(pad)),
                Align::Left if last => cell,
                Align::Left => format!("{cell}{}", " ".repeat(pad)),
            };
            match style {
                Some(code) => text.push_str(&paint.wrap(code, &padded)),
                None => text.push_str(&padded),
            }
            if !last {
                text.push_str("  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    if let Some(headers) = headers {
        line(
            out,
            headers
                .iter()
                .map(|h| ((*h).to_owned(), Some("1")))
                .collect(),
        );
    }
    for row in rows {
        line(out, row.into_iter().map(|c| (c.text, c.style)).collect());
    }
}

fn sum(points: &[Counts]) -> Counts {
    points.iter().fold(Counts::default(), |a, p| Counts {
        hits: a.hits + p.hits,
        misses: a.misses + p.misses,
        hit_bytes: a.hit_bytes + p.hit_bytes,
        miss_bytes: a.miss_bytes + p.miss_bytes,
    })
}

/// `part` of `whole` in whole percent (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        u64::try_from(u128::from(part) * 100 / u128::from(whole)).unwrap_or(u64::MAX)
    }
}

/// `90 s`, `5 min`, `3 h`, `2 d`.
fn duration(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

fn ago(now: u64, at: u64) -> String {
    format!("{} ago", duration(now.saturating_sub(at)))
}

#[cfg(test)]
mod tests {
    use super::super::report::*;
    use super::*;

    fn report() -> StatusReport {
        let counts = Counts {
            hits: 3,
            misses: 1,
            hit_bytes: 3072,
            miss_bytes: 1024,
        };
        StatusReport {
            version: "1.2.3".into(),
            now: 1000,
            started: 900,
            cache: CacheStatus {
                bytes: 50,
                entries: 2,
                max_bytes: Some(100),
                high_watermark_bytes: Some(90),
                low_watermark_bytes: Some(80),
                pinned_bytes: 0,
                evictions: 1,
                evicted_bytes: 10,
                free_bytes: None,
                paused: false,
            },
            value: ValueStatus {
                total: counts,
                hour: Series {
                    step: 60,
                    end: 1020,
                    points: vec![counts],
                },
                day: Series {
                    step: 600,
                    end: 1200,
                    points: vec![counts],
                },
            },
            upstreams: vec![UpstreamStatus {
                name: "hub".into(),
                url: "https://registry-1.docker.io/".into(),
                offline: false,
                reachable: Some(true),
                last_ok: Some(990),
                last_error: Some("answered 429 Too Many Requests".into()),
                last_error_at: Some(940),
                backoff_seconds: Some(30),
                rate_limit_remaining: Some(7),
                rate_limit_limit: Some(100),
            }],
            fills: vec![],
            top: TopStatus {
                window: 86_400,
                repositories_by_pulls: vec![TopEntry {
                    name: "hub/library/alpine".into(),
                    pulls: 2,
                    bytes: 2048,
                }],
                repositories_by_bytes: vec![],
                images_by_pulls: vec![],
                images_by_bytes: vec![],
            },
            pins: vec![],
            sync: vec![],
            errors: vec![ErrorStatus {
                at: 995,
                request_id: "abc".into(),
                method: "GET".into(),
                path: "/v2/x/blobs/sha256:00".into(),
                status: 502,
                code: Some("UNAVAILABLE".into()),
                message: "upstream hub answered 503".into(),
            }],
        }
    }

    #[test]
    fn tables_are_aligned_and_plain_without_colour() {
        let text = render(&report(), false);
        assert!(!text.contains('\x1b'), "{text}");
        for line in [
            "wharf 1.2.3 (up 100 s)",
            "  stored      50 B of 100 B (50%)",
            "  evictions   1 (10 B)",
            "               hits  misses  hit ratio  from cache (saved)  from upstream",
            "  last hour       3       1        75%             3.0 KiB        1.0 KiB",
            "  hub   https://registry-1.docker.io/  reachable  30 s      7/100       answered 429 Too Many Requests (60 s ago)",
            "  hub/library/alpine      2  2.0 KiB",
            "  5 s ago  abc         502     GET /v2/x/blobs/sha256:00  UNAVAILABLE  upstream hub answered 503",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
    }

    #[test]
    fn colour_is_added_when_asked() {
        let text = render(&report(), true);
        assert!(text.contains("\x1b[1;36mCache\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[32mreachable\x1b[0m"), "{text}");
    }
}
