//! `wharf pin`, `unpin` and `pins` as text, the same whether the command opened the storage itself
//! or asked a running wharf over its control socket.

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, PinSource};
use crate::oci::ImageRef;
use crate::size::format_size;

/// What a pin command prints, in order, and how it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Lines for stdout (`false`) or stderr (`true`).
    pub lines: Vec<(bool, String)>,
    /// Whether the command failed (exit 1).
    pub failed: bool,
}

// === impl Output ===

impl Output {
    fn out(&mut self, line: String) {
        self.lines.push((false, line));
    }

    fn err(&mut self, line: String) {
        self.lines.push((true, line));
    }

    /// Prints the lines to stdout and stderr.
    pub fn print(&self) {
        for (to_stderr, line) in &self.lines {
            if *to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    }
}

/// Pins (or unpins) `images`. `config_file` names the configuration in the message for a
/// `[[pin]]` entry that only the file can remove.
pub async fn pin(cache: &Cache, images: &[ImageRef], pin: bool, config_file: &str) -> Output {
    let mut o = Output::default();
    for image in images {
        let result = if pin {
            cache.pin(image).map(|new| {
                if new {
                    format!("pinned {image}")
                } else {
                    format!("{image} was already pinned")
                }
            })
        } else {
            cache.unpin(image).map(|was| match was {
                Some(PinSource::Command) => format!("unpinned {image}"),
                Some(PinSource::Config) => {
                    o.failed = true;
                    format!(
                        "{image} is pinned by a [[pin]] entry in {config_file}; remove it there"
                    )
                }
                None => format!("{image} was not pinned"),
            })
        };
        match result {
            Ok(line) => o.out(line),
            Err(e) => {
                o.err(format!("wharf: {e}"));
                o.failed = true;
                return o;
            }
        }
        if pin {
            match cache.pin_status(image).await {
                Ok(status) if status.root.is_some() && status.blobs > 0 => o.out(format!(
                    "  keeps {} blobs, {} cached now",
                    status.blobs,
                    format_size(status.bytes)
                )),
                Ok(_) => o.out("  not cached yet: it is kept once pulled through wharf".into()),
                Err(e) => o.err(format!("wharf: {e}")),
            }
        }
    }
    if let Err(e) = cache.index().flush().await {
        o.err(format!("wharf: cannot flush the index: {e}"));
        o.failed = true;
    }
    o
}

/// Lists the pinned images, who pinned them and what of them is cached.
pub async fn list(cache: &Cache) -> Output {
    let mut o = Output::default();
    let pins = match cache.index().pins() {
        Ok(pins) => pins,
        Err(e) => {
            o.err(format!("wharf: {e}"));
            o.failed = true;
            return o;
        }
    };
    if pins.is_empty() {
        o.out("no pinned images".into());
    }
    for (image, source) in pins {
        let kept = match cache.pin_status(&image).await {
            Ok(status) => match status.root {
                Some(root) if status.blobs > 0 => format!(
                    "{root}: {} blobs, {}",
                    status.blobs,
                    format_size(status.bytes)
                ),
                _ => "not cached".to_owned(),
            },
            Err(e) => format!("unknown ({e})"),
        };
        o.out(format!("{image}\t{}\t{kept}", source.as_str()));
    }
    o
}
