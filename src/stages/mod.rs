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

/// Worker side: run a torch kind's job. Only `pipe-torch` calls this, so only it links
/// LibTorch.
#[cfg(feature = "torch")]
pub fn run_torch(
    kind: &str,
    params: &serde_json::Value,
    ctx: &crate::stage::Context,
) -> anyhow::Result<String> {
    match kind {
        torch_check::KIND => torch_check::worker::run(params, ctx),
        other => anyhow::bail!("kind `{other}` does not run in the torch worker"),
    }
}
