//! The LibTorch side of `torch_check`; compiled into `pipe-torch` only.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use tch::{Kind, Tensor};

use pipe_core::stage::Context;
use pipe_cxr::torch_check::{Params, devices_schema};

pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
    let p: Params = serde_json::from_value(params.clone())?;
    anyhow::ensure!(p.size > 0, "params.size must be positive, got {}", p.size);
    let cuda = tch::Cuda::is_available();
    let (device, used) = crate::device::device_for(ctx);
    ctx.progress.set_total(2);
    let n = p.size;
    let a = Tensor::ones([n, n], (Kind::Float, device)) / (n as f64);
    let _ = a.matmul(&a).sum(Kind::Double).double_value(&[]);
    ctx.progress.inc(1);
    let t = Instant::now();
    let checksum = a.matmul(&a).sum(Kind::Double).double_value(&[]);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    ctx.progress.inc(1);
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
    ctx.log(format!("{used}: {n}x{n} matmul in {ms:.2} ms, checksum {checksum}"));
    Ok(used)
}
