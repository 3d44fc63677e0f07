//! pipe-cxr: the chest X-ray stage kinds of the Phu Tho pipeline (paper, Fig 2), each in
//! a file or folder named after it, on the `pipe-core` engine. [`KINDS`] is the one
//! list that registers them; [`pixels`] (DICOM → grey image) and [`examples`] (the
//! labelled-image join of train and evaluate) are what several kinds share.
//!
//! Architecture invariant: no LibTorch. A torch kind's LibTorch half is
//! `<kind>/worker.rs`, compiled only into `pipe-torch` (crates/torch).

use std::marker::PhantomData;

use pipe_core::stage::{Kind, KindOf};

pub mod charset;
pub mod chexpert;
pub mod collect;
pub mod convert;
pub mod csv;
pub mod deidentify;
pub mod dicom_scan;
pub mod evaluate;
pub mod examples;
pub mod filter;
pub mod frames;
pub mod hierarchy;
pub mod label;
pub mod map_labels;
#[path = "match.rs"]
pub mod matching;
pub mod parse;
pub mod pixels;
pub mod qc;
pub mod review;
pub mod split;
pub mod sql;
pub mod torch_check;
pub mod train;
pub mod vindr;

/// The declared schema of a table, embedded at build time from the repository's
/// `schemas/<name>.yaml`: `schema!("match/pairs")`. For crates under `crates/`.
#[macro_export]
macro_rules! schema {
    ($name:literal) => {
        pipe_core::table::TableSchema::parse(
            concat!("schemas/", $name, ".yaml"),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/", $name, ".yaml")),
        )
        .expect("embedded schema is valid")
    };
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run a parser or decoder — other people's code, which has panicked on odd files —
/// so that a panic becomes this file's error (a reject reason) and prints nothing in
/// the middle of a run.
pub fn quietly<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(anyhow::anyhow!("the decoder failed on this file: {msg}"))
    })
}

/// The chest X-ray kinds, in pipeline order (`pipe kinds` lists them so).
pub static KINDS: &[&dyn Kind] = &[
    &KindOf::<collect::Collect>(PhantomData),
    &KindOf::<deidentify::Deidentify>(PhantomData),
    &KindOf::<filter::Filter>(PhantomData),
    &KindOf::<parse::Parse>(PhantomData),
    &KindOf::<matching::Match>(PhantomData),
    &KindOf::<label::Label>(PhantomData),
    &KindOf::<convert::Convert>(PhantomData),
    &KindOf::<chexpert::Chexpert>(PhantomData),
    &KindOf::<map_labels::MapLabels>(PhantomData),
    &KindOf::<vindr::Vindr>(PhantomData),
    &KindOf::<split::Split>(PhantomData),
    &KindOf::<qc::Qc>(PhantomData),
    &KindOf::<sql::Sql>(PhantomData),
    &KindOf::<train::Train>(PhantomData),
    &KindOf::<evaluate::Evaluate>(PhantomData),
    &KindOf::<torch_check::TorchCheck>(PhantomData),
];

#[cfg(test)]
mod tests {
    use pipe_core::Registry;
    use pipe_core::registry::params_of;

    /// Params each kind needs at the least (those without a default).
    fn minimal(kind: &str) -> &'static str {
        match kind {
            "collect" => "pacs: data/pacs\nhis: data/his",
            "command" => "run: [\"true\"]\noutputs: [out]",
            "sql" => "query: SELECT 1 AS x",
            "map_labels" => "mapping: stages/map_labels/chexpert_to_phutho.yaml",
            "vindr" => "annotations: data/vindr/annotations_train.csv",
            "deidentify" => "secret_file: secret.txt",
            "chexpert" => "csv: data/chexpert/train.csv\nroot: data/chexpert",
            "filter" => "method: tags",
            _ => "{}",
        }
    }

    /// `pipe kinds` shows, for every kind, exactly the params validation knows, with
    /// the defaults validation fills in.
    #[test]
    fn documented_params_are_the_validated_params() {
        let kinds = Registry::new(super::KINDS);
        for kind in kinds.iter() {
            let docs = params_of(kind);
            let params: serde_yaml::Value = serde_yaml::from_str(minimal(kind.name())).unwrap();
            let prepared = kind
                .prepare(&params)
                .unwrap_or_else(|e| panic!("{}: minimal params refused: {e:?}", kind.name()));
            let canonical = prepared.params.as_object().unwrap();
            let mut documented: Vec<&str> = docs
                .iter()
                .filter(|d| !d.name.contains('.'))
                .map(|d| d.name.as_str())
                .collect();
            let mut validated: Vec<&str> = canonical.keys().map(String::as_str).collect();
            documented.sort();
            validated.sort();
            assert_eq!(documented, validated, "kind {}", kind.name());
            let prepared_json = prepared.params.clone();
            for d in &docs {
                // `fields.study_time` → canonical["fields"]["study_time"].
                let value = d.name.split('.').fold(&prepared_json, |v, k| &v[k]);
                let top = d.name.split('.').next().unwrap();
                let has_fields = docs.iter().any(|c| c.name.starts_with(&format!("{}.", d.name)));
                assert!(
                    d.required || d.default.is_some() || value.is_null() || has_fields,
                    "{}.{}: neither required nor a default shown",
                    kind.name(),
                    d.name
                );
                if let (Some(default), false) = (&d.default, params.get(top).is_some()) {
                    assert_eq!(default, value, "{}.{}: shown default", kind.name(), d.name);
                }
                assert!(
                    !d.ty.is_empty() && d.ty != "any",
                    "{}.{}: type {}",
                    kind.name(),
                    d.name,
                    d.ty
                );
                assert!(
                    !d.about.is_empty(),
                    "{}.{}: no meaning given (a doc comment)",
                    kind.name(),
                    d.name
                );
            }
            // A key no doc lists is refused.
            let mut extra = params.as_mapping().cloned().unwrap_or_default();
            extra.insert("no_such_param".into(), 1.into());
            assert!(
                kind.prepare(&serde_yaml::Value::Mapping(extra)).is_err(),
                "{}",
                kind.name()
            );
        }
    }
}
