//! How fast an upstream must deliver a blob: a minimum rate, averaged over a window, below which
//! the body is cut (and resumed with `Range`, like a broken connection). The wait for a blob
//! response's headers is bounded by the upstream's `timeout` ([`crate::upstream::Upstream::blob`]).
//!
//! An upstream that sends one byte a second never trips a read timeout, so without a minimum rate
//! it holds a fill (and every client following it) for as long as it likes. The [`RateMeter`]
//! counts bytes against a virtual clock that only runs while wharf waits for the upstream: time
//! spent on our side (a slow client of a pass-through, a full queue to the disk) is not the
//! upstream's fault and is not counted. The meter is pure (it is handed the elapsed time), so its
//! rule is unit-tested exactly; [`PacedBody`] drives it with tokio's clock around a response body.
//!
//! The rule: from one window after the attempt started, the bytes received in every window-long
//! span must be at least `min_rate × window`. A new attempt (a resume) starts a new meter, so its
//! first bytes are measured from its own start.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::config::UpstreamConfig;

/// How fast one upstream must deliver blob bodies (from its `[[upstream]]` settings). Their
/// headers are bounded by the upstream's `timeout` ([`crate::upstream::Upstream::blob`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Bytes per second, averaged over `window`, below which a body is cut; 0 for no minimum.
    pub min_rate: u64,
    /// The span the rate is averaged over.
    pub window: Duration,
}

/// Bytes received against a virtual clock, and when they fall below the minimum rate.
#[derive(Debug, Clone)]
pub struct RateMeter {
    /// Bytes each window must bring (`min_rate × window`); 0 when there is no minimum.
    need: u64,
    window: Duration,
    /// Samples in the same span of this length are merged (the later time kept), so at most
    /// [`GRANULES`] + 2 samples are kept, however small the chunks.
    granule: Duration,
    total: u64,
    /// `(time, bytes received by then)`, oldest first; the first one is at or before the start of
    /// the window that ends at the latest sample.
    samples: VecDeque<(Duration, u64)>,
}

/// How finely a window is sampled. Merging moves bytes at most `window / GRANULES` later, which
/// only ever makes the meter more lenient, never cuts an upstream early.
const GRANULES: u32 = 16;

/// Why a paced body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum Cut {
    /// The connection broke (the HTTP client's error, kept for the log).
    #[error("the body broke off: {0}")]
    Broke(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream sent less than the minimum rate.
    #[error(
        "the upstream sent {received} bytes in the last {window:?}, below min_rate ({need} needed)"
    )]
    TooSlow {
        /// Bytes received in the last window.
        received: u64,
        /// Bytes the window needed.
        need: u64,
        /// The window.
        window: Duration,
    },
}

/// A response body read under a [`Pace`]: [`PacedBody::next`] ends with [`Cut::TooSlow`] as soon
/// as the upstream falls below the minimum rate, even when it sends nothing at all.
pub struct PacedBody {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    meter: RateMeter,
    /// Time spent waiting for the upstream: the meter's clock.
    waited: Duration,
    /// Leading bytes still to drop (a resume the upstream answered with the whole blob). They
    /// count as received for the meter: the upstream did send them.
    skip: u64,
}

// === impl Pace ===

impl Pace {
    /// The pace an upstream's configuration asks for.
    pub fn from_config(config: &UpstreamConfig) -> Self {
        Self {
            min_rate: config.min_rate,
            window: config.min_rate_window,
        }
    }

    /// Reads `response`'s body under this pace, dropping its first `skip` bytes; the meter starts
    /// now.
    pub(super) fn body(&self, response: reqwest::Response, skip: u64) -> PacedBody {
        PacedBody {
            body: response.bytes_stream().boxed(),
            meter: RateMeter::new(self.min_rate, self.window),
            waited: Duration::ZERO,
            skip,
        }
    }
}

// === impl RateMeter ===

impl RateMeter {
    /// A meter at time zero with nothing received, for a minimum of `min_rate` bytes per second
    /// over `window` (no minimum when `min_rate` or `window` is zero).
    pub fn new(min_rate: u64, window: Duration) -> Self {
        let need = u128::from(min_rate) * window.as_millis() / 1000;
        Self {
            need: u64::try_from(need).unwrap_or(u64::MAX),
            window,
            granule: (window / GRANULES).max(Duration::from_millis(1)),
            total: 0,
            samples: VecDeque::from([(Duration::ZERO, 0)]),
        }
    }

    /// Counts `bytes` received at time `at` (times never go backwards).
    pub fn record(&mut self, bytes: u64, at: Duration) {
        self.total = self.total.saturating_add(bytes);
        // Samples that have left the window are dropped, keeping the one at its start.
        if let Some(horizon) = at.checked_sub(self.window) {
            while self.samples.len() >= 2 && self.samples[1].0 <= horizon {
                self.samples.pop_front();
            }
        }
        // One sample per granule (never the first one, which marks where the counting starts).
        let granule = |t: Duration| t.as_nanos() / self.granule.as_nanos();
        let merge = self.samples.len() >= 2
            && self
                .samples
                .back()
                .is_some_and(|(last, _)| granule(*last) == granule(at));
        match self.samples.back_mut() {
            Some(last) if merge => *last = (at, self.total),
            _ => self.samples.push_back((at, self.total)),
        }
    }

    /// The time at which, if nothing more arrives, the rate is below the minimum; `None` when
    /// there is no minimum.
    pub fn deadline(&self) -> Option<Duration> {
        if self.need == 0 {
            return None;
        }
        // With nothing more, the window ending at `t` holds `total - (bytes by t - window)`, which
        // shrinks as `t` grows: the first sample after which too little came is what runs out.
        let at = self
            .samples
            .iter()
            .find(|(_, by_then)| self.total - by_then < self.need)
            .map_or(Duration::ZERO, |(t, _)| *t + self.window);
        Some(at.max(self.window))
    }

    /// Whether at time `now` the rate has fallen below the minimum.
    pub fn too_slow(&self, now: Duration) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Bytes received in the window that ends at `now` (as far as the samples tell).
    pub fn in_window(&self, now: Duration) -> u64 {
        let start = now.saturating_sub(self.window);
        let before = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= start)
            .map_or(0, |(_, by_then)| *by_then);
        self.total - before
    }

    /// Bytes received in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

// === impl PacedBody ===

impl PacedBody {
    /// The next chunk of the body past the bytes to skip (never empty); `None` at its end. After an
    /// error the body is over.
    ///
    /// # Errors
    /// [`Cut::Broke`] when the connection breaks, [`Cut::TooSlow`] when the upstream falls below
    /// the minimum rate.
    pub async fn next(&mut self) -> Option<Result<Bytes, Cut>> {
        loop {
            match self.next_received().await {
                Some(Ok(chunk)) => {
                    let chunk = skip_prefix(chunk, &mut self.skip);
                    if !chunk.is_empty() {
                        return Some(Ok(chunk));
                    }
                }
                other => return other,
            }
        }
    }

    /// The next chunk as received, skipped bytes included.
    async fn next_received(&mut self) -> Option<Result<Bytes, Cut>> {
        let began = tokio::time::Instant::now();
        let next = match self.meter.deadline() {
            Some(deadline) => {
                let left = deadline.saturating_sub(self.waited);
                tokio::time::timeout(left, self.body.next()).await.ok()
            }
            None => Some(self.body.next().await),
        };
        self.waited += began.elapsed();
        match next {
            Some(Some(Ok(chunk))) => {
                self.meter.record(chunk.len() as u64, self.waited);
                Some(Ok(chunk))
            }
            Some(Some(Err(e))) => Some(Err(Cut::Broke(Box::new(e)))),
            Some(None) => None,
            // The deadline passed with too little received.
            None => Some(Err(Cut::TooSlow {
                received: self.meter.in_window(self.waited),
                need: self.meter.need,
                window: self.meter.window,
            })),
        }
    }
}

/// Drops what is left of the first `skip` bytes of a body from `chunk` (a resumed download the
/// upstream answered from an earlier offset than asked), counting them off `skip`.
fn skip_prefix(chunk: Bytes, skip: &mut u64) -> Bytes {
    if *skip == 0 {
        return chunk;
    }
    let n = usize::try_from(*skip)
        .unwrap_or(usize::MAX)
        .min(chunk.len());
    *skip -= n as u64;
    chunk.slice(n..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_minimum_never_cuts() {
        for (rate, window) in [(0, 30 * S), (1000, Duration::ZERO)] {
            let mut m = RateMeter::new(rate, window);
            assert_eq!(m.deadline(), None);
            m.record(1, 100 * S);
            assert!(!m.too_slow(1000 * S));
        }
    }

    #[test]
    fn a_stall_from_the_start_is_cut_after_one_window() {
        let m = RateMeter::new(1000, 2 * S);
        assert_eq!(m.deadline(), Some(2 * S));
        assert!(!m.too_slow(ms(1999)));
        assert!(m.too_slow(2 * S));
    }

    #[test]
    fn a_trickle_is_cut_after_one_window_however_steady() {
        // 1 byte a second against 64 KiB/s over 30 s.
        let mut m = RateMeter::new(64 * 1024, 30 * S);
        for t in 1..=29 {
            m.record(1, t * S);
            assert!(!m.too_slow(t * S), "at {t}s");
        }
        m.record(1, 30 * S);
        assert!(m.too_slow(30 * S));
        assert_eq!(m.in_window(30 * S), 30);
    }

    #[test]
    fn a_steady_healthy_body_is_never_cut() {
        // 10 KiB every 10 ms is 1 MiB/s, against 64 KiB/s over 1 s.
        let mut m = RateMeter::new(64 * 1024, S);
        for i in 1..=2000u64 {
            let t = ms(10 * i);
            assert!(!m.too_slow(t), "at {t:?}");
            m.record(10 * 1024, t);
        }
        assert!(
            m.samples.len() <= GRANULES as usize + 3,
            "{}",
            m.samples.len()
        );
    }

    #[test]
    fn a_burst_then_silence_lasts_one_window_after_the_burst() {
        let mut m = RateMeter::new(1000, 2 * S);
        m.record(100_000, ms(100));
        // The burst covers the windows up to 2 s after it, and then nothing does.
        assert_eq!(m.deadline(), Some(ms(2100)));
        assert!(!m.too_slow(ms(2099)));
        assert!(m.too_slow(ms(2100)));
    }

    #[test]
    fn the_average_over_the_window_counts_not_each_chunk() {
        // 1000 B/s over 2 s needs 2000 bytes per window: 1000 bytes every second is just enough,
        // one second of silence in between is not.
        let mut m = RateMeter::new(1000, 2 * S);
        for t in 0..10 {
            m.record(1000, t * S);
            assert!(!m.too_slow(t * S), "at {t}s");
        }
        // A gap: nothing at 10 s, so the window (8 s, 10 s] holds 1000 bytes.
        assert!(!m.too_slow(ms(9999)));
        assert!(m.too_slow(10 * S));
        assert_eq!(m.deadline(), Some(10 * S));
    }

    #[test]
    fn slowing_down_midway_is_cut_one_window_later() {
        let mut m = RateMeter::new(1000, 2 * S);
        m.record(1_000_000, ms(10));
        // Then 100 B/s: the window after the burst holds 200 bytes, short of 2000.
        let mut cut = None;
        for i in 1..100 {
            let t = ms(10) + ms(100 * i);
            if m.too_slow(t) {
                cut = Some(t);
                break;
            }
            m.record(10, t);
        }
        let cut = cut.expect("cut");
        assert!(cut >= ms(2010) && cut <= ms(2200), "{cut:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_cuts_a_silent_body_at_the_deadline() {
        // A body that never sends anything, through the same code path as a response.
        let body = futures_util::stream::pending::<reqwest::Result<Bytes>>().boxed();
        let mut paced = PacedBody {
            body,
            meter: RateMeter::new(1000, 2 * S),
            waited: Duration::ZERO,
            skip: 0,
        };
        let started = tokio::time::Instant::now();
        let cut = paced.next().await;
        assert!(matches!(cut, Some(Err(Cut::TooSlow { received: 0, .. }))));
        assert_eq!(started.elapsed(), 2 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_passes_a_body_that_keeps_up() {
        let chunks = futures_util::stream::iter(0..50).then(|_| async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, reqwest::Error>(Bytes::from(vec![0u8; 500]))
        });
        let mut paced = PacedBody {
            body: chunks.boxed(),
            meter: RateMeter::new(1000, 2 * S),
            waited: Duration::ZERO,
            skip: 0,
        };
        let mut n = 0;
        while let Some(chunk) = paced.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, 50 * 500);
    }

    #[test]
    fn skip_prefix_spans_chunks() {
        let mut skip = 5;
        assert_eq!(skip_prefix(Bytes::from_static(b"abc"), &mut skip), "");
        assert_eq!(skip, 2);
        assert_eq!(skip_prefix(Bytes::from_static(b"defg"), &mut skip), "fg");
        assert_eq!(skip, 0);
        assert_eq!(skip_prefix(Bytes::from_static(b"hi"), &mut skip), "hi");
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_drops_the_prefix_to_skip() {
        let chunks = ["abc", "defg", "", "hi"].map(|c| Ok(Bytes::from_static(c.as_bytes())));
        let mut paced = PacedBody {
            body: futures_util::stream::iter(chunks).boxed(),
            meter: RateMeter::new(0, 2 * S),
            waited: Duration::ZERO,
            skip: 5,
        };
        let mut got = Vec::new();
        while let Some(chunk) = paced.next().await {
            got.push(chunk.unwrap());
        }
        assert_eq!(got, ["fg", "hi"]);
        assert_eq!(paced.meter.total(), 9);
    }
}
