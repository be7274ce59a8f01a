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
//! let mut progress = apo_cli::progress::TrainProgress::stderr();
//! // pass `&mut progress` as the `observer` of apo_train::train::sft / apo
//! ```

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use apo_train::train::{Observer, StepMetrics};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often plain lines are written by default.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// The bar's layout: stage, bar, step/total, loss (and stage-2 accuracy), rate, time left.
const BAR_TEMPLATE: &str =
    "{prefix:>8} [{bar:32.cyan/blue}] {pos}/{len} {msg} | {rate} | eta {eta}";

/// Training progress on standard error: a bar on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct TrainProgress {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Bar(Option<Bar>),
    Lines(Lines),
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
            mode: Mode::Bar(None),
        }
    }

    /// Always plain lines: at a stage's first and last step and at most once per `every`
    /// in between.
    pub fn lines(every: Duration) -> Self {
        TrainProgress {
            mode: Mode::Lines(Lines::new(every)),
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
        match &mut self.mode {
            Mode::Bar(bar) => {
                if bar.as_ref().is_none_or(|b| !b.continues(total, m)) {
                    if let Some(old) = bar.take() {
                        old.bar.abandon();
                    }
                    *bar = Some(Bar::new(total, m));
                }
                if let Some(b) = bar {
                    b.update(total, m);
                }
            }
            Mode::Lines(lines) => {
                if let Some(line) = lines.observe(total, m, Instant::now()) {
                    eprintln!("{line}");
                }
            }
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

/// A stage as seen so far: its name, length, the first step seen and when, the last step.
#[derive(Debug, Clone)]
struct Seen {
    stage: String,
    total: usize,
    first_step: usize,
    first_at: Instant,
    last_step: usize,
}

impl Seen {
    fn new(total: usize, m: &StepMetrics, now: Instant) -> Self {
        Seen {
            stage: m.stage.clone(),
            total,
            first_step: m.step,
            first_at: now,
            last_step: m.step,
        }
    }

    /// The same stage going on (not a new stage, nor the same one started again).
    fn continues(&self, total: usize, m: &StepMetrics) -> bool {
        self.stage == m.stage && self.total == total && m.step > self.last_step
    }
}

/// Plain lines: which steps get one.
#[derive(Debug)]
struct Lines {
    every: Duration,
    seen: Option<Seen>,
    last_line: Option<Instant>,
}

impl Lines {
    fn new(every: Duration) -> Self {
        Lines {
            every,
            seen: None,
            last_line: None,
        }
    }

    /// The line for this step, if one is due at `now`: at a stage's first and last step, and
    /// when `every` has passed since the previous line.
    fn observe(&mut self, total: usize, m: &StepMetrics, now: Instant) -> Option<String> {
        let fresh = self.seen.as_ref().is_none_or(|s| !s.continues(total, m));
        if fresh {
            self.seen = Some(Seen::new(total, m, now));
        }
        let seen = self.seen.as_mut()?;
        seen.last_step = m.step;
        let due = fresh
            || m.step >= total
            || self
                .last_line
                .is_none_or(|t| now.duration_since(t) >= self.every);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(plain_line(
            total,
            m,
            m.step - seen.first_step,
            now.duration_since(seen.first_at),
        ))
    }
}

/// A live bar for one stage.
#[derive(Debug)]
struct Bar {
    seen: Seen,
    bar: ProgressBar,
}

impl Bar {
    fn new(total: usize, m: &StepMetrics) -> Self {
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2} steps/s", s.per_sec());
            })
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(m.stage.clone())
            .with_position(m.step as u64);
        // A resumed stage: the rate counts from here, not from step 0.
        bar.reset_eta();
        Bar {
            seen: Seen::new(total, m, Instant::now()),
            bar,
        }
    }

    fn continues(&self, total: usize, m: &StepMetrics) -> bool {
        self.seen.continues(total, m)
    }

    fn update(&mut self, total: usize, m: &StepMetrics) {
        self.seen.last_step = m.step;
        self.bar.set_message(metrics_text(m));
        self.bar.set_position(m.step as u64);
        if m.step >= total {
            self.bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(stage: &str, step: usize, loss: f64) -> StepMetrics {
        StepMetrics {
            stage: stage.to_owned(),
            step,
            loss,
            ..Default::default()
        }
    }

    #[test]
    fn plain_line_has_stage_step_loss_rate_and_eta() {
        let line = plain_line(
            1600,
            &metrics("sft", 240, 2.345_67),
            240,
            Duration::from_secs(60),
        );
        assert_eq!(
            line,
            "[sft] step 240/1600 (15.0%) loss 2.3457 | 4.00 steps/s | elapsed 1m00s | eta 5m40s"
        );
    }

    #[test]
    fn plain_line_of_stage_two_has_accuracy_and_margin() {
        let m = StepMetrics {
            top1_accuracy: Some(0.625),
            margin: Some(0.1234),
            ..metrics("apo", 50, 0.5)
        };
        assert_eq!(
            plain_line(200, &m, 10, Duration::from_secs(4)),
            "[apo] step 50/200 (25.0%) loss 0.5000 top-1 0.62 margin 0.123 | 2.50 steps/s \
             | elapsed 4s | eta 1m00s"
        );
    }

    #[test]
    fn plain_line_before_any_timed_step_has_no_rate() {
        assert_eq!(
            plain_line(10, &metrics("sft", 1, 3.0), 0, Duration::ZERO),
            "[sft] step 1/10 (10.0%) loss 3.0000 | - steps/s | elapsed 0s | eta -"
        );
    }

    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(format_duration(Duration::from_secs_f64(59.9)), "59s");
        assert_eq!(format_duration(Duration::from_secs(307)), "5m07s");
        assert_eq!(format_duration(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn lines_come_at_the_first_and_last_step_and_every_interval() {
        let mut lines = Lines::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A stage resumed at step 101 of 110, one step a second.
        let printed: Vec<(usize, String)> = (101..=110)
            .filter_map(|step| {
                let line = lines.observe(110, &metrics("sft", step, 1.0), at(step as u64 - 101))?;
                Some((step, line))
            })
            .collect();
        let steps: Vec<usize> = printed.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [101, 106, 110]);
        // Five steps in five seconds since the resume: one step a second, four to go.
        assert_eq!(
            printed[1].1,
            "[sft] step 106/110 (96.4%) loss 1.0000 | 1.00 steps/s | elapsed 5s | eta 4s"
        );
        // The next stage starts afresh (its first step prints at once).
        let line = lines.observe(20, &metrics("apo", 1, 0.7), at(10)).unwrap();
        assert!(line.starts_with("[apo] step 1/20 "), "{line}");
        assert!(lines.observe(20, &metrics("apo", 2, 0.7), at(11)).is_none());
        // The same stage run again from step 1 is a new stage too.
        assert!(lines.observe(20, &metrics("apo", 1, 0.7), at(12)).is_some());
    }

    #[test]
    fn the_observer_runs_in_both_modes_without_a_terminal() {
        for mut p in [
            TrainProgress::bar(),
            TrainProgress::lines(Duration::from_secs(3600)),
        ] {
            for step in 1..=3 {
                p.step(3, &metrics("sft", step, 1.0 / step as f64));
            }
            p.step(2, &metrics("apo", 1, 0.5));
            match &p.mode {
                Mode::Bar(Some(b)) => {
                    assert_eq!(b.seen.stage, "apo");
                    assert_eq!(b.bar.position(), 1);
                    assert_eq!(b.bar.length(), Some(2));
                    assert_eq!(b.bar.message(), "loss 0.5000");
                }
                Mode::Lines(l) => assert_eq!(l.seen.as_ref().unwrap().stage, "apo"),
                Mode::Bar(None) => panic!("no bar after four steps"),
            }
        }
    }
}
