//! The LibTorch side of `filter` (`method: model`); compiled into `pipe-torch` only.
//!
//! Each DICOM file is decoded (`pipe_cxr::pixels`), resized to `input_size`², stacked into
//! batches of `batch_size` × 1 × H × W with values in [0, 1], and run through the
//! TorchScript model on the assigned device. A file whose pixels cannot be decoded
//! gets score 0 and the codec error as its reason, so it lands in `dropped`.

use anyhow::Context as _;
use rayon::prelude::*;
use tch::{CModule, Device as TDevice, Kind, Tensor};

use pipe_core::stage::Context;
use pipe_core::table::{read_batch, str_col};
use pipe_cxr::filter::{ModelOutput, Params, write_split};
use pipe_cxr::pixels;

pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
    let p: Params = serde_json::from_value(params.clone())?;
    let model_path = ctx.resolve(
        p.model
            .as_deref()
            .context("`method: model` needs `model: path/to/model.pt`")?,
    );
    let (device, used) = crate::device::device_for(ctx);
    let mut model = CModule::load_on_device(&model_path, device)
        .with_context(|| format!("cannot load TorchScript model {}", model_path.display()))?;
    model.set_eval();
    let dicoms = pipe_cxr::filter::shard_of(ctx, read_batch(ctx.input("dicoms")?)?, p.batch_size.max(1));
    let paths = str_col(&dicoms, "path")?;
    let n = dicoms.num_rows();
    let size = p.input_size.max(1) as usize;
    ctx.progress.set_total(n as u64);
    let pool = ctx.pool()?;
    let mut scores: Vec<(f64, String)> = Vec::with_capacity(n);
    for start in (0..n).step_by(p.batch_size.max(1)) {
        let end = (start + p.batch_size.max(1)).min(n);
        let images: Vec<Result<Vec<f32>, String>> = pool.install(|| {
            (start..end)
                .into_par_iter()
                .map(|i| {
                    pixels::load(&ctx.resolve(paths.value(i)))
                        .map(|(img, _)| pixels::resize(&img, size, size).data)
                        .map_err(|e| format!("{e:#}"))
                })
                .collect()
        });
        let ok: Vec<&Vec<f32>> = images.iter().filter_map(|r| r.as_ref().ok()).collect();
        let mut probs = Vec::new();
        if !ok.is_empty() {
            let flat: Vec<f32> = ok.iter().flat_map(|v| v.iter().copied()).collect();
            let x = Tensor::from_slice(&flat)
                .view([ok.len() as i64, 1, size as i64, size as i64])
                .to_device(device);
            let out = tch::no_grad(|| model.forward_ts(&[x])).context("the model failed on a batch")?;
            let out = out.to_kind(Kind::Float).view([-1]);
            anyhow::ensure!(
                out.size()[0] == ok.len() as i64,
                "the model returned {:?} values for {} images; it must return one per image",
                out.size(),
                ok.len()
            );
            let out = if p.output == ModelOutput::Logit {
                out.sigmoid()
            } else {
                out
            };
            probs = Vec::<f32>::try_from(out.to_device(TDevice::Cpu))?;
        }
        let mut it = probs.into_iter();
        for r in images {
            scores.push(match r {
                Ok(_) => (it.next().expect("one score per decoded image") as f64, String::new()),
                Err(e) => (0.0, e),
            });
        }
        ctx.progress.inc((end - start) as u64);
    }
    ctx.count(
        "undecodable",
        scores.iter().filter(|(_, r)| !r.is_empty()).count() as u64,
    );
    write_split(ctx, p.threshold, &dicoms, &scores, "model")?;
    Ok(used)
}
