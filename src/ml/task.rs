//! The four kinds of work pgml.train does, as PostgresML names them.

use serde::{Deserialize, Serialize};

use super::error::{MlError, MlResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
    Clustering,
    Decomposition,
}

impl Task {
    pub const ALL: [Task; 4] = [
        Task::Regression,
        Task::Classification,
        Task::Clustering,
        Task::Decomposition,
    ];

    pub fn parse(name: &str) -> MlResult<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                MlError::invalid(format!(
                    "unknown task \"{name}\"; valid tasks: regression, classification, clustering, decomposition"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Regression => "regression",
            Task::Classification => "classification",
            Task::Clustering => "clustering",
            Task::Decomposition => "decomposition",
        }
    }

    /// Whether training needs a label column.
    pub fn supervised(self) -> bool {
        matches!(self, Task::Regression | Task::Classification)
    }

    /// The metric deployments compare; higher is better for all of them.
    pub fn key_metric(self) -> &'static str {
        match self {
            Task::Regression => "r2",
            Task::Classification => "f1",
            Task::Clustering => "silhouette",
            Task::Decomposition => "cumulative_explained_variance",
        }
    }
}
