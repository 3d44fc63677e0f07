//! `torch_check`: prove the LibTorch set-up from inside a pipeline.
//!
//! Runs in the torch worker on the device the scheduler assigns (a GPU when there is
//! one), multiplies two matrices there and writes what it found to `devices`. It is
//! the smallest stage that exercises the whole worker path (job file, progress lines,
//! Parquet written by the worker, commit by `pipe`). Its key does not include the
//! machine: use `pipe run --force torch_check` to probe another one.
//!
//! The LibTorch half is `worker.rs`, compiled only into `pipe-torch` (worker/).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Executor, Resources, Stage};
use pipe_core::table::TableSchema;

pub const KIND: &str = "torch_check";

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Side of the square matrices to multiply.
    #[serde(default = "default_size")]
    pub size: i64,
}

fn default_size() -> i64 {
    256
}

pub struct TorchCheck;

pub fn devices_schema() -> TableSchema {
    crate::schema!("torch_check/devices")
}

impl Stage for TorchCheck {
    type Params = Params;
    const KIND: &'static str = KIND;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "check LibTorch in the worker: device, CUDA, a matmul";

    fn outputs(_: &Params) -> Vec<String> {
        vec!["devices".into()]
    }

    fn resources(_: &Params) -> Resources {
        Resources { cpu: 1, gpu: 1 }
    }

    fn executor(_: &Params) -> Executor {
        Executor::TorchWorker
    }

    fn run(_: &Params, _: &Context) -> anyhow::Result<()> {
        anyhow::bail!("`torch_check` runs in the pipe-torch worker, not in pipe")
    }
}
