//! The status page (`GET /` and `/status` on the admin listener): one [`StatusReport`] rendered as
//! a single HTML document, on the server, with everything inline (CSS, SVG charts; no script, no
//! web font, no other request), so it works air-gapped and costs the browser nothing to load. It
//! reloads itself every [`REFRESH_SECONDS`] with `<meta http-equiv="refresh">`: no JavaScript to
//! fail, and a wharf that stops answering is not hidden behind a stale page (the browser shows that
//! it cannot connect). An empty `data:` icon keeps browsers from asking for `/favicon.ico`.
//!
//! Every string that comes from the report (repository and image names, URLs, error messages,
//! request ids) is untrusted and goes through [`Escaped`]; URLs are shown as text, never as links.
//! Long names and digests are cut with an ellipsis (the full text in a `title` tooltip) and error
//! messages wrap, so the page fits a 1280-pixel-wide window without horizontal scrolling.
//!
//! # Hooks for tests and scripts
//! Each value chart is `<svg class="chart" data-series="WINDOW-KIND" data-points="N">` where
//! `WINDOW` is `hour` or `day` and `N` is `Series::points.len()`:
//! - `KIND` = `ratio`: the hit ratio, one `<rect class="pt">` per point (oldest first; a point with
//!   no requests is a 1-unit grey stub with class `pt idle`);
//! - `KIND` = `bytes`: bytes served from the cache and fetched upstream, two `<polyline>`s
//!   (`class="hit"`, `class="miss"`) whose `points` each have exactly `N` `x,y` pairs.
//!
//! Sections are `<section id="cache|value|upstreams|fills|top|pins|sync|errors">`.

use std::fmt::{self, Display, Write};

use super::report::{
    CacheStatus, Counts, ErrorStatus, FillStatus, PinStatus, Series, StatusReport, SyncStatus,
    TopEntry, UpstreamStatus,
};
use crate::size::format_size;

/// Seconds between the page's reloads.
pub const REFRESH_SECONDS: u64 = 5;

/// The chart's drawing area, in SVG user units (stretched to the box's width).
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 100.0;

/// The last second humantime formats (the end of year 9999); later times are shown as it.
const MAX_TIME: u64 = 253_402_300_799;

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe in element content
/// and in quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// The page for `report`.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    // fmt::Write for String never fails, and no Display below returns an error.
    page(&mut out, report).expect("writing to a String cannot fail");
    out
}

// === impl Escaped ===

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

fn esc(s: &str) -> Escaped<'_> {
    Escaped(s)
}

// === the page ===

const STYLE: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--line:#e1e4e8;--text:#1f2328;--muted:#656d76;--hit:#2da44e;
--hit-soft:rgba(45,164,78,.12);--miss:#5a8fd6;--warn:#bf8700;--bad:#cf222e;--track:#eaecef;
--mono:ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0 auto;max-width:1240px;padding:16px 20px 32px;color:var(--text);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 14px;margin:0 0 14px}
h1{font-size:20px;margin:0;font-weight:650;letter-spacing:-.01em}
h2{font-size:13px;margin:0 0 10px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
h3{font-size:13px;margin:0 0 6px;font-weight:600}
.muted{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px}
.wide{grid-column:1/-1}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;min-width:0}
.tiles{display:flex;flex-wrap:wrap;gap:8px 28px;margin:0 0 12px}
.tile b{display:block;font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.tile span{font-size:12px;color:var(--muted)}
.badge{display:inline-block;max-width:100%;overflow:hidden;text-overflow:ellipsis;vertical-align:top;
padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;line-height:20px;white-space:nowrap}
.ok{background:#dafbe1;color:#116329}.bad{background:#ffebe9;color:#a40e26}
.warn{background:#fff8c5;color:#7d4e00}.idle{background:#eaeef2;color:#57606a}
.meter{position:relative;height:14px;background:var(--track);border-radius:7px}
.meter>i{position:absolute;left:0;top:0;bottom:0;background:var(--hit);border-radius:7px}
.meter.hot>i{background:var(--warn)}
.meter.small{height:6px;border-radius:3px;margin-top:3px}
.meter.small>i{background:var(--miss);border-radius:3px}
.mark{position:absolute;top:-4px;bottom:-4px;border-left:2px solid var(--text);opacity:.55}
.mark.low{border-left-style:dotted}
.scale{font-size:12px;margin:8px 0 0}
.scale .mark-key{width:0;height:12px;border-radius:0;margin:0 6px 0 0;border-left:2px solid var(--text);opacity:.55}
.scale .mark-key.low{border-left-style:dotted}.scale .mark-key:first-child{margin-left:0}
.msg{display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px 20px}
.chart{display:block;width:100%;height:110px;background:#fafbfc;border:1px solid var(--line);border-radius:4px}
.chart .pt{fill:var(--hit)}.chart .pt.idle{fill:#d0d7de}
.chart polyline{fill:none;stroke-width:2;stroke-linejoin:round}
.chart .hit{stroke:var(--hit)}.chart .miss{stroke:var(--miss)}.chart .area{fill:var(--hit-soft)}
.chart .grid-line{stroke:var(--line);stroke-width:1}
.axis{display:flex;justify-content:space-between;font-size:12px;color:var(--muted);margin-top:2px}
.legend{font-size:12px;color:var(--muted)}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}
table{width:100%;border-collapse:collapse;table-layout:fixed;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:12px;font-weight:600;color:var(--muted);padding:4px 8px 6px 0;border-bottom:1px solid var(--line)}
td{padding:6px 8px 6px 0;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
tr:last-child td{border-bottom:0}
td.clip{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.num{text-align:right}
code,.mono{font-family:var(--mono);font-size:12.5px}
.tops{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px 24px}
.empty{color:var(--muted);font-style:italic;margin:4px 0}
ul.changed{margin:0;padding-left:16px}
@media (max-width:900px){.grid,.charts,.tops{grid-template-columns:minmax(0,1fr)}}
"#;

fn page(out: &mut String, r: &StatusReport) -> fmt::Result {
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>wharf status</title><style>{STYLE}</style></head><body>"
    )?;
    header(out, r)?;
    out.push_str("<main class=\"grid\">");
    cache(out, &r.cache)?;
    upstreams(out, r)?;
    value(out, r)?;
    fills(out, r)?;
    top(out, r)?;
    pins(out, &r.pins)?;
    sync(out, r)?;
    errors(out, r)?;
    out.push_str("</main></body></html>\n");
    Ok(())
}

fn header(out: &mut String, r: &StatusReport) -> fmt::Result {
    write!(
        out,
        "<header><h1>wharf</h1><span class=\"muted\">{} · up {} · as of \
         <time datetime=\"{}\">{} UTC</time> · reloads every {REFRESH_SECONDS} s</span>",
        esc(&r.version),
        Dur(r.now.saturating_sub(r.started)),
        Rfc3339(r.now),
        Clock(r.now, true),
    )?;
    if r.cache.paused {
        out.push_str(" <span class=\"badge bad\">caching paused</span>");
    }
    let down = r
        .upstreams
        .iter()
        .filter(|u| u.reachable == Some(false))
        .count();
    if down > 0 {
        write!(
            out,
            " <span class=\"badge bad\">{down} upstream{} unreachable</span>",
            plural(down as u64)
        )?;
    }
    if !r.errors.is_empty() {
        write!(
            out,
            " <span class=\"badge warn\">{} recent error{}</span>",
            r.errors.len(),
            plural(r.errors.len() as u64)
        )?;
    }
    out.push_str("</header>");
    Ok(())
}

fn tile(out: &mut String, value: impl Display, label: impl Display) -> fmt::Result {
    write!(
        out,
        "<div class=\"tile\"><b>{value}</b><span>{label}</span></div>"
    )
}

fn cache(out: &mut String, c: &CacheStatus) -> fmt::Result {
    out.push_str("<section id=\"cache\"><h2>Cache</h2><div class=\"tiles\">");
    match c.max_bytes {
        Some(max) => tile(
            out,
            format_size(c.bytes),
            format_args!("used of {} ({})", format_size(max), Percent(c.bytes, max)),
        )?,
        None => tile(out, format_size(c.bytes), "used (no size budget)")?,
    }
    tile(out, Num(c.entries), "entries")?;
    tile(out, format_size(c.pinned_bytes), "pinned")?;
    tile(
        out,
        Num(c.evictions),
        format_args!("evictions ({})", format_size(c.evicted_bytes)),
    )?;
    if let Some(free) = c.free_bytes {
        tile(out, format_size(free), "free on disk")?;
    }
    if c.paused {
        tile(
            out,
            "<span class=\"badge bad\">paused</span>",
            "misses pass through",
        )?;
    } else {
        tile(out, "<span class=\"badge ok\">caching</span>", "state")?;
    }
    out.push_str("</div>");
    match c.max_bytes {
        Some(max) if max > 0 => {
            let hot = c.high_watermark_bytes.is_some_and(|h| c.bytes >= h);
            write!(
                out,
                "<div class=\"meter{}\" title=\"{} of {}\"><i style=\"width:{:.2}%\"></i>",
                if hot { " hot" } else { "" },
                format_size(c.bytes),
                format_size(max),
                share(c.bytes, max) * 100.0,
            )?;
            let marks = [
                ("low", c.low_watermark_bytes),
                ("high", c.high_watermark_bytes),
            ];
            for (class, at) in marks {
                if let Some(at) = at {
                    write!(
                        out,
                        "<span class=\"mark {class}\" style=\"left:{:.2}%\" title=\"{class} watermark: {}\"></span>",
                        share(at, max) * 100.0,
                        format_size(at),
                    )?;
                }
            }
            out.push_str("</div><p class=\"scale muted\">");
            let mut first = true;
            for (name, at) in marks {
                if let Some(at) = at {
                    if !first {
                        out.push_str(" · ");
                    }
                    first = false;
                    write!(
                        out,
                        "<span class=\"sw mark-key {name}\"></span>{name} watermark {} ({})",
                        format_size(at),
                        Percent(at, max),
                    )?;
                }
            }
            if first {
                write!(out, "budget {}", format_size(max))?;
            } else {
                out.push_str(": eviction starts at high and stops at low");
            }
            out.push_str("</p>");
        }
        _ => out.push_str(
            "<p class=\"empty\">no size budget: storage.max_size is not set, nothing is evicted</p>",
        ),
    }
    out.push_str("</section>");
    Ok(())
}

fn upstreams(out: &mut String, r: &StatusReport) -> fmt::Result {
    out.push_str("<section id=\"upstreams\"><h2>Upstreams</h2>");
    if r.upstreams.is_empty() {
        out.push_str("<p class=\"empty\">no upstreams configured</p></section>");
        return Ok(());
    }
    out.push_str(
        "<table><colgroup><col style=\"width:27%\"><col style=\"width:23%\"><col>\
         <col style=\"width:17%\"></colgroup>\
         <tr><th>Upstream</th><th>State</th><th>Last error</th><th>Rate limit</th></tr>",
    );
    for u in &r.upstreams {
        upstream(out, r.now, u)?;
    }
    out.push_str("</table></section>");
    Ok(())
}

fn upstream(out: &mut String, now: u64, u: &UpstreamStatus) -> fmt::Result {
    write!(
        out,
        "<tr><td class=\"clip\" title=\"{url}\"><b>{name}</b><br><span class=\"muted mono\">{url}</span></td><td>",
        name = esc(&u.name),
        url = esc(&u.url),
    )?;
    if u.offline {
        out.push_str("<span class=\"badge idle\">offline</span>");
    } else {
        match u.reachable {
            Some(true) => out.push_str("<span class=\"badge ok\">reachable</span>"),
            Some(false) => out.push_str("<span class=\"badge bad\">unreachable</span>"),
            None => out.push_str("<span class=\"badge idle\">not asked yet</span>"),
        }
    }
    if let Some(wait) = u.backoff_seconds {
        write!(
            out,
            " <span class=\"badge warn\">back-off {}</span>",
            Dur(wait)
        )?;
    }
    if let Some(ok) = u.last_ok {
        write!(
            out,
            "<br><span class=\"muted\">last answer {}</span>",
            Ago(now, ok)
        )?;
    }
    out.push_str("</td><td>");
    match (&u.last_error, u.last_error_at) {
        (Some(error), at) => {
            write!(
                out,
                "<div class=\"msg\" title=\"{error}\">{error}</div>",
                error = esc(error)
            )?;
            if let Some(at) = at {
                write!(out, "<span class=\"muted\">{}</span>", Ago(now, at))?;
            }
        }
        (None, _) => out.push_str("<span class=\"muted\">none</span>"),
    }
    out.push_str("</td><td>");
    match (u.rate_limit_remaining, u.rate_limit_limit) {
        (Some(left), Some(limit)) => write!(
            out,
            "{} of {} left<div class=\"meter small\"><i style=\"width:{:.2}%\"></i></div>",
            Num(left),
            Num(limit),
            share(left, limit) * 100.0
        )?,
        (Some(left), None) => write!(out, "{} left", Num(left))?,
        _ => out.push_str("<span class=\"muted\">not announced</span>"),
    }
    out.push_str("</td></tr>");
    Ok(())
}

fn value(out: &mut String, r: &StatusReport) -> fmt::Result {
    let v = &r.value;
    let t = v.total;
    out.push_str("<section id=\"value\" class=\"wide\"><h2>Value</h2><div class=\"tiles\">");
    let requests = t.hits.saturating_add(t.misses);
    if requests == 0 {
        tile(out, "–", "hit ratio (no pulls yet)")?;
    } else {
        tile(
            out,
            Percent(t.hits, requests),
            format_args!("hit ratio ({} of {} requests)", Num(t.hits), Num(requests)),
        )?;
    }
    let bytes = t.hit_bytes.saturating_add(t.miss_bytes);
    if bytes == 0 {
        tile(out, format_size(0), "upstream bandwidth saved")?;
    } else {
        tile(
            out,
            format_size(t.hit_bytes),
            format_args!(
                "upstream bandwidth saved ({} of bytes served)",
                Percent(t.hit_bytes, bytes)
            ),
        )?;
    }
    tile(out, format_size(t.miss_bytes), "fetched from upstreams")?;
    let day = v.day.points.iter().fold(Counts::default(), add);
    tile(
        out,
        format_size(day.hit_bytes),
        format_args!("saved in the last {}", Dur(span(&v.day))),
    )?;
    out.push_str(
        "</div><div class=\"legend\">since start · charts:<span class=\"sw\" style=\"background:var(--hit)\"></span>\
         served from the cache<span class=\"sw\" style=\"background:var(--miss)\"></span>fetched upstream</div>\
         <div class=\"charts\">",
    );
    for (window, series) in [("hour", &v.hour), ("day", &v.day)] {
        ratio_chart(out, window, series)?;
        bytes_chart(out, window, series)?;
    }
    out.push_str("</div></section>");
    Ok(())
}

/// Seconds a series covers.
fn span(s: &Series) -> u64 {
    s.step.saturating_mul(s.points.len() as u64)
}

fn add(a: Counts, b: &Counts) -> Counts {
    Counts {
        hits: a.hits.saturating_add(b.hits),
        misses: a.misses.saturating_add(b.misses),
        hit_bytes: a.hit_bytes.saturating_add(b.hit_bytes),
        miss_bytes: a.miss_bytes.saturating_add(b.miss_bytes),
    }
}

fn chart_open(out: &mut String, window: &str, kind: &str, s: &Series) -> fmt::Result {
    let what = if kind == "ratio" {
        "hit ratio"
    } else {
        "bytes served from the cache and fetched upstream"
    };
    write!(
        out,
        "<div><svg class=\"chart\" data-series=\"{window}-{kind}\" data-points=\"{n}\" \
         viewBox=\"0 0 {CHART_W} {CHART_H}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{what} over the last {span}, one point per {step}\">\
         <line class=\"grid-line\" x1=\"0\" x2=\"{CHART_W}\" y1=\"{mid}\" y2=\"{mid}\" \
         vector-effect=\"non-scaling-stroke\"/>",
        n = s.points.len(),
        mid = CHART_H / 2.0,
        span = Dur(span(s)),
        step = Dur(s.step),
    )
}

fn chart_close(out: &mut String, s: &Series, label: impl Display) -> fmt::Result {
    write!(
        out,
        "</svg><div class=\"axis\"><span>{} ago</span><span>{label}</span><span>now</span></div></div>",
        Dur(span(s))
    )
}

fn ratio_chart(out: &mut String, window: &str, s: &Series) -> fmt::Result {
    chart_open(out, window, "ratio", s)?;
    let n = s.points.len().max(1) as f64;
    let w = CHART_W / n;
    let start = s.end.saturating_sub(span(s));
    for (i, p) in s.points.iter().enumerate() {
        let x = i as f64 * w;
        let from = start.saturating_add(s.step.saturating_mul(i as u64));
        let requests = p.hits.saturating_add(p.misses);
        let (class, h) = if requests == 0 {
            ("pt idle", 1.0)
        } else {
            ("pt", (share(p.hits, requests) * CHART_H).max(1.0))
        };
        write!(
            out,
            "<rect class=\"{class}\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{h:.2}\">\
             <title>{}–{} UTC: ",
            CHART_H - h,
            (w * 0.8).max(0.5),
            Clock(from, false),
            Clock(from.saturating_add(s.step), false),
        )?;
        if requests == 0 {
            out.push_str("no pulls");
        } else {
            write!(
                out,
                "{} hits ({} of {})",
                Percent(p.hits, requests),
                Num(p.hits),
                Num(requests)
            )?;
        }
        out.push_str("</title></rect>");
    }
    chart_close(out, s, "hit ratio, 0–100%")
}

fn bytes_chart(out: &mut String, window: &str, s: &Series) -> fmt::Result {
    chart_open(out, window, "bytes", s)?;
    let max = s
        .points
        .iter()
        .map(|p| p.hit_bytes.max(p.miss_bytes))
        .max()
        .unwrap_or(0);
    let n = s.points.len();
    let x = |i: usize| {
        if n > 1 {
            i as f64 * CHART_W / (n - 1) as f64
        } else {
            CHART_W / 2.0
        }
    };
    // 2 units of margin keep the 2-unit stroke inside the box at 0 and at the maximum.
    let y = |v: u64| CHART_H - 2.0 - share(v, max) * (CHART_H - 4.0);
    // The area under the cache's line, then the two lines.
    write!(out, "<polygon class=\"area\" points=\"0,{CHART_H}")?;
    for (i, p) in s.points.iter().enumerate() {
        write!(out, " {:.1},{:.1}", x(i), y(p.hit_bytes))?;
    }
    write!(out, " {CHART_W},{CHART_H}\"/>")?;
    for (class, pick) in [
        ("hit", (|p: &Counts| p.hit_bytes) as fn(&Counts) -> u64),
        ("miss", |p: &Counts| p.miss_bytes),
    ] {
        write!(
            out,
            "<polyline class=\"{class}\" vector-effect=\"non-scaling-stroke\" points=\""
        )?;
        for (i, p) in s.points.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            write!(out, "{:.1},{:.1}", x(i), y(pick(p)))?;
        }
        out.push_str("\"/>");
    }
    chart_close(
        out,
        s,
        format_args!("bytes per {}, peak {}", Dur(s.step), format_size(max)),
    )
}

fn fills(out: &mut String, r: &StatusReport) -> fmt::Result {
    out.push_str("<section id=\"fills\" class=\"wide\"><h2>Fills in flight</h2>");
    if r.fills.is_empty() {
        out.push_str("<p class=\"empty\">no fills in flight</p></section>");
        return Ok(());
    }
    out.push_str(
        "<table><colgroup><col style=\"width:22%\"><col style=\"width:22%\"><col style=\"width:14%\">\
         <col><col style=\"width:8%\"><col style=\"width:11%\"></colgroup>\
         <tr><th>Repository</th><th>Digest</th><th>Upstream</th><th>Progress</th>\
         <th class=\"num\">Clients</th><th>Started</th></tr>",
    );
    for f in &r.fills {
        fill(out, r.now, f)?;
    }
    out.push_str("</table></section>");
    Ok(())
}

fn fill(out: &mut String, now: u64, f: &FillStatus) -> fmt::Result {
    write!(
        out,
        "<tr><td class=\"clip\" title=\"{repo}\">{repo}</td>\
         <td class=\"clip mono\" title=\"{digest}\">{digest}</td>\
         <td class=\"clip\" title=\"{up}\">{up}</td><td>",
        repo = esc(&f.repository),
        digest = esc(&f.digest),
        up = esc(&f.upstream),
    )?;
    match f.size {
        Some(size) => write!(
            out,
            "{} of {} ({})<div class=\"meter small\"><i style=\"width:{:.2}%\"></i></div>",
            format_size(f.received),
            format_size(size),
            Percent(f.received, size),
            share(f.received, size) * 100.0
        )?,
        None => write!(out, "{} of an unknown size", format_size(f.received))?,
    }
    write!(
        out,
        "</td><td class=\"num\">{}</td><td title=\"{}\">{}</td></tr>",
        Num(f.clients),
        Rfc3339(f.started),
        Ago(now, f.started)
    )
}

fn top(out: &mut String, r: &StatusReport) -> fmt::Result {
    let t = &r.top;
    write!(
        out,
        "<section id=\"top\" class=\"wide\"><h2>Top pulls, last {}</h2><div class=\"tops\">",
        Dur(t.window)
    )?;
    let lists: [(&str, &[TopEntry], bool); 4] = [
        ("Repositories by pulls", &t.repositories_by_pulls, false),
        ("Repositories by bytes", &t.repositories_by_bytes, true),
        ("Images by pulls", &t.images_by_pulls, false),
        ("Images by bytes", &t.images_by_bytes, true),
    ];
    for (title, entries, by_bytes) in lists {
        top_list(out, title, entries, by_bytes)?;
    }
    out.push_str("</div></section>");
    Ok(())
}

fn top_list(out: &mut String, title: &str, entries: &[TopEntry], by_bytes: bool) -> fmt::Result {
    write!(out, "<div><h3>{title}</h3>")?;
    if entries.is_empty() {
        out.push_str("<p class=\"empty\">no pulls in this window</p></div>");
        return Ok(());
    }
    let key = |e: &TopEntry| if by_bytes { e.bytes } else { e.pulls };
    let max = entries.iter().map(key).max().unwrap_or(0);
    out.push_str(
        "<table><colgroup><col><col style=\"width:24%\"><col style=\"width:18%\"></colgroup>",
    );
    for e in entries {
        write!(
            out,
            "<tr><td class=\"clip\" title=\"{name}\">{name}\
             <div class=\"meter small\"><i style=\"width:{:.2}%\"></i></div></td>",
            share(key(e), max) * 100.0,
            name = esc(&e.name),
        )?;
        let pulls = format_args!("{} pull{}", Num(e.pulls), plural(e.pulls));
        if by_bytes {
            write!(
                out,
                "<td class=\"num\"><b>{}</b></td><td class=\"num muted\">{pulls}</td></tr>",
                format_size(e.bytes)
            )?;
        } else {
            write!(
                out,
                "<td class=\"num\"><b>{pulls}</b></td><td class=\"num muted\">{}</td></tr>",
                format_size(e.bytes)
            )?;
        }
    }
    out.push_str("</table></div>");
    Ok(())
}

fn pins(out: &mut String, pins: &[PinStatus]) -> fmt::Result {
    out.push_str("<section id=\"pins\"><h2>Pins</h2>");
    if pins.is_empty() {
        out.push_str("<p class=\"empty\">no pins</p></section>");
        return Ok(());
    }
    out.push_str(
        "<table><colgroup><col><col style=\"width:22%\"></colgroup><tr><th>Image</th><th>From</th></tr>",
    );
    for p in pins {
        let other = esc(&p.source);
        let source: &dyn Display = match p.source.as_str() {
            "config" => &"[[pin]]",
            "command" => &"wharf pin",
            // A source this page does not know is shown as it is.
            _ => &other,
        };
        write!(
            out,
            "<tr><td class=\"clip mono\" title=\"{image}\">{image}</td><td>{source}</td></tr>",
            image = esc(&p.image),
        )?;
    }
    out.push_str("</table></section>");
    Ok(())
}

fn sync(out: &mut String, r: &StatusReport) -> fmt::Result {
    out.push_str("<section id=\"sync\"><h2>Sync</h2>");
    if r.sync.is_empty() {
        out.push_str("<p class=\"empty\">no [[sync]] entries</p></section>");
        return Ok(());
    }
    out.push_str(
        "<table><colgroup><col style=\"width:34%\"><col style=\"width:30%\"><col></colgroup>\
         <tr><th>Entry</th><th>Last run</th><th>Changed</th></tr>",
    );
    for s in &r.sync {
        sync_entry(out, r.now, s)?;
    }
    out.push_str("</table></section>");
    Ok(())
}

fn sync_entry(out: &mut String, now: u64, s: &SyncStatus) -> fmt::Result {
    let images = s.images.join(", ");
    write!(
        out,
        "<tr><td class=\"clip\" title=\"{images}\"><b>#{}</b> every {}<br>\
         <span class=\"muted mono\">{images}</span></td><td>",
        s.entry,
        Dur(s.interval),
        images = esc(if images.is_empty() {
            "(images from its file)"
        } else {
            &images
        }),
    )?;
    let Some(run) = &s.last_run else {
        out.push_str("<span class=\"muted\">not run yet</span></td><td></td></tr>");
        return Ok(());
    };
    write!(
        out,
        "<span title=\"{}\">{}</span>, took {}<br><span class=\"muted\">{} image{}",
        Rfc3339(run.started),
        Ago(now, run.started),
        Millis(run.millis),
        Num(run.images),
        plural(run.images),
    )?;
    if run.failed > 0 {
        write!(
            out,
            ", </span><span class=\"badge bad\">{} failed</span><span class=\"muted\">",
            Num(run.failed)
        )?;
    }
    write!(
        out,
        ", {} blob{} ({}) fetched</span></td><td>",
        Num(run.blobs_fetched),
        plural(run.blobs_fetched),
        format_size(run.bytes_fetched),
    )?;
    if run.changed.is_empty() {
        out.push_str("<span class=\"muted\">no tag moved</span>");
    } else {
        out.push_str("<ul class=\"changed mono\">");
        for c in &run.changed {
            write!(out, "<li>{}</li>", esc(c))?;
        }
        out.push_str("</ul>");
    }
    out.push_str("</td></tr>");
    Ok(())
}

fn errors(out: &mut String, r: &StatusReport) -> fmt::Result {
    out.push_str("<section id=\"errors\" class=\"wide\"><h2>Recent errors</h2>");
    if r.errors.is_empty() {
        out.push_str("<p class=\"empty\">no errors</p></section>");
        return Ok(());
    }
    out.push_str(
        "<table><colgroup><col style=\"width:9%\"><col style=\"width:14%\"><col style=\"width:27%\">\
         <col style=\"width:6%\"><col style=\"width:13%\"><col></colgroup>\
         <tr><th>When</th><th>Request id</th><th>Request</th><th>Status</th><th>Code</th><th>Message</th></tr>",
    );
    for e in &r.errors {
        error_row(out, r.now, e)?;
    }
    out.push_str("</table></section>");
    Ok(())
}

fn error_row(out: &mut String, now: u64, e: &ErrorStatus) -> fmt::Result {
    write!(
        out,
        "<tr><td title=\"{}\">{}</td><td class=\"clip mono\" title=\"{id}\">{id}</td>\
         <td class=\"clip mono\" title=\"{method} {path}\">{method} {path}</td>\
         <td><span class=\"badge {}\">{}</span></td><td class=\"clip mono\">{}</td><td><div class=\"msg\" title=\"{message}\">{message}</div></td></tr>",
        Rfc3339(e.at),
        Ago(now, e.at),
        if e.status >= 500 { "bad" } else { "warn" },
        e.status,
        esc(e.code.as_deref().unwrap_or("")),
        id = esc(&e.request_id),
        message = esc(&e.message),
        method = esc(&e.method),
        path = esc(&e.path),
    )
}

// === units ===

/// `part / whole` in 0..=1 (0 when `whole` is 0).
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "a fraction for drawing: 52 bits are plenty"
    )]
    let f = part as f64 / whole as f64;
    f.clamp(0.0, 1.0)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `part / whole` as a percentage: `87%`, `99.5%`, `<1%` (`–` when `whole` is 0).
struct Percent(u64, u64);

impl Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 == 0 {
            return f.write_str("–");
        }
        let p = share(self.0, self.1) * 100.0;
        if p > 0.0 && p < 1.0 {
            f.write_str("&lt;1%")
        } else if p > 99.0 && p < 100.0 {
            write!(f, "{:.1}%", (p * 10.0).floor() / 10.0)
        } else {
            write!(f, "{p:.0}%")
        }
    }
}

/// A count with thousands separators: `1,234,567`.
struct Num(u64);

impl Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_char(',')?;
            }
            f.write_char(d)?;
        }
        Ok(())
    }
}

/// A duration in seconds for people: `45 s`, `3 min`, `2 h 5 min`, `24 h`, `3 d 4 h`.
struct Dur(u64);

impl Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s {
            0..60 => write!(f, "{s} s"),
            60..3600 => write!(f, "{} min", s / 60),
            3600..172_800 if s % 3600 < 60 => write!(f, "{} h", s / 3600),
            3600..172_800 => write!(f, "{} h {} min", s / 3600, s % 3600 / 60),
            _ if s % 86_400 < 3600 => write!(f, "{} d", s / 86_400),
            _ => write!(f, "{} d {} h", s / 86_400, s % 86_400 / 3600),
        }
    }
}

/// A duration in milliseconds: `850 ms`, `1.2 s`, then as [`Dur`].
struct Millis(u64);

impl Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ms @ 0..1000 => write!(f, "{ms} ms"),
            #[allow(clippy::cast_precision_loss, reason = "one decimal is printed")]
            ms @ 1000..60_000 => write!(f, "{:.1} s", ms as f64 / 1000.0),
            ms => Dur(ms / 1000).fmt(f),
        }
    }
}

/// How long before `now` the time `at` was: `just now`, `12 s ago`, `3 min ago`, `2 h ago`.
struct Ago(u64, u64);

impl Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (now, at) = (self.0, self.1);
        if at > now {
            // Another clock (a peer's, a file's) can be ahead of ours.
            return write!(f, "in {}", Dur(at - now));
        }
        match now - at {
            0..5 => f.write_str("just now"),
            s => write!(f, "{} ago", Dur(s)),
        }
    }
}

/// The UTC time of day of Unix time `t`: `14:05` or `14:05:09`.
struct Clock(u64, bool);

impl Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 % 86_400;
        write!(f, "{:02}:{:02}", s / 3600, s % 3600 / 60)?;
        if self.1 {
            write!(f, ":{:02}", s % 60)?;
        }
        Ok(())
    }
}

/// Unix time `t` as RFC 3339 (`2026-12-01T03:27:17Z`), for tooltips and `datetime`.
struct Rfc3339(u64);

impl Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.0.min(MAX_TIME));
        humantime::format_rfc3339_seconds(at).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::report::*;

    #[test]
    fn escaping_replaces_every_special_character() {
        let cases = [
            ("plain/name", "plain/name"),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a & b", "a &amp; b"),
            ("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;"),
            ("&amp;", "&amp;amp;"),
            ("ünïcode <", "ünïcode &lt;"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(Escaped(raw).to_string(), want, "{raw}");
        }
    }

    /// A report with something in every section, hostile strings in every string field.
    pub(crate) fn full(now: u64) -> StatusReport {
        let hostile = "<script>alert('x')</script>&\"";
        let series = |step: u64, len: usize| Series {
            step,
            end: now - now % step + step,
            points: (0..len as u64)
                .map(|i| Counts {
                    hits: i % 7 * 3,
                    misses: i % 5,
                    hit_bytes: (i % 7) << 24,
                    miss_bytes: (i % 5) << 22,
                })
                .collect(),
        };
        StatusReport {
            version: format!("0.1.0{hostile}"),
            now,
            started: now - 7200,
            cache: CacheStatus {
                bytes: 40 << 30,
                entries: 12_345,
                max_bytes: Some(50 << 30),
                high_watermark_bytes: Some(45 << 30),
                low_watermark_bytes: Some(40 << 30),
                pinned_bytes: 3 << 30,
                evictions: 17,
                evicted_bytes: 9 << 30,
                free_bytes: Some(120 << 30),
                paused: true,
            },
            value: ValueStatus {
                total: Counts {
                    hits: 990,
                    misses: 10,
                    hit_bytes: 30 << 30,
                    miss_bytes: 2 << 30,
                },
                hour: series(60, 60),
                day: series(600, 144),
            },
            upstreams: vec![UpstreamStatus {
                name: format!("up{hostile}"),
                url: format!("https://registry.example/{hostile}"),
                offline: false,
                reachable: Some(false),
                last_ok: Some(now - 30),
                last_error: Some(format!("429 {hostile}")),
                last_error_at: Some(now - 3),
                backoff_seconds: Some(42),
                rate_limit_remaining: Some(76),
                rate_limit_limit: Some(100),
            }],
            fills: vec![FillStatus {
                upstream: format!("up{hostile}"),
                repository: format!("library/{hostile}"),
                digest: format!("sha256:{}", "ab".repeat(32)),
                received: 12 << 20,
                size: Some(40 << 20),
                clients: 3,
                started: now - 12,
            }],
            top: TopStatus {
                window: 86_400,
                repositories_by_pulls: vec![TopEntry {
                    name: format!("up/{hostile}"),
                    pulls: 1234,
                    bytes: 5 << 30,
                }],
                repositories_by_bytes: vec![],
                images_by_pulls: vec![],
                images_by_bytes: vec![],
            },
            pins: vec![
                PinStatus {
                    image: format!("up/{hostile}:1"),
                    source: "config".into(),
                },
                PinStatus {
                    image: "up/app:2".into(),
                    source: hostile.into(),
                },
            ],
            sync: vec![SyncStatus {
                entry: 0,
                images: vec![format!("up/{hostile}:1")],
                interval: 3600,
                last_run: Some(SyncRun {
                    started: now - 600,
                    millis: 1500,
                    images: 4,
                    changed: vec![format!("up/{hostile}:1: sha256:aa -> sha256:bb")],
                    failed: 1,
                    blobs_fetched: 9,
                    bytes_fetched: 300 << 20,
                }),
            }],
            errors: vec![ErrorStatus {
                at: now - 65,
                request_id: format!("id{hostile}"),
                method: "GET".into(),
                path: format!("/v2/{hostile}/manifests/1"),
                status: 502,
                code: Some(format!("UNKNOWN{hostile}")),
                message: format!("upstream said {hostile}"),
            }],
        }
    }

    #[test]
    fn every_report_string_is_escaped() {
        let page = render(&full(1_800_000_000));
        assert!(!page.contains("<script"), "a raw <script> got through");
        assert!(!page.contains("alert('x')"), "a raw quote got through");
        // Each hostile field shows up escaped: the version, the upstream's name, URL and error,
        // the fill, the top list, the pins (image and an unknown source), sync, the error row.
        let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;";
        assert!(
            page.matches(escaped).count() >= 15,
            "{}",
            page.matches(escaped).count()
        );
        // Nothing outside the one <style> and the markup we write: no script element at all.
        assert!(!page.to_ascii_lowercase().contains("<script"));
    }

    #[test]
    fn charts_have_one_point_per_series_point() {
        let page = render(&full(1_800_000_000));
        for (series, n) in [("hour", 60), ("day", 144)] {
            for kind in ["ratio", "bytes"] {
                let hook = format!("data-series=\"{series}-{kind}\" data-points=\"{n}\"");
                assert_eq!(page.matches(&hook).count(), 1, "{hook}");
            }
            let start = page
                .find(&format!("data-series=\"{series}-ratio\""))
                .unwrap();
            let end = start + page[start..].find("</svg>").unwrap();
            assert_eq!(page[start..end].matches("<rect class=\"pt").count(), n);
            let start = page
                .find(&format!("data-series=\"{series}-bytes\""))
                .unwrap();
            let end = start + page[start..].find("</svg>").unwrap();
            let chart = &page[start..end];
            for class in ["hit", "miss"] {
                let at = chart.find(&format!("<polyline class=\"{class}\"")).unwrap();
                let points = &chart[at..];
                let points = &points[points.find("points=\"").unwrap() + 8..];
                let points = &points[..points.find('"').unwrap()];
                assert_eq!(points.split(' ').count(), n, "{series} {class}");
            }
        }
    }

    #[test]
    fn empty_sections_say_so() {
        let mut r = full(1_800_000_000);
        r.upstreams.clear();
        r.fills.clear();
        r.top.repositories_by_pulls.clear();
        r.pins.clear();
        r.sync.clear();
        r.errors.clear();
        r.cache.max_bytes = None;
        let page = render(&r);
        for empty in [
            "no upstreams configured",
            "no fills in flight",
            "no pulls in this window",
            "no pins",
            "no [[sync]] entries",
            "no errors",
            "no size budget",
        ] {
            assert!(page.contains(empty), "{empty}");
        }
    }

    #[test]
    fn extreme_values_render() {
        let mut r = full(1_800_000_000);
        r.now = u64::MAX;
        r.started = 0;
        r.cache.bytes = u64::MAX;
        r.cache.max_bytes = Some(1);
        r.value.total = Counts {
            hits: u64::MAX,
            misses: u64::MAX,
            hit_bytes: u64::MAX,
            miss_bytes: u64::MAX,
        };
        r.value.hour.points.clear();
        r.fills[0].size = Some(0);
        r.errors[0].at = u64::MAX;
        let page = render(&r);
        assert!(page.ends_with("</html>\n"));
        assert!(page.contains("data-series=\"hour-ratio\" data-points=\"0\""));
    }

    #[test]
    fn units_for_people() {
        assert_eq!(Num(0).to_string(), "0");
        assert_eq!(Num(999).to_string(), "999");
        assert_eq!(Num(1000).to_string(), "1,000");
        assert_eq!(Num(1_234_567).to_string(), "1,234,567");
        assert_eq!(Dur(45).to_string(), "45 s");
        assert_eq!(Dur(180).to_string(), "3 min");
        assert_eq!(Dur(3600).to_string(), "1 h");
        assert_eq!(Dur(7500).to_string(), "2 h 5 min");
        assert_eq!(Dur(86_400).to_string(), "24 h");
        assert_eq!(Dur(2 * 86_400).to_string(), "2 d");
        assert_eq!(Dur(3 * 86_400 + 4 * 3600).to_string(), "3 d 4 h");
        assert_eq!(Ago(100, 98).to_string(), "just now");
        assert_eq!(Ago(1000, 820).to_string(), "3 min ago");
        assert_eq!(Ago(100, 130).to_string(), "in 30 s");
        assert_eq!(Millis(850).to_string(), "850 ms");
        assert_eq!(Millis(1500).to_string(), "1.5 s");
        assert_eq!(Millis(180_000).to_string(), "3 min");
        assert_eq!(Percent(1, 3).to_string(), "33%");
        assert_eq!(Percent(1, 1000).to_string(), "&lt;1%");
        assert_eq!(Percent(999, 1000).to_string(), "99.9%");
        assert_eq!(Percent(5, 0).to_string(), "–");
        assert_eq!(Clock(1_800_000_000, true).to_string(), "08:00:00");
        assert_eq!(Rfc3339(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Rfc3339(u64::MAX).to_string(), "9999-12-31T23:59:59Z");
    }
}
