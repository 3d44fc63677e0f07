//! The stage kinds. Each lives in its own file (or folder) named after it; this list is
//! the one place that registers them.

use std::marker::PhantomData;

use crate::stage::{Kind, KindOf};

pub mod command;
pub mod torch_check;

/// Every kind a pipeline may use.
pub static KINDS: &[&dyn Kind] = &[
    &KindOf::<command::Command>(PhantomData),
    &KindOf::<torch_check::TorchCheck>(PhantomData),
];
