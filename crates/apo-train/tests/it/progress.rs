//! Progress of the training stages: plain lines and the live bar.

use std::time::{Duration, Instant};

use apo_train::train::{Observer, StepMetrics, TrainProgress, format_duration, plain_line};

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
    let mut lines = TrainProgress::lines(Duration::from_secs(5));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    // A stage resumed at step 101 of 110, one step a second.
    let printed: Vec<(usize, String)> = (101..=110)
        .filter_map(|step| {
            let line = lines.line_at(110, &metrics("sft", step, 1.0), at(step as u64 - 101))?;
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
    let line = lines.line_at(20, &metrics("apo", 1, 0.7), at(10)).unwrap();
    assert!(line.starts_with("[apo] step 1/20 "), "{line}");
    assert!(lines.line_at(20, &metrics("apo", 2, 0.7), at(11)).is_none());
    // The same stage run again from step 1 is a new stage too.
    assert!(lines.line_at(20, &metrics("apo", 1, 0.7), at(12)).is_some());
}

#[test]
fn the_observer_runs_in_both_modes_without_a_terminal() {
    for (live, mut p) in [
        (true, TrainProgress::bar()),
        (false, TrainProgress::lines(Duration::from_secs(3600))),
    ] {
        for step in 1..=3 {
            p.step(3, &metrics("sft", step, 1.0 / step as f64));
        }
        p.step(2, &metrics("apo", 1, 0.5));
        assert_eq!(p.stage(), Some("apo"));
        match p.progress_bar() {
            Some(b) => {
                assert!(live, "a bar in plain-line mode");
                assert_eq!(b.position(), 1);
                assert_eq!(b.length(), Some(2));
                assert_eq!(b.message(), "loss 0.5000");
            }
            None => assert!(!live, "no bar after four steps"),
        }
    }
}
