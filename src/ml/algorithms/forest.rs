//! A tree ensemble in LightGBM's form, checked before anything else sees
//! it: what LightGBM's text (`lightgbm_text`) and XGBoost's JSON
//! (`import`) are read into, what the compiled evaluator (`lgbm_fast`) is
//! built from, and, for an import, written back as LightGBM model text of
//! pgmlcat's own making. LightGBM's loader is never handed a user's text: tried with 40
//! mutated model files, LightGBM 4.7 aborted the process on 20, segfaulted
//! on 2 and looped forever on a tree with a cycle.

use std::fmt::Write;

use crate::ml::error::{MlError, MlResult};

/// Most features an imported model may use (the fast evaluator's limit is
/// far above; this bounds what a malformed header can make us allocate).
pub const MAX_FEATURES: usize = 1 << 20;

/// The output transform of the raw score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    Regression,
    /// P(positive) = 1 / (1 + exp(-sigmoid × raw)).
    Binary {
        sigmoid: f64,
    },
    /// Softmax over one raw score per class.
    Multiclass(usize),
}

impl Objective {
    /// Trees per boosting iteration: one per class for multiclass.
    pub fn outputs(self) -> usize {
        match self {
            Objective::Multiclass(k) => k,
            _ => 1,
        }
    }

    pub fn classes(self) -> usize {
        match self {
            Objective::Regression => 0,
            Objective::Binary { .. } => 2,
            Objective::Multiclass(k) => k,
        }
    }
}

/// What a value that is missing means at a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Missing {
    /// NaN is compared as 0.0.
    None,
    /// 0.0 (and NaN) take the default direction.
    Zero,
    /// NaN takes the default direction.
    NaN,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Child {
    Split(usize),
    Leaf(usize),
}

/// `value <= threshold` goes left.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub feature: usize,
    pub threshold: f64,
    pub default_left: bool,
    pub missing: Missing,
    pub left: Child,
    pub right: Child,
    pub gain: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub value: f64,
    /// Training rows (or hessian) behind the leaf: TreeSHAP's weights.
    pub count: f64,
}

/// One tree; `splits[0]` is the root unless the tree is a single leaf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    pub splits: Vec<Split>,
    pub leaves: Vec<Leaf>,
}

/// Trees in LightGBM's order: tree i adds to output i % outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    pub objective: Objective,
    pub num_features: usize,
    /// The model's own names, when it has them.
    pub feature_names: Vec<String>,
    pub trees: Vec<Tree>,
}

pub fn invalid(message: impl Into<String>) -> MlError {
    MlError::invalid(message.into())
}

impl Forest {
    /// Every check the evaluator and LightGBM's loader rely on: a tree is a
    /// tree (every node reached exactly once from the root, so no cycle
    /// and nothing dangling), features in range, finite numbers.
    pub fn validate(&self) -> MlResult<()> {
        if self.num_features == 0 || self.num_features > MAX_FEATURES {
            return Err(invalid(format!(
                "the model uses {} features; between 1 and {MAX_FEATURES} are supported",
                self.num_features
            )));
        }
        let outputs = self.objective.outputs();
        if self.trees.is_empty() {
            return Err(invalid("the model has no trees"));
        }
        if !self.trees.len().is_multiple_of(outputs) {
            return Err(invalid(format!(
                "{} trees is not a whole number of iterations of {outputs} classes",
                self.trees.len()
            )));
        }
        for (i, tree) in self.trees.iter().enumerate() {
            self.check_tree(tree)
                .map_err(|e| invalid(format!("tree {i}: {e}")))?;
        }
        Ok(())
    }

    fn check_tree(&self, tree: &Tree) -> Result<(), String> {
        if tree.leaves.is_empty() {
            return Err("it has no leaves".into());
        }
        if tree.splits.len() + 1 != tree.leaves.len() {
            return Err(format!(
                "{} splits and {} leaves; a binary tree has one leaf more than splits",
                tree.splits.len(),
                tree.leaves.len()
            ));
        }
        for (j, leaf) in tree.leaves.iter().enumerate() {
            if !leaf.value.is_finite() || !leaf.count.is_finite() || leaf.count < 0.0 {
                return Err(format!(
                    "leaf {j} has a value or count that is not a finite number"
                ));
            }
        }
        if tree.splits.is_empty() {
            return Ok(());
        }
        let mut seen_split = vec![false; tree.splits.len()];
        let mut seen_leaf = vec![false; tree.leaves.len()];
        let mut stack = vec![Child::Split(0)];
        while let Some(node) = stack.pop() {
            match node {
                Child::Leaf(j) => match seen_leaf.get_mut(j) {
                    None => {
                        return Err(format!("a child points to leaf {j}, which does not exist"))
                    }
                    Some(true) => return Err(format!("leaf {j} is reached twice")),
                    Some(seen) => *seen = true,
                },
                Child::Split(s) => {
                    match seen_split.get_mut(s) {
                        None => {
                            return Err(format!(
                                "a child points to split {s}, which does not exist"
                            ))
                        }
                        Some(true) => {
                            return Err(format!(
                                "split {s} is reached twice (a cycle or a shared node)"
                            ))
                        }
                        Some(seen) => *seen = true,
                    }
                    let split = &tree.splits[s];
                    if split.feature >= self.num_features {
                        return Err(format!(
                            "split {s} uses feature {}, but the model has {} features",
                            split.feature, self.num_features
                        ));
                    }
                    if !split.threshold.is_finite() || split.gain.is_nan() {
                        return Err(format!(
                            "split {s} has a threshold that is not a finite number"
                        ));
                    }
                    stack.push(split.right);
                    stack.push(split.left);
                }
            }
        }
        if let Some(s) = seen_split.iter().position(|s| !s) {
            return Err(format!("split {s} is not reachable from the root"));
        }
        if let Some(j) = seen_leaf.iter().position(|s| !s) {
            return Err(format!("leaf {j} is not reachable from the root"));
        }
        Ok(())
    }

    /// LightGBM's model text for a validated forest. Node counts are the
    /// leaves' counts summed up the tree (TreeSHAP needs them consistent),
    /// scaled into LightGBM's int32 when they are fractional or large.
    pub fn to_lightgbm_text(&self, names: &[String]) -> String {
        let k = self.objective.outputs();
        let objective = match self.objective {
            Objective::Regression => "regression".to_string(),
            Objective::Binary { sigmoid } => format!("binary sigmoid:{sigmoid:?}"),
            Objective::Multiclass(k) => format!("multiclass num_class:{k}"),
        };
        let names: Vec<String> = names.iter().map(|n| lightgbm_name(n)).collect();
        let mut out = String::new();
        let _ = write!(
            out,
            "tree\nversion=v4\nnum_class={}\nnum_tree_per_iteration={k}\nlabel_index=0\n\
             max_feature_idx={}\nobjective={objective}\nfeature_names={}\nfeature_infos={}\n\n",
            k,
            self.num_features - 1,
            names.join(" "),
            vec!["none"; self.num_features].join(" "),
        );
        for (i, tree) in self.trees.iter().enumerate() {
            write_tree(&mut out, i, tree);
        }
        out.push_str("end of trees\n");
        out
    }
}

/// LightGBM splits feature names at spaces; its own writer replaces them.
fn lightgbm_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

fn write_tree(out: &mut String, index: usize, tree: &Tree) {
    let counts = leaf_counts(tree);
    let joined = |values: Vec<String>| values.join(" ");
    let _ = writeln!(
        out,
        "Tree={index}\nnum_leaves={}\nnum_cat=0",
        tree.leaves.len()
    );
    if tree.splits.is_empty() {
        let _ = writeln!(
            out,
            "leaf_value={:?}\nis_linear=0\nshrinkage=1\n\n",
            tree.leaves[0].value
        );
        return;
    }
    let internal = internal_counts(tree, &counts);
    let child = |c: Child| match c {
        Child::Split(s) => s as i64,
        Child::Leaf(j) => !(j as i64),
    };
    let s = &tree.splits;
    let _ = writeln!(
        out,
        "split_feature={}",
        joined(s.iter().map(|x| x.feature.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "split_gain={}",
        joined(s.iter().map(|x| format!("{:?}", x.gain.max(0.0))).collect())
    );
    let _ = writeln!(
        out,
        "threshold={}",
        joined(s.iter().map(|x| format!("{:?}", x.threshold)).collect())
    );
    let _ = writeln!(
        out,
        "decision_type={}",
        joined(s.iter().map(|x| decision_type(x).to_string()).collect())
    );
    let _ = writeln!(
        out,
        "left_child={}",
        joined(s.iter().map(|x| child(x.left).to_string()).collect())
    );
    let _ = writeln!(
        out,
        "right_child={}",
        joined(s.iter().map(|x| child(x.right).to_string()).collect())
    );
    let _ = writeln!(
        out,
        "leaf_value={}",
        joined(
            tree.leaves
                .iter()
                .map(|l| format!("{:?}", l.value))
                .collect()
        )
    );
    let _ = writeln!(
        out,
        "leaf_weight={}",
        joined(counts.iter().map(|c| c.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "leaf_count={}",
        joined(counts.iter().map(|c| c.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "internal_value={}",
        joined(vec!["0".to_string(); s.len()])
    );
    let _ = writeln!(
        out,
        "internal_weight={}",
        joined(internal.iter().map(|c| c.to_string()).collect())
    );
    let _ = writeln!(
        out,
        "internal_count={}",
        joined(internal.iter().map(|c| c.to_string()).collect())
    );
    let _ = writeln!(out, "is_linear=0\nshrinkage=1\n\n");
}

/// LightGBM's decision_type bits: 2 = default left, (missing type) << 2.
fn decision_type(s: &Split) -> u8 {
    let missing = match s.missing {
        Missing::None => 0,
        Missing::Zero => 1,
        Missing::NaN => 2,
    };
    (u8::from(s.default_left) << 1) | (missing << 2)
}

/// Leaf counts as positive integers whose sum fits LightGBM's int32:
/// proportional to the given counts (hessian sums may be fractions).
fn leaf_counts(tree: &Tree) -> Vec<i64> {
    let total: f64 = tree.leaves.iter().map(|l| l.count).sum();
    let integral = tree.leaves.iter().all(|l| l.count.fract() == 0.0);
    let scale = if integral && total < 1e9 {
        1.0
    } else if total > 0.0 {
        1e9 / total
    } else {
        0.0
    };
    tree.leaves
        .iter()
        .map(|l| ((l.count * scale).round() as i64).max(1))
        .collect()
}

/// Each split's count: the sum of the leaves under it. Iterative (a
/// validated tree may still be a chain too deep to recurse down): splits
/// in reverse preorder come after both their children.
fn internal_counts(tree: &Tree, leaves: &[i64]) -> Vec<i64> {
    let mut preorder = Vec::with_capacity(tree.splits.len());
    let mut stack = vec![0usize];
    while let Some(s) = stack.pop() {
        preorder.push(s);
        for c in [tree.splits[s].right, tree.splits[s].left] {
            if let Child::Split(x) = c {
                stack.push(x);
            }
        }
    }
    let mut out = vec![0i64; tree.splits.len()];
    for &s in preorder.iter().rev() {
        let of = |c: Child, out: &[i64]| match c {
            Child::Leaf(j) => leaves[j],
            Child::Split(x) => out[x],
        };
        let split = &tree.splits[s];
        out[s] = of(split.left, &out).saturating_add(of(split.right, &out));
    }
    out
}
