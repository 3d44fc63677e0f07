//! The cache: when a stage's result can be reused, and where results live.
//!
//! # What enters a stage's key
//!
//! A stage's key is BLAKE3 over exactly these parts, built in one place,
//! [`KeyParts::key`]:
//!
//! | part | why |
//! |---|---|
//! | kind name and kind `VERSION` | a new algorithm must not reuse old results |
//! | canonical params (JSON, defaults filled in, keys sorted) | `threshold: 0.5` written out or left to the default is the same stage |
//! | each input's table selector and the *content hash* of what it selects, in `inputs:` order | a stage reruns only when what it reads changed (early cutoff) |
//! | each referenced file/tree: the param path, the path as written, its content hash | editing `keywords.yaml` reruns label; touching it does not |
//!
//! An input's content hash comes from its entry's manifest ([`store::Manifest::content`]):
//! for `stage.table`, the BLAKE3 of `table.parquet`; for a whole stage, a hash of every
//! file of the entry but its log. So a keyword that changes no label reruns `label` and
//! stops there, and a new DICOM does not rerun `parse`, which reads only `his_files`.
//! Tables therefore hold nothing that differs between two results with the same data:
//! no key, stage name, params or pipe version in their metadata (the manifest beside
//! them has those).
//!
//! A stage whose input has no current result has no key yet: it *waits* for that input.
//! The scheduler plans again after every commit; a waiting stage whose inputs came out
//! identical is then fresh and does not run.
//!
//! # What never enters it
//!
//! Stage names, the pipeline name, absolute paths, mtimes, inodes, host names, the pipe
//! version, times, process ids. Same key ⇒ same result on every machine, so a cache
//! directory can be shared or copied. Stat data (size, mtime, inode) is used only to
//! skip re-hashing a file whose hash is already known ([`fingerprint`]).
//!
//! # Why a stage is stale
//!
//! The manifest of every entry keeps its [`KeyParts`]. `pipe status` compares the parts
//! of the stage's current key with those of the entry the pipeline's view points at
//! (its last result) and names the difference: a param with its old and new value, an
//! input, a file. Like cargo's fingerprint JSON, the parts exist to explain, the key to
//! decide.
//!
//! # On disk (`cache/`)
//!
//! - `entries/<key>/`: one committed result: `<table>.parquet`, any other files the
//!   stage wrote, `log.txt`, and `manifest.json` (see [`store::Manifest`]). Immutable.
//! - `tmp/<key>/`: an entry being built; renamed into `entries/` when complete.
//! - `views/<pipeline>/<stage>`: symlink to the entry of the last result, for notebooks.
//! - `stat/`: stat caches of referenced trees; `quarantine/`: entries `pipe verify`
//!   found damaged; `lock`: held by the run that may write.

pub mod fingerprint;
pub mod store;
pub mod walk;

use serde::{Deserialize, Serialize};

use crate::hash::KeyHasher;

/// Version of the key layout itself; bump to invalidate every cache.
const KEY_DOMAIN: &str = "pipe-stage-key-v2";

/// An input's contribution to a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputKey {
    /// Upstream stage name: shown in reasons, not hashed.
    pub stage: String,
    /// `Some(table)` for a `stage.table` input; `None` for all its tables.
    pub table: Option<String>,
    /// Content hash of what the input selects (see the module docs).
    pub content: String,
}

impl InputKey {
    /// `stage.table` or `stage`, as written in `inputs:`.
    pub fn name(&self) -> String {
        match &self.table {
            Some(t) => format!("{}.{t}", self.stage),
            None => self.stage.clone(),
        }
    }
}

/// A referenced file or tree's contribution to a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferenceHash {
    pub param: String,
    pub path: String,
    pub hash: String,
    pub is_dir: bool,
    pub files: u64,
}

/// Everything a key is made of; stored in the manifest to explain staleness.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyParts {
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub inputs: Vec<InputKey>,
    pub references: Vec<ReferenceHash>,
}

impl KeyParts {
    pub fn key(&self) -> String {
        let mut h = KeyHasher::new(KEY_DOMAIN);
        h.str("kind", &self.kind).field("version", &self.version.to_le_bytes());
        // serde_json's map is a BTreeMap (no `preserve_order`), so this is canonical.
        h.str("params", &serde_json::to_string(&self.params).expect("json"));
        for i in &self.inputs {
            h.str("input.table", i.table.as_deref().unwrap_or("*"))
                .str("input.content", &i.content);
        }
        let mut refs: Vec<&ReferenceHash> = self.references.iter().collect();
        refs.sort_by(|a, b| (&a.param, &a.path).cmp(&(&b.param, &b.path)));
        for r in refs {
            h.str("ref.param", &r.param)
                .str("ref.path", &r.path)
                .str("ref.hash", &r.hash);
        }
        h.hex()
    }
}

/// Human reasons why `now` differs from `before` (empty when they are equal).
pub fn explain(before: &KeyParts, now: &KeyParts) -> Vec<String> {
    let mut why = Vec::new();
    if before.kind != now.kind {
        why.push(format!("kind changed from `{}` to `{}`", before.kind, now.kind));
    } else if before.version != now.version {
        why.push(format!(
            "kind `{}` version changed from {} to {}",
            now.kind, before.version, now.version
        ));
    }
    diff_json("", &before.params, &now.params, &mut why);
    let old_inputs: Vec<_> = before.inputs.iter().map(|i| (&i.stage, &i.table)).collect();
    let new_inputs: Vec<_> = now.inputs.iter().map(|i| (&i.stage, &i.table)).collect();
    if old_inputs != new_inputs {
        let show = |v: &[(&String, &Option<String>)]| {
            v.iter()
                .map(|(s, t)| t.as_ref().map_or((*s).clone(), |t| format!("{s}.{t}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        why.push(format!(
            "inputs changed from [{}] to [{}]",
            show(&old_inputs),
            show(&new_inputs)
        ));
    } else {
        for (b, n) in before.inputs.iter().zip(&now.inputs) {
            if b.content != n.content {
                why.push(format!("input `{}` changed", n.name()));
            }
        }
    }
    for r in &now.references {
        match before.references.iter().find(|b| b.param == r.param) {
            None => why.push(format!("param `{}` now names {}", r.param, r.path)),
            Some(b) if b.path != r.path => {}
            Some(b) if b.hash != r.hash => {
                let what = if r.is_dir {
                    format!("directory {} changed ({} files, was {})", r.path, r.files, b.files)
                } else {
                    format!("file {} changed", r.path)
                };
                why.push(what);
            }
            Some(_) => {}
        }
    }
    why
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, why: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_json(&p, va, vb, why),
                    (None, Some(vb)) => why.push(format!("param `{p}` added: {vb}")),
                    (Some(va), None) => why.push(format!("param `{p}` removed (was {va})")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => why.push(format!(
            "param `{}` changed from {a} to {b}",
            if path.is_empty() { "params" } else { path }
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(params: serde_json::Value) -> KeyParts {
        KeyParts {
            kind: "label".into(),
            version: 1,
            params,
            inputs: vec![],
            references: vec![],
        }
    }

    #[test]
    fn key_depends_on_params_not_on_key_order() {
        let a = parts(json!({"a": 1, "b": [1, 2]}));
        let b = parts(serde_json::from_str(r#"{"b": [1, 2], "a": 1}"#).unwrap());
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), parts(json!({"a": 2, "b": [1, 2]})).key());
    }

    #[test]
    fn explains_param_changes() {
        let why = explain(
            &parts(json!({"t": 0.5, "m": {"x": 1}})),
            &parts(json!({"t": 0.7, "m": {"x": 1}})),
        );
        assert_eq!(why, vec!["param `t` changed from 0.5 to 0.7"]);
    }
}
