//! Prediction rate and latency over time, per project: the prediction
//! counters sampled every few seconds while the dashboard is on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::app::App;

const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes.
const KEEP: usize = 120;

#[derive(Default)]
pub struct Rates {
    samples: parking_lot::Mutex<HashMap<String, VecDeque<Sample>>>,
    last: parking_lot::Mutex<Option<Instant>>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    rows: u64,
    batches: u64,
    nanos: u64,
}

/// A project's recent predictions.
pub struct Recent {
    /// Rows per second over each sampling interval, oldest first.
    pub per_second: Vec<f64>,
    /// Over the last minute: rows per second and mean batch latency (ms).
    pub rate: f64,
    pub latency_ms: Option<f64>,
}

impl Rates {
    fn record(&self, totals: Vec<(String, u64, u64, u64)>) {
        let now = Instant::now();
        let previous = self.last.lock().replace(now);
        let mut samples = self.samples.lock();
        for (project, rows, batches, nanos) in totals {
            let series = samples.entry(project).or_default();
            if let (true, Some(at)) = (series.is_empty(), previous) {
                // First predicted since the last sample: it had none then.
                series.push_back(Sample {
                    at,
                    rows: 0,
                    batches: 0,
                    nanos: 0,
                });
            }
            series.push_back(Sample {
                at: now,
                rows,
                batches,
                nanos,
            });
            while series.len() > KEEP {
                series.pop_front();
            }
        }
    }

    pub fn recent(&self, project: &str) -> Option<Recent> {
        let samples = self.samples.lock();
        let series = samples.get(project)?;
        let per_second = series
            .iter()
            .zip(series.iter().skip(1))
            .map(|(a, b)| rate(a, b))
            .collect();
        let last = series.back()?;
        let minute_ago = series
            .iter()
            .find(|s| last.at.duration_since(s.at) <= Duration::from_secs(60))
            .unwrap_or(last);
        let batches = last.batches.saturating_sub(minute_ago.batches);
        Some(Recent {
            per_second,
            rate: rate(minute_ago, last),
            latency_ms: (batches > 0)
                .then(|| last.nanos.saturating_sub(minute_ago.nanos) as f64 / batches as f64 / 1e6),
        })
    }
}

fn rate(a: &Sample, b: &Sample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs > 0.0 {
        b.rows.saturating_sub(a.rows) as f64 / secs
    } else {
        0.0
    }
}

/// Samples the counters until the dashboard is gone.
pub async fn sample(app: Arc<App>, rates: Weak<Rates>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let Some(rates) = rates.upgrade() else { return };
        rates.record(app.ml.metrics.prediction_totals());
    }
}
