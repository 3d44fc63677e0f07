//! `torch_check`: prove the LibTorch set-up from inside a pipeline.
//!
//! Runs in the torch worker on the device the scheduler assigns (a GPU when there is
//! one), multiplies two matrices there and writes what it found to `devices`. It is
//! the smallest stage that exercises the whole worker path (job file, progress lines,
//! Parquet written by the worker, commit by `pipe`). Its key does not include the
//! machine: use `pipe run --force torch_check` to probe another one.

use serde::{Deserialize, Serialize};

use crate::stage::{Context, Executor, Resources, Stage};
use crate::table::TableSchema;

pub const KIND: &str = "torch_check";

#[derive(Debug, Serialize, Deserialize)]
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
    TableSchema::parse(
        "schemas/torch_check/devices.yaml",
        include_str!("../../schemas/torch_check/devices.yaml"),
    )
    .expect("embedded schema is valid")
}

impl Stage for TorchCheck {
    type Params = Params;
    const KIND: &'static str = KIND;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "check LibTorch in the worker: device, CUDA, a matmul";
    const EXECUTOR: Executor = Executor::TorchWorker;

    fn outputs(_: &Params) -> Vec<String> {
        vec!["devices".into()]
    }

    fn resources(_: &Params) -> Resources {
        Resources { cpu: 1, gpu: 1 }
    }

    fn run(_: &Params, _: &Context) -> anyhow::Result<()> {
        anyhow::bail!("`torch_check` runs in the pipe-torch worker, not in pipe")
    }
}

#[cfg(feature = "torch")]
pub mod worker {
    use std::sync::Arc;
    use std::time::Instant;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    };
    use tch::{Device as TDevice, Kind, Tensor};

    use super::*;
    use crate::stage::Device;

    pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
        let p: Params = serde_json::from_value(params.clone())?;
        anyhow::ensure!(p.size > 0, "params.size must be positive, got {}", p.size);
        let cuda = tch::Cuda::is_available();
        let device = match ctx.device {
            Device::Cuda(i) if cuda => TDevice::Cuda(i),
            Device::Cuda(i) => {
                ctx.log(format!(
                    "cuda:{i} was assigned but CUDA is not available in the worker; using the CPU"
                ));
                TDevice::Cpu
            }
            Device::Cpu => TDevice::Cpu,
        };
        ctx.progress.set_total(2);
        let n = p.size;
        let a = Tensor::ones([n, n], (Kind::Float, device)) / (n as f64);
        let _ = a.matmul(&a).sum(Kind::Double).double_value(&[]);
        ctx.progress.inc(1);
        let t = Instant::now();
        let checksum = a.matmul(&a).sum(Kind::Double).double_value(&[]);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        ctx.progress.inc(1);
        let used = match device {
            TDevice::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![used.clone()])),
            Arc::new(StringArray::from(vec![ctx.device.to_string()])),
            Arc::new(BooleanArray::from(vec![cuda])),
            Arc::new(Int64Array::from(vec![tch::Cuda::device_count()])),
            Arc::new(BooleanArray::from(vec![tch::Cuda::cudnn_is_available()])),
            Arc::new(Int64Array::from(vec![n])),
            Arc::new(Float64Array::from(vec![checksum])),
            Arc::new(Float64Array::from(vec![ms])),
        ];
        let schema = devices_schema();
        let batch = RecordBatch::try_new(schema.arrow(), cols)?;
        let mut w = ctx.writer("devices", &schema)?;
        w.write(&batch)?;
        w.finish()?;
        ctx.log(format!(
            "{used}: {n}x{n} matmul in {ms:.2} ms, checksum {checksum}"
        ));
        Ok(used)
    }
}
