//! The run list's chart of outcomes over time: one stacked bar per hour or
//! day of the filter, a segment per outcome (blocked its own series, never
//! part of failed), a y axis with a few labelled ticks, x labels thinned
//! to a dozen, a legend, a hover title per segment, and the same numbers
//! as a table for readers that do not see the picture.
//!
//! Inline SVG markup with presentation attributes only: the pages'
//! Content-Security-Policy allows no inline style and no script.

use chrono::{DateTime, Datelike, Utc};
use maud::{html, Markup};
use opledger::domain::model::RunOutcome;
use opledger_projections::monitoring::{
    BucketWidth, OutcomeBucket, OutcomesOverTime, OUTCOME_BUCKETS_MAX, OVER_TIME_RUNS_EXAMINED_MAX,
};

use super::chart::CHART_OUTCOMES;

/// The drawing's size and the plot area within it, in pixels.
const WIDTH: f64 = 760.0;
const PLOT_LEFT: f64 = 52.0;
const PLOT_RIGHT: f64 = 12.0;
const PLOT_TOP: f64 = 22.0;
const PLOT_HEIGHT: f64 = 180.0;
/// Room under the plot for two lines of x labels, then the legend's row.
const X_LABELS_HEIGHT: f64 = 34.0;
const LEGEND_HEIGHT: f64 = 24.0;
/// Most x labels drawn: past that only every few buckets is labelled.
const X_LABELS_MAX: usize = 12;
/// Most steps of the y axis above zero.
const Y_TICKS_MAX: u64 = 5;
/// Share of a bucket's width its bar takes, and the widest bar.
const BAR_SHARE: f64 = 0.8;
const BAR_WIDTH_MAX: f64 = 48.0;
const FONT_SIZE: u32 = 11;
const GRID_COLOR: &str = "#e4e7eb";
const AXIS_COLOR: &str = "#52606d";

/// The figure: the drawing, what it covers in words, and its numbers.
pub(super) fn outcomes_over_time(answer: &OutcomesOverTime) -> Markup {
    let unit = answer.width.word();
    html! {
        figure class="over-time" data-width=(unit) {
            @if answer.buckets.is_empty() {
                p class="note" { "No operations to chart in this time range." }
            } @else {
                (drawing(answer))
                figcaption {
                    "Operations by outcome per " (unit) ", " (range_words(answer)) " UTC."
                    @if answer.clamped {
                        " The range holds more than " (OUTCOME_BUCKETS_MAX) " " (unit) "s: the newest "
                        (OUTCOME_BUCKETS_MAX) " are shown."
                    }
                    @if let Some(from) = answer.counted_from {
                        " Counted over the newest " (OVER_TIME_RUNS_EXAMINED_MAX) " runs only, from "
                        (from.format("%Y-%m-%d %H:%M:%S")) " on."
                    }
                }
                (numbers(answer))
            }
        }
    }
}

fn drawing(answer: &OutcomesOverTime) -> Markup {
    let (top, step) = y_scale(answer.buckets.iter().map(OutcomeBucket::total).max().unwrap_or(0));
    let height = PLOT_TOP + PLOT_HEIGHT + X_LABELS_HEIGHT + LEGEND_HEIGHT;
    let label = format!("Operations by outcome per {}, {} UTC", answer.width.word(), range_words(answer));
    html! {
        svg role="img" aria-label=(label) width=(WIDTH) height=(height) viewBox={ "0 0 " (WIDTH) " " (height) } {
            title { (label) }
            (y_axis(top, step))
            g class="bars" {
                @for (i, bucket) in answer.buckets.iter().enumerate() {
                    (bar(answer, i, bucket, top))
                }
            }
            (x_axis(answer))
            (legend(answer.width))
        }
    }
}

/// The top of the y axis and its step: 1, 2 or 5 times a power of ten,
/// so that at most [`Y_TICKS_MAX`] steps reach the largest bar.
fn y_scale(largest: u64) -> (u64, u64) {
    let wanted = largest.div_ceil(Y_TICKS_MAX).max(1);
    let mut power = 1u64;
    let step = loop {
        if let Some(step) = [1u64, 2, 5].iter().map(|m| m.saturating_mul(power)).find(|step| *step >= wanted) {
            break step;
        }
        power = power.saturating_mul(10);
    };
    (largest.div_ceil(step).max(1).saturating_mul(step), step)
}

fn plot_width() -> f64 {
    WIDTH - PLOT_LEFT - PLOT_RIGHT
}

/// The y of a count, from the plot's bottom up.
fn y_of(count: u64, top: u64) -> f64 {
    PLOT_TOP + PLOT_HEIGHT - count as f64 / top as f64 * PLOT_HEIGHT
}

/// A coordinate as an attribute, to a tenth of a pixel.
fn px(value: f64) -> String {
    format!("{value:.1}")
}

fn y_axis(top: u64, step: u64) -> Markup {
    let right = PLOT_LEFT + plot_width();
    html! {
        g class="y-axis" {
            // An SVG element must be closed: HTML would nest what follows inside it.
            @for tick in (0..=top).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
                @let y = px(y_of(tick, top));
                line x1=(px(PLOT_LEFT)) x2=(px(right)) y1=(y) y2=(y) stroke=(GRID_COLOR) {}
                text x=(px(PLOT_LEFT - 6.0)) y=(y) dy="4" text-anchor="end" font-size=(FONT_SIZE) fill=(AXIS_COLOR) { (tick) }
            }
            line x1=(px(PLOT_LEFT)) x2=(px(PLOT_LEFT)) y1=(px(PLOT_TOP)) y2=(px(PLOT_TOP + PLOT_HEIGHT)) stroke=(AXIS_COLOR) {}
            text x="4" y="12" font-size=(FONT_SIZE) fill=(AXIS_COLOR) { "operations" }
        }
    }
}

/// One bucket's stacked segments, in the legend's order from the bottom.
fn bar(answer: &OutcomesOverTime, i: usize, bucket: &OutcomeBucket, top: u64) -> Markup {
    let band = plot_width() / answer.buckets.len() as f64;
    let width = (band * BAR_SHARE).clamp(1.0, BAR_WIDTH_MAX);
    let x = PLOT_LEFT + i as f64 * band + (band - width) / 2.0;
    let when = bucket_words(answer.width, bucket.start);
    let mut below = 0;
    let segments: Vec<(RunOutcome, &str, u64, u64)> = CHART_OUTCOMES
        .iter()
        .filter_map(|(outcome, color)| {
            let count = bucket.count(*outcome);
            below += count;
            (count > 0).then_some((*outcome, *color, count, below))
        })
        .collect();
    html! {
        g data-bucket=(bucket.start.to_rfc3339()) data-total=(bucket.total()) {
            @for (outcome, color, count, reached) in segments {
                rect data-series=(outcome.as_str()) data-count=(count) x=(px(x)) width=(px(width))
                    y=(px(y_of(reached, top))) height=(px(count as f64 / top as f64 * PLOT_HEIGHT)) fill=(color) {
                    title { (when) " UTC: " (count) " " (outcome.operator_word()) }
                }
            }
        }
    }
}

/// Every few buckets' label under the plot: the time, and under it the
/// date (of hours) or the year (of days) where it changes.
fn x_axis(answer: &OutcomesOverTime) -> Markup {
    let count = answer.buckets.len();
    let every = count.div_ceil(X_LABELS_MAX).max(1);
    let band = plot_width() / count as f64;
    let baseline = PLOT_TOP + PLOT_HEIGHT;
    let mut previous: Option<String> = None;
    let labels: Vec<(f64, String, Option<String>)> = answer
        .buckets
        .iter()
        .enumerate()
        .step_by(every)
        .map(|(i, bucket)| {
            let (first, second) = x_label(answer.width, bucket.start);
            let changed = previous.as_ref() != Some(&second);
            previous = Some(second.clone());
            (PLOT_LEFT + (i as f64 + 0.5) * band, first, changed.then_some(second))
        })
        .collect();
    html! {
        g class="x-axis" {
            line x1=(px(PLOT_LEFT)) x2=(px(PLOT_LEFT + plot_width())) y1=(px(baseline)) y2=(px(baseline)) stroke=(AXIS_COLOR) {}
            @for (x, first, second) in labels {
                text x=(px(x)) y=(px(baseline + 14.0)) text-anchor="middle" font-size=(FONT_SIZE) fill=(AXIS_COLOR) { (first) }
                @if let Some(second) = second {
                    text x=(px(x)) y=(px(baseline + 27.0)) text-anchor="middle" font-size=(FONT_SIZE) fill=(AXIS_COLOR) { (second) }
                }
            }
        }
    }
}

/// A bucket's two label lines.
fn x_label(width: BucketWidth, start: DateTime<Utc>) -> (String, String) {
    match width {
        BucketWidth::Hour => (start.format("%H:00").to_string(), start.format("%m-%d").to_string()),
        BucketWidth::Day => (start.format("%m-%d").to_string(), start.year().to_string()),
    }
}

/// Each outcome's colour and word, in the stacking order, then the unit.
fn legend(width: BucketWidth) -> Markup {
    let y = PLOT_TOP + PLOT_HEIGHT + X_LABELS_HEIGHT;
    let mut x = PLOT_LEFT;
    let items: Vec<(f64, RunOutcome, &str)> = CHART_OUTCOMES
        .iter()
        .map(|(outcome, color)| {
            let at = x;
            // Room for the swatch, the word at about 6.5 px a character, a gap.
            x += 16.0 + 6.5 * outcome.operator_word().len() as f64 + 18.0;
            (at, *outcome, *color)
        })
        .collect();
    html! {
        g class="legend" {
            @for (x, outcome, color) in items {
                g data-legend=(outcome.as_str()) {
                    rect x=(px(x)) y=(px(y + 4.0)) width="11" height="11" fill=(color) {}
                    text x=(px(x + 16.0)) y=(px(y + 14.0)) font-size=(FONT_SIZE + 1) { (outcome.operator_word()) }
                }
            }
            text x=(px(WIDTH - PLOT_RIGHT)) y=(px(y + 14.0)) text-anchor="end" font-size=(FONT_SIZE) fill=(AXIS_COLOR) {
                "one bar per " (width.word()) " (UTC)"
            }
        }
    }
}

/// The chart's numbers as a table, folded away under its summary.
fn numbers(answer: &OutcomesOverTime) -> Markup {
    html! {
        details class="over-time-numbers" {
            summary { "The chart's numbers" }
            table {
                thead { tr {
                    th { (answer.width.word()) " (UTC)" }
                    @for (outcome, _) in CHART_OUTCOMES { th { (outcome.operator_word()) } }
                } }
                tbody {
                    @for bucket in &answer.buckets {
                        tr {
                            td { (bucket_words(answer.width, bucket.start)) }
                            @for (outcome, _) in CHART_OUTCOMES { td { (bucket.count(outcome)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A bucket in words: `2024-01-05 14:00` or `2024-01-05`.
fn bucket_words(width: BucketWidth, start: DateTime<Utc>) -> String {
    match width {
        BucketWidth::Hour => start.format("%Y-%m-%d %H:00").to_string(),
        BucketWidth::Day => start.format("%Y-%m-%d").to_string(),
    }
}

/// The first bucket to the last, in words.
fn range_words(answer: &OutcomesOverTime) -> String {
    let words = |bucket: Option<&OutcomeBucket>| bucket.map(|b| bucket_words(answer.width, b.start));
    match (words(answer.buckets.first()), words(answer.buckets.last())) {
        (Some(first), Some(last)) if first != last => format!("{first} to {last}"),
        (Some(only), _) => only,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::y_scale;

    #[test]
    fn the_y_axis_steps_by_one_two_or_five_times_a_power_of_ten_and_reaches_the_largest_bar() {
        assert_eq!(y_scale(0), (1, 1));
        assert_eq!(y_scale(3), (3, 1));
        assert_eq!(y_scale(7), (8, 2));
        assert_eq!(y_scale(23), (25, 5));
        assert_eq!(y_scale(100), (100, 20));
        assert_eq!(y_scale(4321), (5000, 1000));
    }
}
