//! What the air-gap commands print: progress bars on a terminal (indicatif, on stderr), plain
//! lines otherwise, and the summaries on stdout. The same output whether the command did the work
//! itself or a running wharf did it over the control socket, because both hand over the same
//! events and reports.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, ReadBuf};

use super::bundle::BundleManifest;
use super::import::{Report, TagOutcome};
use super::prefetch::{Event, Summary};
use super::sign::{TrustedKey, Verdict};
use crate::size::format_size;

/// Whether stderr is a terminal (bars) or not (lines).
pub fn terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of bytes (or nothing, off a terminal).
pub fn byte_bar(terminal: bool, len: Option<u64>, message: &str) -> Option<ProgressBar> {
    if !terminal {
        return None;
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(style(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        )),
        None => {
            ProgressBar::new_spinner().with_style(style("{msg} {spinner} {bytes} {bytes_per_sec}"))
        }
    };
    Some(bar.with_message(message.to_owned()))
}

/// The progress of `wharf prefetch`, from its events.
pub struct PrefetchView {
    terminal: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    total: Option<ProgressBar>,
}

// === impl PrefetchView ===

impl PrefetchView {
    /// Bars when `terminal`, lines otherwise.
    pub fn new(terminal: bool) -> Self {
        Self {
            terminal,
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            total: None,
        }
    }

    fn line(&self, text: &str) {
        if self.terminal {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// Shows one event.
    pub fn event(&mut self, event: &Event) {
        match event {
            Event::Start { images } => {
                if self.terminal {
                    let total = self.multi.add(ProgressBar::new(0).with_style(style(
                        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                    )));
                    total.set_message(format!("total ({images} images)"));
                    self.total = Some(total);
                } else {
                    eprintln!("prefetch: {images} images");
                }
            }
            Event::Resolved {
                image,
                digest,
                blobs,
                bytes,
                cached_bytes,
            } => {
                let to_fetch = bytes.saturating_sub(*cached_bytes);
                if self.terminal {
                    let bar = self.multi.insert_from_back(
                        1,
                        ProgressBar::new(to_fetch)
                            .with_style(style("{msg:40!} [{bar:30}] {bytes}/{total_bytes}")),
                    );
                    bar.set_message(image.clone());
                    if let Some(total) = &self.total {
                        total.inc_length(to_fetch);
                    }
                    self.bars.insert(image.clone(), bar);
                } else {
                    eprintln!(
                        "prefetch: {image}: {digest}: {blobs} blobs, {} ({} cached)",
                        format_size(*bytes),
                        format_size(*cached_bytes)
                    );
                }
            }
            Event::Progress { image, bytes } => {
                if let Some(bar) = self.bars.get(image) {
                    bar.inc(*bytes);
                }
                if let Some(total) = &self.total {
                    total.inc(*bytes);
                }
            }
            Event::Warning { image, message } => {
                self.line(&format!("prefetch: {image}: warning: {message}"));
            }
            Event::Done { image, stats } => {
                if let Some(bar) = self.bars.remove(image) {
                    // What was not downloaded after all (another image of the run fetched it, or
                    // the image failed) leaves the total.
                    let left = bar.length().unwrap_or(0).saturating_sub(bar.position());
                    if let Some(total) = &self.total {
                        total.set_length(total.length().unwrap_or(0).saturating_sub(left));
                    }
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                match &stats.error {
                    Some(e) => self.line(&format!("prefetch: {image}: failed: {e}")),
                    None => self.line(&format!(
                        "prefetch: {image}: done: {} blobs fetched ({}), {} cached ({}){}",
                        stats.blobs_fetched,
                        format_size(stats.bytes_fetched),
                        stats.blobs_cached,
                        format_size(stats.bytes_cached),
                        if stats.pinned { ", pinned" } else { "" }
                    )),
                }
            }
            Event::Summary { .. } => self.finish(),
        }
    }

    /// Removes the bars.
    pub fn finish(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        if let Some(total) = self.total.take() {
            total.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Prints the summary of a prefetch on stdout.
pub fn print_prefetch_summary(s: &Summary) {
    println!(
        "prefetch: {} images ({} ok, {} failed, {} pinned); manifests: {} fetched, {} cached; blobs: {} fetched ({}), {} already cached ({})",
        s.images,
        s.images - s.failed,
        s.failed,
        s.pinned,
        s.manifests_fetched,
        s.manifests_cached,
        s.blobs_fetched,
        format_size(s.bytes_fetched),
        s.blobs_cached,
        format_size(s.bytes_cached),
    );
    for (image, error) in &s.failures {
        println!("failed: {image}: {error}");
    }
}

/// Writes what an export wrote (to stdout, or to stderr when stdout carries the bundle).
pub fn print_export_summary(m: &BundleManifest, out: &str, bytes: u64, w: &mut dyn Write) {
    for image in &m.images {
        let mut line = format!("exported {} {}", image.reference, image.digest);
        if let Some(subject) = &image.referrer_of {
            line.push_str(&format!(" (referrer of {subject})"));
        }
        if !image.omitted.is_empty() {
            let left: Vec<String> = image
                .omitted
                .iter()
                .map(|o| format!("{} ({})", o.platform, o.reason))
                .collect();
            line.push_str(&format!("; left out: {}", left.join(", ")));
        }
        let _ = writeln!(w, "{line}");
    }
    let blobs = m.blobs().count();
    let _ = writeln!(
        w,
        "export: wrote {out}: {} images, {blobs} blobs ({}), {bytes} bytes in all",
        m.images.len(),
        format_size(m.blob_bytes()),
    );
    if let Some(since) = &m.since {
        let _ = writeln!(
            w,
            "export: incremental on {} (made {}): {} blobs it holds are left out; import {} first",
            since.file,
            since.created,
            m.excluded.len(),
            since.file
        );
    }
}

/// Counts the bytes read through it on a progress bar.
pub struct Counted<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

// === impl Counted ===

impl<R> Counted<R> {
    /// Counts what is read from `inner` on `bar`.
    pub fn new(inner: R, bar: Option<ProgressBar>) -> Self {
        Self { inner, bar }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(bar) = &self.bar {
            bar.inc((buf.filled().len() - before) as u64);
        }
        polled
    }
}

/// Prints what an import did on stdout.
pub fn print_import_report(r: &Report, file: &str) {
    for image in &r.images {
        let tag = match image.tag {
            None => "",
            Some(TagOutcome::Set) => " (tag set)",
            Some(TagOutcome::Unchanged) => " (tag unchanged)",
            Some(TagOutcome::KeptNewer) => {
                " (tag kept: this wharf has a more recent digest for it than the bundle)"
            }
        };
        println!("imported {} {}{tag}", image.reference, image.digest);
    }
    let from = r.source.as_ref().map_or_else(String::new, |s| {
        format!(" (made {} on {}, {})", r.created, s.host, s.tool)
    });
    println!(
        "import: {file}{from}: {} images; {} blobs stored ({}), {} already present ({}); {} pinned",
        r.images.len(),
        r.blobs_new,
        format_size(r.bytes_new),
        r.blobs_present,
        format_size(r.bytes_present),
        r.pinned
    );
    if let Some(v) = r.signature.as_ref().filter(|v| v.is_verified()) {
        println!("import: {file}: {}", v.describe());
    }
}

/// Writes what `wharf import --list` found in a bundle: where it was made, its signature, its
/// images with their platforms and sizes, each image's referrers under it, and its blobs.
pub fn print_bundle_list(
    m: &BundleManifest,
    file: &str,
    verdict: &Verdict,
    trusted: &[TrustedKey],
) {
    println!(
        "bundle {file}: made {} on {} by {} from {}",
        m.created, m.source.host, m.source.tool, m.source.storage
    );
    let checked = if trusted.is_empty() && verdict.signer().is_some() {
        " (no trusted keys given: [import] trusted_keys or --trusted-key)"
    } else {
        ""
    };
    println!("signature: {}{checked}", verdict.describe());
    if let Some(since) = &m.since {
        println!(
            "incremental on {} (made {}): import that one first",
            since.file, since.created
        );
    }
    if let Some(p) = &m.platforms {
        println!("exported for platforms: {}", p.join(", "));
    }
    let images: Vec<&super::bundle::BundleImage> = m
        .images
        .iter()
        .filter(|i| i.referrer_of.is_none())
        .collect();
    println!("images ({}):", images.len());
    for image in &images {
        let platforms = if image.platforms.is_empty() {
            String::new()
        } else {
            format!(", platforms {}", image.platforms.join(" "))
        };
        let left = if image.omitted.is_empty() {
            String::new()
        } else {
            let left: Vec<String> = image
                .omitted
                .iter()
                .map(|o| format!("{} ({})", o.platform, o.reason))
                .collect();
            format!(", left out: {}", left.join(", "))
        };
        println!(
            "  {} {} ({}{platforms}{left}{})",
            image.reference,
            image.digest,
            image.media_type,
            size(image.bytes)
        );
        print_referrers(m, image);
    }
    println!(
        "blobs: {} ({}){}",
        m.blobs().count(),
        format_size(m.blob_bytes()),
        if m.excluded.is_empty() {
            String::new()
        } else {
            format!("; {} left out (in the base bundle)", m.excluded.len())
        }
    );
}

/// The referrers that came with an image (at any depth), under it.
fn print_referrers(m: &BundleManifest, image: &super::bundle::BundleImage) {
    for r in m
        .images
        .iter()
        .filter(|r| r.referrer_of.is_some() && r.belongs_to.as_deref() == Some(&image.reference))
    {
        let of = r
            .referrer_of
            .map(|s| {
                if s == image.digest {
                    String::new()
                } else {
                    format!(", of {s}")
                }
            })
            .unwrap_or_default();
        println!(
            "    referrer {} {} ({}{of}{})",
            r.reference,
            r.digest,
            r.artifact_type.as_deref().unwrap_or(&r.media_type),
            size(r.bytes)
        );
    }
}

fn size(b: Option<u64>) -> String {
    b.map_or_else(String::new, |b| format!(", {}", format_size(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::airgap::prefetch::ImageStats;
    use crate::oci::Digest;

    #[test]
    fn every_event_is_shown_with_and_without_a_terminal() {
        let events = [
            Event::Start { images: 2 },
            Event::Resolved {
                image: "r.io/a:1".into(),
                digest: Digest::of(b"m"),
                blobs: 2,
                bytes: 3 << 20,
                cached_bytes: 1 << 20,
            },
            Event::Progress {
                image: "r.io/a:1".into(),
                bytes: 1 << 20,
            },
            Event::Progress {
                image: "r.io/unknown:1".into(),
                bytes: 5,
            },
            Event::Warning {
                image: "r.io/a:1".into(),
                message: "stale".into(),
            },
            Event::Done {
                image: "r.io/a:1".into(),
                stats: ImageStats::default(),
            },
            Event::Done {
                image: "r.io/b:1".into(),
                stats: ImageStats {
                    error: Some("gone".into()),
                    ..ImageStats::default()
                },
            },
            Event::Summary {
                summary: Summary::default(),
            },
        ];
        for terminal in [true, false] {
            let mut view = PrefetchView::new(terminal);
            for e in &events {
                view.event(e);
            }
            assert!(view.bars.is_empty() && view.total.is_none());
        }
    }
}
