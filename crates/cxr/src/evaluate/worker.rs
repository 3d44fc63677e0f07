//! The LibTorch side of `evaluate`; compiled into `pipe-torch` only.
//!
//! Loads each input model's checkpoint, predicts the evaluated part (and the threshold
//! part when `best_f1` thresholds come from another one) in batches, averaging the
//! sigmoid probabilities over test-time augmentations and over the models, computes the
//! Grad-CAM maps of the chosen images (confident positives, false positives, false
//! negatives) with the first model, and hands everything to
//! [`pipe_cxr::evaluate::finish`] for the tables, pictures and report.

use anyhow::Context as _;
use rayon::prelude::*;
use tch::nn::ModuleT;
use tch::{Device as TDevice, Kind, Tensor, nn};

use pipe_core::stage::Context;
use pipe_cxr::evaluate::{self, Cam, CamGroup, Model, Params, Threshold};
use pipe_cxr::examples::Example;
use pipe_cxr::pixels::load_png;

use crate::nets::Net;

/// A model ready to predict.
struct Loaded {
    // The var store owns the weights the net's layers point to.
    _vs: nn::VarStore,
    net: Net,
    size: i64,
}

fn load(m: &Model, device: TDevice) -> anyhow::Result<Loaded> {
    let mut vs = nn::VarStore::new(device);
    let net = crate::nets::build(&m.architecture, &vs.root(), m.labels.len() as i64)?;
    vs.load(&m.weights)
        .with_context(|| format!("cannot load {} into a {} net", m.weights.display(), m.architecture))?;
    Ok(Loaded {
        _vs: vs,
        net,
        size: m.image_size,
    })
}

/// `[B, 1, S, S]` of the examples' images at `size`, decoded on the stage's threads.
fn batch(pool: &rayon::ThreadPool, set: &[Example], size: i64) -> anyhow::Result<Tensor> {
    let images: Vec<Vec<f32>> = pool.install(|| {
        set.par_iter()
            .map(|e| load_png(&e.image, size as usize))
            .collect::<anyhow::Result<_>>()
    })?;
    Ok(Tensor::from_slice(&images.concat()).view([set.len() as i64, 1, size, size]))
}

/// The views a prediction averages over: the image itself, then each `tta` transform
/// (`hflip`: mirrored; `shift`: moved by 4% of the side up, down, left and right, the
/// uncovered border black).
fn views(x: &Tensor, tta: &[String]) -> Vec<Tensor> {
    let mut out = vec![x.shallow_clone()];
    let size = x.size()[3];
    for t in tta {
        match t.as_str() {
            "hflip" => out.push(x.flip([3])),
            "shift" => {
                let s = ((size as f64 * 0.04).round() as i64).max(1);
                let padded = x.constant_pad_nd([s, s, s, s]);
                for (dx, dy) in [(s, 0), (-s, 0), (0, s), (0, -s)] {
                    out.push(padded.narrow(2, s + dy, size).narrow(3, s + dx, size));
                }
            }
            other => unreachable!("tta `{other}` passed validation"),
        }
    }
    out
}

/// Probabilities `[class][example]`, averaged over the models and the views.
fn predict(
    ctx: &Context,
    pool: &rayon::ThreadPool,
    p: &Params,
    models: &[Loaded],
    examples: &[Example],
    classes: usize,
    device: TDevice,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let _guard = tch::no_grad_guard();
    let mut sum = vec![vec![0.0f64; examples.len()]; classes];
    for m in models {
        for (b, chunk) in examples.chunks(p.batch_size).enumerate() {
            let x = batch(pool, chunk, m.size)?.to_device(device);
            let vs = views(&x, &p.tta);
            let mut probs = Tensor::zeros([chunk.len() as i64, classes as i64], (Kind::Float, device));
            for v in &vs {
                probs += m.net.forward_t(v, false).sigmoid();
            }
            let probs = (probs / vs.len() as f64).to_kind(Kind::Double).to_device(TDevice::Cpu);
            let flat = Vec::<f64>::try_from(probs.view([-1]))?;
            for (i, row) in flat.chunks(classes).enumerate() {
                for c in 0..classes {
                    sum[c][b * p.batch_size + i] += row[c];
                }
            }
            ctx.progress.inc(chunk.len() as u64);
        }
    }
    let k = models.len() as f64;
    Ok(sum
        .into_iter()
        .map(|v| v.into_iter().map(|s| s / k).collect())
        .collect())
}

/// Grad-CAM (Selvaraju et al.) of `class` on one image: the last feature map weighted
/// by the spatial mean of the class logit's gradient with respect to it, summed over
/// channels, ReLU.
fn grad_cam(m: &Loaded, image: &Tensor, class: usize) -> anyhow::Result<Cam> {
    let features = tch::no_grad(|| m.net.features(image, false));
    let features = features.detach().set_requires_grad(true);
    let score = m.net.head(&features, false).get(0).get(class as i64);
    let grads = Tensor::run_backward(&[score], &[&features], false, false);
    let alpha = grads[0].mean_dim([2i64, 3].as_slice(), true, Kind::Float);
    let cam = (alpha * features.detach())
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .relu()
        .to_device(TDevice::Cpu);
    let (h, w) = (cam.size()[1] as usize, cam.size()[2] as usize);
    Ok(Cam {
        example: 0,
        class,
        group: CamGroup::Positive,
        width: w,
        height: h,
        values: Vec::<f32>::try_from(cam.view([-1]))?,
    })
}

pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
    let p: Params = serde_json::from_value(params.clone())?;
    tch::set_num_threads(ctx.threads.max(1) as i32);
    let (device, used) = crate::device::device_for(ctx);
    let models = evaluate::models(ctx, &p.checkpoint)?;
    let labels = models[0].labels.clone();
    let classes = labels.len();
    let mut by_part = evaluate::parts(ctx, &labels)?;
    let split = evaluate::split_table(&by_part, &labels);
    let examples = evaluate::take_part(&mut by_part, &p.part)?;
    let loaded = models
        .iter()
        .map(|m| load(m, device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ctx.count("images", examples.len() as u64);
    ctx.count("models", models.len() as u64);

    // The threshold part is predicted too when best-F1 thresholds come from elsewhere.
    let other = matches!(p.threshold, Threshold::Rule(_)) && p.threshold_part != p.part;
    let threshold_examples = if other {
        evaluate::take_part(&mut by_part, &p.threshold_part)?
    } else {
        Vec::new()
    };
    let views = 1 + p.tta.iter().map(|t| if t == "shift" { 4 } else { 1 }).sum::<usize>();
    ctx.progress
        .set_total(((examples.len() + threshold_examples.len()) * models.len()) as u64);
    ctx.progress.set_message(format!(
        "predicting {} images with {} model(s) × {views} view(s)",
        examples.len(),
        models.len()
    ));
    let t = std::time::Instant::now();
    let pool = ctx.pool()?;
    // A model trained conditionally gives p(label | parent): scored as p(label).
    let hierarchy = p
        .hierarchy
        .as_ref()
        .map(|h| pipe_cxr::hierarchy::Hierarchy::load(&ctx.resolve(h), &labels))
        .transpose()?;
    let unconditional = |probs: Vec<Vec<f64>>| match &hierarchy {
        Some(h) => h.unconditional(&probs),
        None => probs,
    };
    let probs = unconditional(predict(ctx, &pool, &p, &loaded, &examples, classes, device)?);
    let truth = evaluate::truth(&examples, classes);
    let thresholds = if other {
        let tp = unconditional(predict(ctx, &pool, &p, &loaded, &threshold_examples, classes, device)?);
        evaluate::thresholds(&p.threshold, &tp, &evaluate::truth(&threshold_examples, classes))
    } else {
        evaluate::thresholds(&p.threshold, &probs, &truth)
    };
    ctx.log(format!(
        "predicted {} images ({} model(s), {views} view(s)) in {:.1} s on {used}",
        examples.len() + threshold_examples.len(),
        models.len(),
        t.elapsed().as_secs_f64()
    ));

    ctx.progress.set_message("Grad-CAM, metrics, plots");
    let mut cams = Vec::new();
    for (i, c, group) in evaluate::cam_picks(&probs, &truth, &thresholds, p.gradcam) {
        let x = batch(&pool, &examples[i..=i], loaded[0].size)?.to_device(device);
        let mut cam = grad_cam(&loaded[0], &x, c)?;
        cam.example = i;
        cam.group = group;
        cams.push(cam);
    }
    let scored = evaluate::Scored {
        examples: &examples,
        probs: &probs,
        thresholds: &thresholds,
        cams: &cams,
        split: &split,
    };
    evaluate::finish(ctx, &p, &models, &scored)?;
    Ok(used)
}
