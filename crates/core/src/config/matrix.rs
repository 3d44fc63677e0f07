//! `matrix:` — one stage definition, several variants (the paper's Tables 4 and 5 are
//! sweeps over loss, pretraining, backbone and image size).
//!
//! ```yaml
//! train:
//!   kind: train
//!   params: { epochs: 160 }
//!   matrix:
//!     loss: [bce, asl, dbl]
//!     architecture: [densenet121, efficientnet_b2]
//!     exclude: [{ loss: dbl, architecture: densenet121 }]
//!     include: [{ loss: asl, architecture: efficientnet_b2, lr: 0.0005 }]
//! evaluate:
//!   inputs: [train, split.split]
//! ```
//!
//! The stage becomes one stage per combination of the listed values, each value set
//! as a param over `params:`. Variants are named after the stage and their values,
//! `train@bce-densenet121`, so `pipe status`, `pipe path` and the cache views show
//! them apart. `exclude` drops the combinations it matches; `include` adds params to
//! the combinations it matches on the matrix keys, or adds a combination when it
//! matches none (GitHub Actions' rules), which is how one variant gets a param of its
//! own. A stage that takes a matrix stage as input fans out with it: one
//! `evaluate@bce-densenet121` per train variant (and a stage downstream of several
//! takes consistent variants only: the evaluate of train@bce goes with train@bce).
//!
//! Expansion happens on the merged YAML, before validation, so each variant is an
//! ordinary stage: its own params, its own key, cached and rerun on its own. The names
//! never enter a key, so renaming a variant's values (not the values themselves)
//! reruns nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use super::RawStage;

/// The separator between a stage's name and its variant's values.
pub const VARIANT: char = '@';

/// A problem with a `matrix:`, at a dotted path of the pipeline file.
#[derive(Debug)]
pub(super) struct MatrixError {
    pub path: String,
    pub message: String,
}

/// One variant of a stage: its name, the params its combination sets, and which
/// variant of each expanded stage upstream it goes with.
#[derive(Clone)]
struct Variant {
    name: String,
    /// Per matrix stage it derives from (upstream ones first, then its own), the value
    /// names of its combination: the variant's name is made of them.
    parts: Vec<(String, Vec<String>)>,
    params: Mapping,
    /// Expanded stage (original name) → the variant chosen, for this stage and every
    /// expanded stage upstream of it.
    chosen: BTreeMap<String, String>,
}

/// A value as part of a variant name: letters, digits and `_`; a path by its file stem.
fn value_name(v: &Value) -> String {
    let text = match v {
        Value::Null => "none".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let s = s.trim_end_matches('/');
            match s.rsplit_once('/') {
                Some((_, file)) => file.split('.').next().unwrap_or(file).to_string(),
                None => s.to_string(),
            }
        }
        other => serde_yaml::to_string(other).unwrap_or_default(),
    };
    let name: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    let name = name.trim_matches('_').to_string();
    if name.is_empty() { "_".into() } else { name }
}

/// The combinations a stage's `matrix:` makes (each the params it sets), in order: the
/// product of the listed values (first key slowest), less `exclude`, plus `include`.
fn combinations(stage: &str, matrix: &Value) -> Result<Vec<(Vec<String>, Mapping)>, MatrixError> {
    let at = |sub: &str| format!("stages.{stage}.matrix{sub}");
    let err = |path: String, message: String| MatrixError { path, message };
    let Value::Mapping(m) = matrix else {
        return Err(err(at(""), "matrix: must map param names to lists of values".into()));
    };
    let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            return Err(err(at(""), format!("matrix: key {k:?} is not a param name")));
        };
        let list = |what: &str| -> Result<Vec<Mapping>, MatrixError> {
            let Value::Sequence(items) = v else {
                return Err(err(
                    at(&format!(".{key}")),
                    format!("matrix.{what}: must be a list of param mappings"),
                ));
            };
            items
                .iter()
                .map(|i| match i {
                    Value::Mapping(m) if !m.is_empty() => Ok(m.clone()),
                    _ => Err(err(
                        at(&format!(".{key}")),
                        format!("matrix.{what}: each entry maps params to values"),
                    )),
                })
                .collect()
        };
        match key {
            "include" => include = list("include")?,
            "exclude" => exclude = list("exclude")?,
            _ => match v {
                Value::Sequence(values) if !values.is_empty() => axes.push((key.to_string(), values.clone())),
                _ => {
                    return Err(err(
                        at(&format!(".{key}")),
                        format!("matrix.{key}: give a non-empty list of values"),
                    ));
                }
            },
        }
    }
    if axes.is_empty() && include.is_empty() {
        return Err(err(at(""), "matrix: list at least one param with its values".into()));
    }
    let keys: Vec<&String> = axes.iter().map(|(k, _)| k).collect();
    let mut combos: Vec<Mapping> = vec![Mapping::new()];
    for (key, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(Value::String(key.clone()), v.clone());
                    c
                })
            })
            .collect();
    }
    let matches = |combo: &Mapping, pattern: &Mapping, only_matrix_keys: bool| {
        pattern.iter().all(|(k, v)| {
            let is_axis = k.as_str().is_some_and(|k| keys.iter().any(|a| a.as_str() == k));
            (only_matrix_keys && !is_axis) || combo.get(k) == Some(v)
        })
    };
    combos.retain(|c| !exclude.iter().any(|x| matches(c, x, false)));
    for inc in include {
        let mut hit = false;
        for c in combos.iter_mut().filter(|c| matches(c, &inc, true)) {
            hit = true;
            for (k, v) in &inc {
                c.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !hit {
            combos.push(inc.clone());
        }
    }
    Ok(combos
        .into_iter()
        .map(|c| {
            // Named by the matrix keys' values (an include's extra params do not rename);
            // a combination an include added is named by all of its values.
            let mut suffix: Vec<String> = keys.iter().filter_map(|k| c.get(k.as_str())).map(value_name).collect();
            if suffix.is_empty() {
                suffix = c.values().map(value_name).collect();
            }
            (suffix, c)
        })
        .collect())
}

/// The stage names an input list refers to.
fn upstream_of(raw: &RawStage) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in raw.inputs.iter().flatten() {
        let stage = i.split_once('.').map_or(i.as_str(), |(s, _)| s).to_string();
        if !out.contains(&stage) {
            out.push(stage);
        }
    }
    out
}

/// Every stage's variants, upstream first (memoised; a cycle is left to the DAG check).
fn variants_of(
    name: &str,
    stages: &IndexMap<String, RawStage>,
    memo: &mut HashMap<String, Vec<Variant>>,
    visiting: &mut HashSet<String>,
) -> Result<Vec<Variant>, MatrixError> {
    if let Some(v) = memo.get(name) {
        return Ok(v.clone());
    }
    let plain = || Variant {
        name: name.to_string(),
        parts: Vec::new(),
        params: Mapping::new(),
        chosen: BTreeMap::new(),
    };
    let Some(raw) = stages.get(name) else {
        return Ok(vec![plain()]);
    };
    if !visiting.insert(name.to_string()) {
        return Ok(vec![plain()]);
    }
    // The consistent choices among the expanded stages upstream.
    let mut upstream: Vec<Variant> = vec![plain()];
    for u in upstream_of(raw) {
        if !stages.contains_key(&u) || u == name {
            continue;
        }
        let theirs = variants_of(&u, stages, memo, visiting)?;
        if theirs.len() == 1 && theirs[0].chosen.is_empty() {
            continue;
        }
        let mut next = Vec::new();
        for mine in &upstream {
            for t in &theirs {
                let agrees = t.chosen.iter().all(|(k, v)| mine.chosen.get(k).is_none_or(|m| m == v));
                if !agrees {
                    continue;
                }
                let mut v = mine.clone();
                // A matrix stage already reached through an earlier input names once.
                for part in &t.parts {
                    if !v.parts.iter().any(|(s, _)| *s == part.0) {
                        v.parts.push(part.clone());
                    }
                }
                v.chosen.extend(t.chosen.clone());
                next.push(v);
            }
        }
        upstream = next;
    }
    visiting.remove(name);
    let own = match &raw.matrix {
        Some(m) => combinations(name, m)?,
        None => vec![(Vec::new(), Mapping::new())],
    };
    let mut out = Vec::new();
    for u in &upstream {
        for (suffix, params) in &own {
            let mut v = u.clone();
            if raw.matrix.is_some() {
                v.parts.push((name.to_string(), suffix.clone()));
            }
            v.params = params.clone();
            let suffix: Vec<&str> = v.parts.iter().flat_map(|(_, s)| s.iter().map(String::as_str)).collect();
            v.name = if suffix.is_empty() {
                name.to_string()
            } else {
                format!("{name}{VARIANT}{}", suffix.join("-"))
            };
            if raw.matrix.is_some() {
                v.chosen.insert(name.to_string(), v.name.clone());
            }
            out.push(v);
        }
    }
    // Fanned out only: this stage's variant is implied by the upstream choice.
    if raw.matrix.is_none() && out.len() > 1 {
        for v in &mut out {
            v.chosen.insert(name.to_string(), v.name.clone());
        }
    }
    let mut seen = HashSet::new();
    for v in &out {
        if !seen.insert(v.name.clone()) {
            return Err(MatrixError {
                path: format!("stages.{name}.matrix"),
                message: format!(
                    "matrix: two variants would both be named `{}`; make their values differ in letters or digits",
                    v.name
                ),
            });
        }
    }
    memo.insert(name.to_string(), out.clone());
    Ok(out)
}

/// Stages after expansion, and each variant's original stage name.
type Expanded = (IndexMap<String, RawStage>, HashMap<String, String>);

/// The stages with every matrix expanded and every fan-out made, in file order (each
/// stage's variants where it stood), and each variant's original stage name.
pub(super) fn expand(stages: &IndexMap<String, RawStage>) -> Result<Expanded, MatrixError> {
    let mut memo = HashMap::new();
    let mut out = IndexMap::new();
    let mut origins = HashMap::new();
    for (name, raw) in stages {
        let variants = variants_of(name, stages, &mut memo, &mut HashSet::new())?;
        for v in variants {
            let mut stage = raw.clone();
            stage.matrix = None;
            if !v.params.is_empty() {
                let mut params = stage.params.take().unwrap_or(Value::Mapping(Mapping::new()));
                if let Value::Mapping(p) = &mut params {
                    for (k, val) in v.params {
                        p.insert(k, val);
                    }
                }
                stage.params = Some(params);
            }
            // Inputs point at the chosen variants.
            if let Some(inputs) = &mut stage.inputs {
                for i in inputs.iter_mut() {
                    let (s, table) = match i.split_once('.') {
                        Some((s, t)) => (s.to_string(), Some(t.to_string())),
                        None => (i.clone(), None),
                    };
                    if let Some(chosen) = v.chosen.get(&s).filter(|_| s != *name) {
                        *i = match table {
                            Some(t) => format!("{chosen}.{t}"),
                            None => chosen.clone(),
                        };
                    }
                }
            }
            if v.name != *name {
                origins.insert(v.name.clone(), name.clone());
            }
            out.insert(v.name, stage);
        }
    }
    Ok((out, origins))
}

/// The original stage of a (possibly variant) name: `train@bce-tiny` → `train`.
pub fn origin(name: &str) -> &str {
    name.split_once(VARIANT).map_or(name, |(o, _)| o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(yaml: &str) -> IndexMap<String, RawStage> {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn names(m: &IndexMap<String, RawStage>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    fn param(m: &IndexMap<String, RawStage>, stage: &str, key: &str) -> Option<Value> {
        m[stage].params.as_ref()?.get(key).cloned()
    }

    #[test]
    fn product_exclude_include_and_fan_out() {
        let s = stages(
            "split: { kind: split }
train:
  kind: train
  inputs: [split.split]
  params: { epochs: 3, loss: bce }
  matrix:
    loss: [bce, asl]
    architecture: [tiny, models/resnet-50.pt]
    exclude: [{ loss: bce, architecture: models/resnet-50.pt }]
    include: [{ loss: asl, architecture: tiny, lr: 0.01 }, { loss: dbl, architecture: tiny }]
evaluate:
  kind: evaluate
  inputs: [train.history, split]
",
        );
        let (m, origins) = expand(&s).unwrap();
        assert_eq!(
            names(&m),
            [
                "split",
                "train@bce-tiny",
                "train@asl-tiny",
                "train@asl-resnet_50",
                "train@dbl-tiny",
                "evaluate@bce-tiny",
                "evaluate@asl-tiny",
                "evaluate@asl-resnet_50",
                "evaluate@dbl-tiny",
            ]
        );
        // The matrix's values over params; an include adds to the variant it matches.
        assert_eq!(param(&m, "train@asl-tiny", "loss"), Some("asl".into()));
        assert_eq!(param(&m, "train@asl-tiny", "lr"), Some(Value::from(0.01)));
        assert_eq!(param(&m, "train@bce-tiny", "lr"), None);
        assert_eq!(param(&m, "train@dbl-tiny", "epochs"), Some(Value::from(3)));
        assert_eq!(
            param(&m, "train@asl-resnet_50", "architecture"),
            Some("models/resnet-50.pt".into())
        );
        assert!(m["train@bce-tiny"].matrix.is_none());
        // Fanned out: each evaluate takes its own train variant, table kept.
        assert_eq!(
            m["evaluate@asl-tiny"].inputs.as_deref().unwrap(),
            ["train@asl-tiny.history", "split"]
        );
        assert_eq!(origins["evaluate@dbl-tiny"], "evaluate");
        assert!(!origins.contains_key("split"));
        assert_eq!(origin("train@bce-tiny"), "train");
    }

    #[test]
    fn downstream_of_a_fan_out_takes_consistent_variants() {
        let s = stages(
            "train: { kind: train, matrix: { loss: [bce, asl] } }
evaluate: { kind: evaluate, inputs: [train] }
report: { kind: command, inputs: [train, evaluate] }
other: { kind: train, matrix: { epochs: [1, 2] } }
both: { kind: evaluate, inputs: [train, other] }
",
        );
        let (m, _) = expand(&s).unwrap();
        let of = |prefix: &str| {
            names(&m)
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect::<Vec<_>>()
        };
        // train@bce goes with evaluate@bce only, not with evaluate@asl.
        assert_eq!(of("report"), ["report@bce", "report@asl"]);
        assert_eq!(
            m["report@asl"].inputs.as_deref().unwrap(),
            ["train@asl", "evaluate@asl"]
        );
        // Two independent sweeps: their product.
        assert_eq!(of("both"), ["both@bce-1", "both@bce-2", "both@asl-1", "both@asl-2"]);
        assert_eq!(m["both@asl-2"].inputs.as_deref().unwrap(), ["train@asl", "other@2"]);
    }

    #[test]
    fn stages_without_a_matrix_are_untouched() {
        let s = stages("a: { kind: x, params: { p: 1 } }\nb: { kind: y, inputs: [a] }\n");
        let (m, origins) = expand(&s).unwrap();
        assert_eq!(names(&m), ["a", "b"]);
        assert!(origins.is_empty());
        assert_eq!(m["b"].inputs.as_deref().unwrap(), ["a"]);
    }

    #[test]
    fn bad_matrices_are_errors_at_their_key() {
        for (yaml, path, want) in [
            (
                "t: { kind: x, matrix: { loss: [] } }",
                "stages.t.matrix.loss",
                "non-empty list",
            ),
            (
                "t: { kind: x, matrix: { loss: bce } }",
                "stages.t.matrix.loss",
                "non-empty list",
            ),
            ("t: { kind: x, matrix: [bce] }", "stages.t.matrix", "lists of values"),
            ("t: { kind: x, matrix: {} }", "stages.t.matrix", "at least one param"),
            (
                "t: { kind: x, matrix: { loss: [a], include: [3] } }",
                "stages.t.matrix.include",
                "each entry",
            ),
            (
                "t: { kind: x, matrix: { p: [a-b, a_b] } }",
                "stages.t.matrix",
                "both be named `t@a_b`",
            ),
        ] {
            let e = expand(&stages(yaml))
                .err()
                .unwrap_or_else(|| panic!("{yaml}: no error"));
            assert_eq!(e.path, path, "{yaml}");
            assert!(e.message.contains(want), "{yaml}: {}", e.message);
        }
    }
}
