//! Progress of the training stages on standard error: a live bar (indicatif) when standard
//! error is a terminal, otherwise plain lines now and then (a log file, CI, a pipe), each with
//! the stage, step/total, loss, rate and the time left:
//!
//! ```text
//! [sft] step 240/1600 (15.0%) loss 2.3457 | 4.00 steps/s | elapsed 1m00s | eta 5m40s
//! ```
//!
//! [`TrainProgress`] is an [`Observer`] of the training loop:
//!
//! ```no_run
//! let mut progress = apo_train::train::TrainProgress::stderr();
//! // pass `&mut progress` as the `observer` of apo_train::train::sft / apo
//! ```

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::{Observer, StepMetrics};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often plain lines are written by default.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// The bar's layout: stage, bar, step/total, loss (and stage-2 accuracy), rate, time left.
const BAR_TEMPLATE: &str =
    "{prefix:>8} [{bar:32.cyan/blue}] {pos}/{len} {msg} | {rate} | eta {eta}";

/// Training progress on standard error: a bar on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct TrainProgress {
    /// A live bar (else plain lines).
    live: bool,
    /// At most one plain line per `every` within a stage.
    every: Duration,
    seen: Option<Seen>,
    last_line: Option<Instant>,
    bar: Option<ProgressBar>,
}

/// A stage as seen so far: its name, length, the first step seen and when, the last step.
#[derive(Debug, Clone)]
struct Seen {
    stage: String,
    total: usize,
    first_step: usize,
    first_at: Instant,
    last_step: usize,
}

impl TrainProgress {
    /// A bar when standard error is a terminal, otherwise a plain line every
    /// [`LINE_EVERY`] (and at a stage's first and last step).
    pub fn stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar()
        } else {
            Self::lines(LINE_EVERY)
        }
    }

    /// Always a bar (drawn only if standard error is a terminal).
    pub fn bar() -> Self {
        TrainProgress {
            live: true,
            ..Self::lines(LINE_EVERY)
        }
    }

    /// Always plain lines: at a stage's first and last step and at most once per `every`
    /// in between.
    pub fn lines(every: Duration) -> Self {
        TrainProgress {
            live: false,
            every,
            seen: None,
            last_line: None,
            bar: None,
        }
    }

    /// The stage of the latest step observed.
    pub fn stage(&self) -> Option<&str> {
        self.seen.as_ref().map(|s| s.stage.as_str())
    }

    /// The live bar of the current stage (none in plain-line mode).
    pub fn progress_bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
    }

    /// Notes step `m` of `total` at `now`; true when it starts a stage (a new stage, or the
    /// same one started again).
    fn track(&mut self, total: usize, m: &StepMetrics, now: Instant) -> bool {
        let fresh = self
            .seen
            .as_ref()
            .is_none_or(|s| s.stage != m.stage || s.total != total || m.step <= s.last_step);
        if fresh {
            self.seen = Some(Seen {
                stage: m.stage.clone(),
                total,
                first_step: m.step,
                first_at: now,
                last_step: m.step,
            });
        }
        if let Some(s) = &mut self.seen {
            s.last_step = m.step;
        }
        fresh
    }

    /// Observes step `m` of `total` at `now` and returns the plain line due, if any: at a
    /// stage's first and last step, and when `every` has passed since the previous line.
    pub fn line_at(&mut self, total: usize, m: &StepMetrics, now: Instant) -> Option<String> {
        let fresh = self.track(total, m, now);
        let due = fresh
            || m.step >= total
            || self
                .last_line
                .is_none_or(|t| now.duration_since(t) >= self.every);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        let seen = self.seen.as_ref()?;
        let elapsed = now.duration_since(seen.first_at);
        Some(plain_line(total, m, m.step - seen.first_step, elapsed))
    }

    /// Moves the bar to step `m` of `total` (a new bar for a new stage).
    fn bar_step(&mut self, total: usize, m: &StepMetrics) {
        if self.track(total, m, Instant::now()) {
            if let Some(old) = self.bar.take() {
                old.abandon();
            }
            let style = ProgressStyle::with_template(BAR_TEMPLATE)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2} steps/s", s.per_sec());
                })
                .progress_chars("=> ");
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_prefix(m.stage.clone())
                    .with_position(m.step as u64);
            // A resumed stage: the rate counts from here, not from step 0.
            bar.reset_eta();
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(metrics_text(m));
            bar.set_position(m.step as u64);
            if m.step >= total {
                bar.finish();
            }
        }
    }
}

impl Default for TrainProgress {
    fn default() -> Self {
        Self::stderr()
    }
}

impl Observer for TrainProgress {
    fn step(&mut self, total: usize, m: &StepMetrics) {
        if self.live {
            self.bar_step(total, m);
        } else if let Some(line) = self.line_at(total, m, Instant::now()) {
            eprintln!("{line}");
        }
    }
}

/// The loss, and in stage 2 the top-1 accuracy and margin, as the bar's message and the
/// lines' middle.
fn metrics_text(m: &StepMetrics) -> String {
    let mut s = format!("loss {:.4}", m.loss);
    if let Some(a) = m.top1_accuracy {
        let _ = write!(s, " top-1 {a:.2}");
    }
    if let Some(margin) = m.margin {
        let _ = write!(s, " margin {margin:.3}");
    }
    s
}

/// A duration as `42s`, `5m07s` or `2h03m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

/// One plain progress line: `m`'s stage, step of `total` and loss (plus stage-2 accuracy),
/// the rate over the `steps_run` steps run in `elapsed` (in this process: a resumed stage
/// starts counting where it resumed), the elapsed time and the time left at that rate
/// (`-` until a step has been timed).
pub fn plain_line(total: usize, m: &StepMetrics, steps_run: usize, elapsed: Duration) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        100.0 * m.step as f64 / total as f64
    };
    let secs = elapsed.as_secs_f64();
    let (rate, eta) = if steps_run > 0 && secs > 0.0 {
        let rate = steps_run as f64 / secs;
        let left = total.saturating_sub(m.step) as f64 / rate;
        (
            format!("{rate:.2} steps/s"),
            format_duration(Duration::from_secs_f64(left)),
        )
    } else {
        ("- steps/s".to_owned(), "-".to_owned())
    };
    format!(
        "[{}] step {}/{} ({pct:.1}%) {} | {rate} | elapsed {} | eta {eta}",
        m.stage,
        m.step,
        total,
        metrics_text(m),
        format_duration(elapsed)
    )
}
