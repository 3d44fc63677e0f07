//! Planning: each stage's key, and whether its result is already in the cache.
//!
//! Computing a plan reads no data, only pipeline files, referenced files (through the
//! stat cache) and manifests, so `pipe status` and a no-op `pipe run` stay fast.

use anyhow::Context as _;

use crate::cache::fingerprint::Fingerprinter;
use crate::cache::store::Store;
use crate::cache::{InputKey, KeyParts, ReferenceHash, explain};
use crate::config::Pipeline;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The entry for the current key exists.
    Fresh,
    /// It does not; the reasons say why, in words.
    Stale(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct StagePlan {
    pub parts: KeyParts,
    pub key: String,
    pub state: State,
}

impl StagePlan {
    pub fn is_fresh(&self) -> bool {
        self.state == State::Fresh
    }
}

/// Plan every stage of `p` (indexed like `p.stages`).
pub fn plan(p: &Pipeline, store: &Store) -> anyhow::Result<Vec<StagePlan>> {
    let mut fp = Fingerprinter::new(&store.dir);
    let paths: Vec<_> = p
        .stages
        .iter()
        .flat_map(|s| s.prepared.references.iter().map(|r| p.resolve(&r.path)))
        .collect();
    fp.prefetch(&paths);
    let mut out: Vec<Option<StagePlan>> = vec![None; p.stages.len()];
    for &i in p.dag.topo_order() {
        let s = &p.stages[i];
        let mut references = Vec::new();
        for r in &s.prepared.references {
            let f = fp
                .fingerprint(&p.resolve(&r.path))
                .with_context(|| format!("stage `{}`: cannot fingerprint `{}` ({})", s.name, r.param, r.path))?;
            references.push(ReferenceHash {
                param: r.param.clone(),
                path: r.path.clone(),
                hash: f.hash,
                is_dir: f.is_dir,
                files: f.files,
            });
        }
        let inputs = s
            .inputs
            .iter()
            .map(|input| {
                let j = p.index(&input.stage).expect("validated input");
                InputKey {
                    stage: input.stage.clone(),
                    table: input.table.clone(),
                    key: out[j].as_ref().expect("topological order").key.clone(),
                }
            })
            .collect();
        let parts = KeyParts {
            kind: s.kind.name().to_string(),
            version: s.kind.version(),
            params: s.prepared.params.clone(),
            inputs,
            references,
        };
        let key = parts.key();
        let state = if store.has(&key) {
            State::Fresh
        } else {
            let stale_input = |name: &str| {
                p.index(name)
                    .and_then(|j| out[j].as_ref())
                    .is_some_and(|sp| !sp.is_fresh())
            };
            State::Stale(reasons(p, store, &s.name, &key, &parts, &stale_input))
        };
        out[i] = Some(StagePlan { parts, key, state });
    }
    Ok(out.into_iter().map(|o| o.expect("every stage planned")).collect())
}

fn reasons(
    p: &Pipeline,
    store: &Store,
    stage: &str,
    key: &str,
    now: &KeyParts,
    stale_input: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let Some(last) = store.view(&p.name, stage) else {
        return vec!["never run".to_string()];
    };
    if last == key {
        return vec!["its cache entry is gone (removed by `pipe gc` or `pipe verify`)".to_string()];
    }
    match store.manifest(&last) {
        Ok(m) => {
            let why = explain(&m.parts, now, stale_input);
            if why.is_empty() {
                vec!["key changed".to_string()]
            } else {
                why
            }
        }
        Err(_) => vec!["its last result is gone from the cache".to_string()],
    }
}
