//! The stage kinds. Each lives in its own file (or folder) named after it; this list is
//! the one place that registers them.

use std::marker::PhantomData;

use crate::stage::{Kind, KindOf};

pub mod collect;
pub mod command;
pub mod convert;
pub mod evaluate;
pub mod filter;
pub mod label;
#[path = "match.rs"]
pub mod matching;
pub mod parse;
pub mod split;
pub mod torch_check;
pub mod train;

/// Every kind a pipeline may use.
pub static KINDS: &[&dyn Kind] = &[
    &KindOf::<collect::Collect>(PhantomData),
    &KindOf::<filter::Filter>(PhantomData),
    &KindOf::<parse::Parse>(PhantomData),
    &KindOf::<matching::Match>(PhantomData),
    &KindOf::<label::Label>(PhantomData),
    &KindOf::<convert::Convert>(PhantomData),
    &KindOf::<split::Split>(PhantomData),
    &KindOf::<command::Command>(PhantomData),
    &KindOf::<torch_check::TorchCheck>(PhantomData),
    // Last for now so that tests/errors.rs's list of valid kinds (a prefix) still matches.
    &KindOf::<train::Train>(PhantomData),
    &KindOf::<evaluate::Evaluate>(PhantomData),
];
