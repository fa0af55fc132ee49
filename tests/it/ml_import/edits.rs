//! Edits of model texts, for the malformed and mutated models: LightGBM
//! text by key and token, XGBoost JSON by value.

use serde_json::Value;

/// `text` with the value of the `nth` line (0-based) that starts with
/// `key=` replaced by `f(value)`.
pub(super) fn edit(text: &str, key: &str, nth: usize, f: impl FnOnce(&str) -> String) -> String {
    let prefix = format!("{key}=");
    let mut f = Some(f);
    let mut seen = 0;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            if line.starts_with(&prefix) {
                seen += 1;
                if seen == nth + 1 {
                    let edit = f.take().unwrap();
                    return format!("{prefix}{}", edit(&line[prefix.len()..]));
                }
            }
            line.to_string()
        })
        .collect();
    assert!(f.is_none(), "no line {nth} starting with {prefix}");
    lines.join("\n")
}

/// Replaces the `i`th space-separated token.
pub(super) fn set_token(i: usize, new: &str) -> impl FnOnce(&str) -> String {
    let new = new.to_string();
    move |v: &str| {
        let mut t: Vec<&str> = v.split(' ').collect();
        t[i] = &new;
        t.join(" ")
    }
}

pub(super) fn tokens(text: &str, key: &str, nth: usize) -> Vec<String> {
    let prefix = format!("{key}=");
    text.split('\n')
        .filter(|l| l.starts_with(&prefix))
        .nth(nth)
        .unwrap_or_else(|| panic!("no line {nth} starting with {prefix}"))[prefix.len()..]
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// The header's `tree_sizes=` recomputed from the trees as they now are,
/// so that LightGBM's own loader would read an edited model tree by tree
/// (the check that refuses it must be pgmlcat's). Unchanged when the text
/// has no trees or no such line.
pub(super) fn fix_tree_sizes(text: &str) -> String {
    let mut starts: Vec<usize> = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("Tree=") || line.starts_with("end of trees") {
            starts.push(at);
        }
        at += line.len();
    }
    if starts.len() < 2 || !text.contains("\ntree_sizes=") {
        return text.to_string();
    }
    let sizes: Vec<String> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).to_string())
        .collect();
    edit(text, "tree_sizes", 0, |_| sizes.join(" "))
}

pub(super) fn xgb_edit(model: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(model).expect("xgboost JSON");
    f(&mut v);
    v.to_string()
}

pub(super) fn tree_mut(v: &mut Value, t: usize) -> &mut Value {
    &mut v["learner"]["gradient_booster"]["model"]["trees"][t]
}

/// Whether some node of some tree of an XGBoost JSON model has `value` in
/// its `key` array.
pub(super) fn xgb_any_node(model: &str, key: &str, value: i64) -> bool {
    let v: Value = serde_json::from_str(model).expect("xgboost JSON");
    v["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .expect("trees")
        .iter()
        .any(|t| {
            t[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_i64() == Some(value)))
        })
}
