//! ML statistics for /metrics and the admin console: trainings started,
//! failed and their duration, predictions per project and their latency.
//! Kept in their own Prometheus recorder, which the exporter renders along
//! with the pooler's counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use metrics::{counter, histogram, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Prediction latency buckets (seconds): a single-row predict is tens of
/// microseconds, a 10k-row batch tens of milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];
const TRAINING_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

pub struct MlStats {
    recorder: PrometheusRecorder,
    started: AtomicU64,
    failed: AtomicU64,
    /// Per project: predictions served (rows, not queries) and the
    /// registered metric handles, so a prediction costs no registry lookup.
    predictions: DashMap<String, ProjectStats>,
}

struct ProjectStats {
    rows: AtomicU64,
    /// Batches and their summed latency (ns), for the dashboard's mean.
    batches: AtomicU64,
    nanos: AtomicU64,
    counter: metrics::Counter,
    latency: metrics::Histogram,
}

impl Default for MlStats {
    fn default() -> MlStats {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("pgmlcat_prediction_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("pgmlcat_training_seconds".into()),
                    TRAINING_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        MlStats {
            recorder: builder.build_recorder(),
            started: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            predictions: DashMap::new(),
        }
    }
}

impl MlStats {
    /// The recorder the exporter renders (pooler counters are copied into it).
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    pub fn training_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        with_local_recorder(&self.recorder, || {
            counter!("pgmlcat_trainings_started_total").increment(1)
        });
    }

    pub fn training_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        with_local_recorder(&self.recorder, || {
            counter!("pgmlcat_trainings_failed_total").increment(1)
        });
    }

    pub fn training_finished(&self, algorithm: &str, elapsed: Duration) {
        let algorithm = algorithm.to_string();
        with_local_recorder(&self.recorder, || {
            histogram!("pgmlcat_training_seconds", "algorithm" => algorithm)
                .record(elapsed.as_secs_f64())
        });
    }

    /// One batch of `rows` predictions for `project`, computed in `elapsed`.
    pub fn predicted(&self, project: &str, rows: usize, elapsed: Duration) {
        let record = |s: &ProjectStats| {
            s.rows.fetch_add(rows as u64, Ordering::Relaxed);
            s.batches.fetch_add(1, Ordering::Relaxed);
            s.nanos
                .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
            s.counter.increment(rows as u64);
            s.latency.record(elapsed.as_secs_f64());
        };
        if let Some(s) = self.predictions.get(project) {
            return record(&s);
        }
        let stats = self
            .predictions
            .entry(project.to_string())
            .or_insert_with(|| {
                let label = project.to_string();
                with_local_recorder(&self.recorder, || ProjectStats {
                    rows: AtomicU64::new(0),
                    batches: AtomicU64::new(0),
                    nanos: AtomicU64::new(0),
                    counter: counter!("pgmlcat_predictions_total", "project" => label.clone()),
                    latency: histogram!("pgmlcat_prediction_seconds", "project" => label),
                })
            });
        record(&stats);
    }

    /// A scheduled run this process finished.
    pub fn schedule_run(&self, project: &str, outcome: &'static str) {
        let project = project.to_string();
        with_local_recorder(&self.recorder, || {
            counter!("pgmlcat_schedule_runs_total", "project" => project, "outcome" => outcome)
                .increment(1)
        });
    }

    pub fn predictions(&self, project: &str) -> u64 {
        self.predictions
            .get(project)
            .map_or(0, |s| s.rows.load(Ordering::Relaxed))
    }

    /// Every project predicted so far: (project, rows, batches, summed
    /// batch latency in ns).
    pub fn prediction_totals(&self) -> Vec<(String, u64, u64, u64)> {
        self.predictions
            .iter()
            .map(|e| {
                let s = e.value();
                (
                    e.key().clone(),
                    s.rows.load(Ordering::Relaxed),
                    s.batches.load(Ordering::Relaxed),
                    s.nanos.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    pub fn trainings(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
