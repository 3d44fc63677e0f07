//! pipe-cxr: the chest X-ray stage kinds of the Phu Tho pipeline (paper, Fig 2), each in
//! a file or folder named after it, on the `pipe-core` engine. [`KINDS`] is the one
//! list that registers them; [`pixels`] (DICOM → grey image) and [`examples`] (the
//! labelled-image join of train and evaluate) are what several kinds share.
//!
//! Architecture invariant: no LibTorch. A torch kind's LibTorch half is
//! `<kind>/worker.rs`, compiled only into `pipe-torch` (crates/torch).

use std::marker::PhantomData;

use pipe_core::stage::{Kind, KindOf};

pub mod collect;
pub mod convert;
pub mod evaluate;
pub mod examples;
pub mod filter;
pub mod label;
#[path = "match.rs"]
pub mod matching;
pub mod parse;
pub mod pixels;
pub mod split;
pub mod torch_check;
pub mod train;

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

/// The chest X-ray kinds, in pipeline order (`pipe kinds` lists them so).
pub static KINDS: &[&dyn Kind] = &[
    &KindOf::<collect::Collect>(PhantomData),
    &KindOf::<filter::Filter>(PhantomData),
    &KindOf::<parse::Parse>(PhantomData),
    &KindOf::<matching::Match>(PhantomData),
    &KindOf::<label::Label>(PhantomData),
    &KindOf::<convert::Convert>(PhantomData),
    &KindOf::<split::Split>(PhantomData),
    &KindOf::<train::Train>(PhantomData),
    &KindOf::<evaluate::Evaluate>(PhantomData),
    &KindOf::<torch_check::TorchCheck>(PhantomData),
];
