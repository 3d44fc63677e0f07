//! Planning: each stage's key, and whether its result is already in the cache.
//!
//! Computing a plan reads no table data, only pipeline files, referenced files (through
//! the stat cache) and manifests, so `pipe status` and a no-op `pipe run` stay fast.
//!
//! A stage's key needs the content of its inputs (see [`crate::cache`]), so a stage
//! downstream of one that must run has no key yet: it [`State::Waits`]. The scheduler
//! plans again after every commit, with the same [`Fingerprinter`] (referenced files are
//! hashed once per command), until every selected stage is fresh, ran or failed.

use anyhow::Context as _;

use crate::cache::fingerprint::Fingerprinter;
use crate::cache::store::{Manifest, Store};
use crate::cache::{InputKey, KeyParts, ReferenceHash, explain};
use crate::config::Pipeline;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The entry for the current key exists.
    Fresh,
    /// It does not; the reasons say why, in words.
    Stale(Vec<String>),
    /// These inputs have no current result, so the key is not known yet: the stage may
    /// rerun, or turn out fresh once they have run and their content is known.
    Waits(Vec<String>),
    /// A file or tree its params name does not exist (data not there yet).
    MissingData(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Known when every input has a current result and every referenced path exists.
    pub parts: Option<KeyParts>,
    pub key: Option<String>,
    pub state: State,
    /// The manifest of the fresh entry (what downstream keys are computed from).
    pub manifest: Option<std::sync::Arc<Manifest>>,
}

impl StagePlan {
    pub fn is_fresh(&self) -> bool {
        self.state == State::Fresh
    }

    /// One line for `status` and the run's "running (why)".
    pub fn reason(&self) -> String {
        match &self.state {
            State::Fresh => "fresh".into(),
            State::Stale(why) => why.join("; "),
            State::Waits(inputs) => format!(
                "waits for {}",
                inputs.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
            ),
            State::MissingData(why) => format!("waits for data: {}", why.join("; ")),
        }
    }
}

/// Plan every stage of `p` (indexed like `p.stages`).
pub fn plan(p: &Pipeline, store: &Store) -> anyhow::Result<Vec<StagePlan>> {
    plan_with(p, store, &mut Fingerprinter::new(&store.dir))
}

/// [`plan`] with a fingerprinter that remembers the referenced files across re-plans.
pub fn plan_with(p: &Pipeline, store: &Store, fp: &mut Fingerprinter) -> anyhow::Result<Vec<StagePlan>> {
    let paths: Vec<_> = p
        .stages
        .iter()
        .flat_map(|s| s.prepared.references.iter().map(|r| p.resolve(&r.path)))
        .filter(|path| path.exists())
        .collect();
    fp.prefetch(&paths);
    let mut out: Vec<Option<StagePlan>> = vec![None; p.stages.len()];
    for &i in p.dag.topo_order() {
        let s = &p.stages[i];
        let mut references = Vec::new();
        let mut missing = Vec::new();
        for r in &s.prepared.references {
            let path = p.resolve(&r.path);
            if std::fs::metadata(&path).is_err() {
                missing.push(format!("{} does not exist", r.path));
                continue;
            }
            let f = fp
                .fingerprint(&path)
                .with_context(|| format!("stage `{}`: cannot fingerprint `{}` ({})", s.name, r.param, r.path))?;
            references.push(ReferenceHash {
                param: r.param.clone(),
                path: r.path.clone(),
                hash: f.hash,
                is_dir: f.is_dir,
                files: f.files,
            });
        }
        let mut inputs = Vec::new();
        let mut waits = Vec::new();
        for input in &s.inputs {
            let j = p.index(&input.stage).expect("validated input");
            let up = out[j].as_ref().expect("topological order");
            let content = up.manifest.as_ref().and_then(|m| m.content(input.table.as_deref()));
            match content {
                Some(content) => inputs.push(InputKey {
                    stage: input.stage.clone(),
                    table: input.table.clone(),
                    content,
                }),
                None => waits.push(input.stage.clone()),
            }
        }
        let planned = if !missing.is_empty() {
            StagePlan {
                parts: None,
                key: None,
                state: State::MissingData(missing),
                manifest: None,
            }
        } else if !waits.is_empty() {
            waits.dedup();
            StagePlan {
                parts: None,
                key: None,
                state: State::Waits(waits),
                manifest: None,
            }
        } else {
            let parts = KeyParts {
                kind: s.kind.name().to_string(),
                version: s.kind.version(),
                params: s.prepared.params.clone(),
                inputs,
                references,
            };
            let key = parts.key();
            let manifest = fresh_manifest(store, &key);
            let state = if manifest.is_some() {
                State::Fresh
            } else {
                State::Stale(reasons(p, store, &s.name, &key, &parts))
            };
            StagePlan {
                parts: Some(parts),
                key: Some(key),
                state,
                manifest,
            }
        };
        out[i] = Some(planned);
    }
    Ok(out.into_iter().map(|o| o.expect("every stage planned")).collect())
}

/// The manifest of a committed entry, if there is one that says it is `key`.
fn fresh_manifest(store: &Store, key: &str) -> Option<std::sync::Arc<Manifest>> {
    store
        .manifest(key)
        .ok()
        .filter(|m| m.key == key)
        .map(std::sync::Arc::new)
}

fn reasons(p: &Pipeline, store: &Store, stage: &str, key: &str, now: &KeyParts) -> Vec<String> {
    let Some(last) = store.view(&p.name, stage) else {
        return vec!["never run".to_string()];
    };
    if last == key {
        if store.entry_dir(key).exists() {
            return vec!["its cache entry is damaged (no readable manifest)".to_string()];
        }
        return vec!["its cache entry is gone (removed by `pipe gc` or `pipe verify`)".to_string()];
    }
    match store.manifest(&last) {
        Ok(m) => {
            let why = explain(&m.parts, now);
            if why.is_empty() {
                vec!["key changed".to_string()]
            } else {
                why
            }
        }
        Err(_) => vec!["its last result is gone from the cache".to_string()],
    }
}
