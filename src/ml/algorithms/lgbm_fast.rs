//! A compiled evaluator for LightGBM models, built from LightGBM's own model
//! string, several times faster than LightGBM's predictor.
//!
//! It evaluates exactly as LightGBM 4.7 does (`Tree::NumericalDecision`,
//! `GBDT::PredictRaw`, the objectives' `ConvertOutput`), so predictions are
//! bit-identical:
//! - input values with |v| <= kZeroThreshold (the f32 1e-35 widened to f64)
//!   become 0.0, as `RowPairFunctionFromDenseMatrix` drops them;
//! - per node: NaN becomes 0.0 unless the node's missing type is NaN; a
//!   missing value (zero for `MissingType::Zero`, NaN for `MissingType::NaN`)
//!   takes the default direction, anything else goes left when
//!   `value <= threshold` (both f64);
//! - trees are summed per class in tree order, in f64, from 0.0;
//! - binary: 1 / (1 + exp(-sigmoid * raw)); multiclass: LightGBM's softmax.
//!
//! Anything else (categorical splits, linear trees, `average_output`, an
//! objective with another output transform, a malformed string) makes
//! `FastModel::parse` return None and the caller keeps LightGBM's predictor.
//!
//! Speed comes from the traversal, not the arithmetic. A tree walk is a chain
//! of dependent loads and unpredictable branches, so LightGBM (one row, one
//! tree at a time, a branch per node) stalls on every split. Here each step
//! is branchless (`select_unpredictable`) and `LANES` independent walks are
//! interleaved, either `LANES` rows through one tree (batches) or one row
//! through `LANES` trees (the last few rows, single-row predictions), so the
//! CPU overlaps their latencies. Walks take a fixed number of steps, the
//! tree's (or group's) depth: a leaf is a node that leads to itself. Nodes
//! are 16 bytes in depth-first order, the left child right after its parent.

use std::hint::select_unpredictable;

use ndarray::ArrayView2;

use super::forest::{Child, Forest, Missing, Objective, Tree};
use super::lightgbm_text;

/// LightGBM's `kZeroThreshold`: `const double kZeroThreshold = 1e-35f;`.
const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

/// `Node::feature` bits: the missing value (NaN, or 0.0 for ZERO_MISSING)
/// goes left.
const DEFAULT_LEFT: u32 = 1 << 31;
/// `Node::feature` bits: 0.0 (and NaN, which LightGBM turns into 0.0) is
/// missing.
const ZERO_MISSING: u32 = 1 << 30;
const FEATURE_MASK: u32 = ZERO_MISSING - 1;

/// Walks interleaved.
const LANES: usize = 8;

/// Rows copied and evaluated together, tree by tree, so a tree's nodes stay
/// in L1.
const BLOCK_ROWS: usize = 64;

/// Rows each thread gets at least before a batch is split over threads.
const ROWS_PER_THREAD: usize = 1024;

/// A split, or a leaf. The left child is the next node; a split goes
/// right to `right`. A leaf has `right` = itself and reads the row's
/// trailing NaN slot (feature index = n_features, DEFAULT_LEFT clear), which
/// always goes right: a walk that reached it stays there.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Node {
    /// Split threshold; a leaf's value.
    value: f64,
    right: u32,
    /// Feature index (FEATURE_MASK bits) | DEFAULT_LEFT | ZERO_MISSING.
    feature: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Output {
    Identity,
    Sigmoid(f64),
    Softmax,
}

#[derive(Debug)]
pub struct FastModel {
    /// Every tree's nodes. Invariant (checked by `parse`): every `right` <
    /// nodes.len(), every split's next node exists, every feature index <=
    /// n_features; `evaluate` relies on it.
    nodes: Vec<Node>,
    /// Per tree, in LightGBM's order: (root node, steps to reach any leaf).
    trees: Vec<(u32, u32)>,
    /// Per group of LANES consecutive trees: the deepest tree's steps.
    group_depth: Vec<u32>,
    /// Trees per iteration = values per row (1, or num_class).
    outputs: usize,
    n_features: usize,
    output: Output,
    /// Some split treats zero as missing (zero_as_missing=true).
    zero_missing: bool,
}

impl FastModel {
    /// Builds the evaluator from `LGBM_BoosterSaveModelToString`'s text, or
    /// None when the model uses something this evaluator does not replicate
    /// or the text is malformed (the one reader of the format,
    /// `lightgbm_text`, says which; the caller then keeps LightGBM's
    /// predictor).
    pub fn parse(text: &str) -> Option<FastModel> {
        FastModel::from_forest(&lightgbm_text::parse(text).ok()?)
    }

    /// The evaluator of a checked forest.
    pub fn from_forest(forest: &Forest) -> Option<FastModel> {
        let n_features = forest.num_features;
        if n_features >= FEATURE_MASK as usize {
            return None;
        }
        let output = match forest.objective {
            Objective::Regression => Output::Identity,
            Objective::Binary { sigmoid } => Output::Sigmoid(sigmoid),
            Objective::Multiclass(_) => Output::Softmax,
        };
        let mut model = FastModel {
            nodes: Vec::new(),
            trees: Vec::new(),
            group_depth: Vec::new(),
            outputs: forest.objective.outputs(),
            n_features,
            output,
            zero_missing: false,
        };
        for tree in &forest.trees {
            model.add_tree(tree)?;
        }
        if model.trees.is_empty() || !model.trees.len().is_multiple_of(model.outputs) {
            return None;
        }
        model.group_depth = model
            .trees
            .chunks(LANES)
            .map(|g| g.iter().map(|t| t.1).max().unwrap_or(0))
            .collect();
        Some(model)
    }

    /// Appends one tree in depth-first order. The forest is checked (every
    /// node reached once from the root, features in range); what
    /// `evaluate` relies on is checked again here all the same.
    fn add_tree(&mut self, tree: &Tree) -> Option<()> {
        let leaf_feature = self.n_features as u32;
        let root = u32::try_from(self.nodes.len()).ok()?;
        let mut depth = 0u32;
        // (child; node to point right at it; its depth)
        let first = if tree.splits.is_empty() {
            Child::Leaf(0)
        } else {
            Child::Split(0)
        };
        let mut stack: Vec<(Child, Option<usize>, u32)> = vec![(first, None, 0)];
        while let Some((child, parent, d)) = stack.pop() {
            let me = u32::try_from(self.nodes.len()).ok()?;
            if me == u32::MAX {
                return None;
            }
            if let Some(p) = parent {
                self.nodes[p].right = me;
            }
            let split = match child {
                Child::Leaf(j) => {
                    self.nodes.push(Node {
                        value: tree.leaves.get(j)?.value,
                        right: me,
                        feature: leaf_feature,
                    });
                    depth = depth.max(d);
                    continue;
                }
                Child::Split(i) => tree.splits.get(i)?,
            };
            let feature = u32::try_from(split.feature)
                .ok()
                .filter(|&f| f < leaf_feature)?;
            let threshold = split.threshold;
            let flags = match split.missing {
                // None: NaN becomes 0.0 and is compared like any value.
                Missing::None => {
                    if 0.0 <= threshold {
                        DEFAULT_LEFT
                    } else {
                        0
                    }
                }
                // Zero: NaN becomes 0.0, and 0.0 goes the default way.
                Missing::Zero => {
                    self.zero_missing = true;
                    ZERO_MISSING | if split.default_left { DEFAULT_LEFT } else { 0 }
                }
                // NaN: NaN goes the default way.
                Missing::NaN => {
                    if split.default_left {
                        DEFAULT_LEFT
                    } else {
                        0
                    }
                }
            };
            self.nodes.push(Node {
                value: threshold,
                right: me, // patched when the right child is placed
                feature: feature | flags,
            });
            let d = d.checked_add(1)?;
            stack.push((split.right, Some(me as usize), d));
            stack.push((split.left, None, d));
        }
        self.trees.push((root, depth));
        Some(())
    }

    pub fn num_features(&self) -> usize {
        self.n_features
    }

    /// Values per row: 1 for regression and binary (P(class 1)), num_class
    /// for multiclass.
    pub fn num_outputs(&self) -> usize {
        self.outputs
    }

    /// LightGBM's `predict` (transformed output): rows × `num_outputs()`,
    /// row-major. `x` must have `num_features()` columns. Batches large
    /// enough are split over up to `threads` threads.
    pub fn predict(&self, x: ArrayView2<f64>, threads: usize) -> Vec<f64> {
        let mut out = self.predict_raw(x, threads);
        self.transform(&mut out);
        out
    }

    /// Raw scores (LightGBM's `raw_score=True`): rows × `num_outputs()`.
    pub fn predict_raw(&self, x: ArrayView2<f64>, threads: usize) -> Vec<f64> {
        let rows = x.nrows();
        let k = self.outputs;
        let mut out = vec![0.0; rows * k];
        if rows == 0 || x.ncols() != self.n_features {
            return out;
        }
        let threads = threads.clamp(1, rows.div_ceil(ROWS_PER_THREAD));
        if threads == 1 {
            self.raw_rows(x, &mut out);
            return out;
        }
        let per = rows.div_ceil(threads);
        std::thread::scope(|s| {
            for (i, chunk) in out.chunks_mut(per * k).enumerate() {
                let start = i * per;
                let part = x.slice(ndarray::s![start..start + chunk.len() / k, ..]);
                s.spawn(move || self.raw_rows(part, chunk));
            }
        });
        out
    }

    /// Raw scores of `x` into `out` (zeroed, rows × outputs), a block of
    /// rows at a time.
    fn raw_rows(&self, x: ArrayView2<f64>, out: &mut [f64]) {
        if self.zero_missing {
            self.raw_rows_with::<true>(x, out);
        } else {
            self.raw_rows_with::<false>(x, out);
        }
    }

    fn raw_rows_with<const ZERO: bool>(&self, x: ArrayView2<f64>, out: &mut [f64]) {
        let nf = self.n_features;
        let width = nf + 1;
        let k = self.outputs;
        let mut block = vec![f64::NAN; x.nrows().min(BLOCK_ROWS) * width];
        for (b, scores) in out.chunks_mut(BLOCK_ROWS * k).enumerate() {
            let n = scores.len() / k;
            let first = b * BLOCK_ROWS;
            for r in 0..n {
                let dst = &mut block[r * width..r * width + nf];
                for (d, &v) in dst.iter_mut().zip(x.row(first + r)) {
                    // LightGBM drops |v| <= kZeroThreshold from the row.
                    *d = if v.abs() <= ZERO_THRESHOLD { 0.0 } else { v };
                }
            }
            // LANES rows at a time through each tree...
            let lanes_rows = n - n % LANES;
            for (t, &(root, depth)) in self.trees.iter().enumerate() {
                let class = t % k;
                for r0 in (0..lanes_rows).step_by(LANES) {
                    let rows = &block[r0 * width..(r0 + LANES) * width];
                    let mut at = [root; LANES];
                    for _ in 0..depth {
                        for (l, a) in at.iter_mut().enumerate() {
                            *a = self.step::<ZERO>(*a, &rows[l * width..(l + 1) * width]);
                        }
                    }
                    for (l, a) in at.iter().enumerate() {
                        scores[(r0 + l) * k + class] += self.nodes[*a as usize].value;
                    }
                }
            }
            // ...and the rest one row at a time through LANES trees.
            for r in lanes_rows..n {
                let row = &block[r * width..(r + 1) * width];
                let score = &mut scores[r * k..(r + 1) * k];
                self.row_by_tree_groups::<ZERO>(row, score);
            }
        }
    }

    fn row_by_tree_groups<const ZERO: bool>(&self, row: &[f64], score: &mut [f64]) {
        let k = self.outputs;
        for (g, (group, &depth)) in self.trees.chunks(LANES).zip(&self.group_depth).enumerate() {
            let mut at = [0u32; LANES];
            for (a, t) in at.iter_mut().zip(group) {
                *a = t.0;
            }
            if group.len() == LANES {
                for _ in 0..depth {
                    for a in at.iter_mut() {
                        *a = self.step::<ZERO>(*a, row);
                    }
                }
            } else {
                for (a, t) in at.iter_mut().zip(group) {
                    for _ in 0..t.1 {
                        *a = self.step::<ZERO>(*a, row);
                    }
                }
            }
            for (l, a) in at.iter().take(group.len()).enumerate() {
                score[(g * LANES + l) % k] += self.nodes[*a as usize].value;
            }
        }
    }

    /// One step of a walk: the node after `at` for `row` (n_features + 1
    /// values, the last NaN).
    #[inline(always)]
    fn step<const ZERO: bool>(&self, at: u32, row: &[f64]) -> u32 {
        debug_assert!((at as usize) < self.nodes.len());
        // SAFETY: `at` is a root or a node reached from one, all < nodes.len()
        // (the `nodes` invariant).
        let node = unsafe { self.nodes.get_unchecked(at as usize) };
        let f = node.feature;
        let index = (f & FEATURE_MASK) as usize;
        debug_assert!(index < row.len() && row.len() == self.n_features + 1);
        // SAFETY: feature indices are <= n_features (the `nodes` invariant)
        // and every row buffer holds n_features + 1 values.
        let v = unsafe { *row.get_unchecked(index) };
        let default_right = f & DEFAULT_LEFT == 0;
        // NaN: the default way (for missing type None, DEFAULT_LEFT is
        // `0.0 <= threshold`, where LightGBM's NaN-as-0.0 goes).
        let mut right = (v > node.value) | (v.is_nan() & default_right);
        if ZERO {
            let missing = (f & ZERO_MISSING != 0) & (v == 0.0);
            right = (right & !missing) | (missing & default_right);
        }
        select_unpredictable(right, node.right, at + 1)
    }

    fn transform(&self, values: &mut [f64]) {
        match self.output {
            Output::Identity => {}
            Output::Sigmoid(sigmoid) => {
                for v in values.iter_mut() {
                    *v = 1.0 / (1.0 + (-sigmoid * *v).exp());
                }
            }
            Output::Softmax => {
                for row in values.chunks_exact_mut(self.outputs) {
                    softmax(row);
                }
            }
        }
    }
}

/// LightGBM's `Common::Softmax`, operation for operation.
fn softmax(row: &mut [f64]) {
    let mut wmax = row[0];
    for &v in &row[1..] {
        // std::max(v, wmax)
        wmax = if v < wmax { wmax } else { v };
    }
    let mut wsum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - wmax).exp();
        wsum += *v;
    }
    for v in row.iter_mut() {
        *v /= wsum;
    }
}

#[cfg(test)]
mod tests;
