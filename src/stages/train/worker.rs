//! The LibTorch side of `train`; compiled into `pipe-torch` only.
//!
//! Loads the images into memory as `[N, 1, S, S]` floats in [0, 1], builds the network
//! (`tiny`), runs Adam with warm-up + cosine over `epochs` shuffled passes, evaluates on
//! the validation part every `eval_every` steps and at the end, keeps the best
//! checkpoint by validation macro F1, and writes `history`, `config.json`,
//! `best.safetensors` and `last.safetensors`. See the contract in `mod.rs`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device as TDevice, Kind, Reduction, Tensor};

use pipe::stage::{Context, Device};
use pipe::stages::train::{
    Example, Params, Scores, epoch_order, examples, history_schema, learning_rate, load_png, scores,
};
use pipe::table::TableBuilder;

/// Saved at every evaluation beside `last.safetensors`; what a resumed run starts from.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// Optimiser steps done.
    step: u64,
    best_f1: f64,
    history: Vec<Row>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    step: u64,
    epoch: u64,
    lr: f64,
    train_loss: Option<f64>,
    val_loss: f64,
    scores: Scores,
    best: bool,
}

/// 3 × (conv 3×3 → batch norm → ReLU → max pool 2×2), global average pool, linear.
fn tiny(p: &nn::Path, classes: i64) -> impl ModuleT + use<> {
    let conv = nn::ConvConfig {
        padding: 1,
        bias: false,
        ..Default::default()
    };
    let mut seq = nn::seq_t();
    let mut channels = 1;
    for (i, out) in [16i64, 32, 64].into_iter().enumerate() {
        seq = seq
            .add(nn::conv2d(p / format!("conv{i}"), channels, out, 3, conv))
            .add(nn::batch_norm2d(p / format!("bn{i}"), out, Default::default()))
            .add_fn(|x| x.relu().max_pool2d_default(2));
        channels = out;
    }
    seq.add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add(nn::linear(p / "head", channels, classes, Default::default()))
}

/// Images as one `[N, 1, S, S]` tensor and targets as `[N, C]`, on the CPU.
fn load(ctx: &Context, set: &[Example], size: usize, classes: usize) -> anyhow::Result<(Tensor, Tensor)> {
    let pool = ctx.pool()?;
    let images: Vec<Vec<f32>> = pool.install(|| {
        set.par_iter()
            .map(|e| load_png(&e.image, size))
            .collect::<anyhow::Result<_>>()
    })?;
    let flat: Vec<f32> = images.concat();
    let targets: Vec<f32> = set.iter().flat_map(|e| e.targets.iter().copied()).collect();
    let n = set.len() as i64;
    Ok((
        Tensor::from_slice(&flat).view([n, 1, size as i64, size as i64]),
        Tensor::from_slice(&targets).view([n, classes as i64]),
    ))
}

/// Validation loss (mean over images and labels) and per-label scores.
fn evaluate(net: &impl ModuleT, xs: &Tensor, ys: &Tensor, device: TDevice, classes: usize) -> (f64, Scores) {
    let _guard = tch::no_grad_guard();
    let n = xs.size()[0];
    let mut loss = 0.0;
    let mut probs: Vec<f64> = Vec::with_capacity(n as usize * classes);
    let mut start = 0;
    while start < n {
        let len = 256.min(n - start);
        let x = xs.narrow(0, start, len).to_device(device);
        let y = ys.narrow(0, start, len).to_device(device);
        let logits = net.forward_t(&x, false);
        loss += logits
            .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Sum)
            .double_value(&[]);
        let p = logits
            .sigmoid()
            .to_kind(Kind::Double)
            .to_device(TDevice::Cpu)
            .view([-1]);
        probs.extend(Vec::<f64>::try_from(&p).expect("probabilities"));
        start += len;
    }
    let targets = Vec::<f32>::try_from(&ys.view([-1])).expect("targets");
    (loss / (n as f64 * classes as f64), scores(&probs, &targets, classes))
}

/// Write `path` through a temporary file and a rename, so a kill leaves the old or the
/// new file, never half of one.
fn replace(path: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `VarStore::save` through a temporary file (VarStore picks the format from the
/// extension, so the temporary one ends in `.tmp.safetensors`).
fn save(vs: &nn::VarStore, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp.safetensors");
    vs.save(&tmp)
        .with_context(|| format!("cannot save {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn json_of(labels: &[String], values: impl Iterator<Item = serde_json::Value>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels.iter().cloned().zip(values).collect();
    serde_json::Value::Object(map).to_string()
}

pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
    let p: Params = serde_json::from_value(params.clone())?;
    if let Some(pre) = &p.pretrained {
        bail!(
            "params.pretrained ({pre}): starting from pretrained weights is not implemented yet; remove the param to train from scratch"
        );
    }
    ensure!(
        p.architecture == "tiny",
        "architecture `{}` is not implemented",
        p.architecture
    );
    let started = Instant::now();
    tch::set_num_threads(ctx.threads.max(1) as i32);
    let device = match ctx.device {
        Device::Cuda(i) if tch::Cuda::is_available() => TDevice::Cuda(i),
        Device::Cuda(i) => {
            ctx.log(format!(
                "cuda:{i} was assigned but CUDA is not available in the worker; training on the CPU"
            ));
            TDevice::Cpu
        }
        Device::Cpu => {
            ctx.log("no GPU assigned; training on the CPU");
            TDevice::Cpu
        }
    };
    let used = match device {
        TDevice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };

    let ex = examples(
        &p.labels,
        ctx.input("split")?,
        ctx.input("labels")?,
        ctx.input("images")?,
    )?;
    ensure!(!ex.train.is_empty(), "the split has no `train` images with labels");
    ensure!(
        !ex.validation.is_empty(),
        "the split has no `validation` images with labels"
    );
    ctx.count("train_images", ex.train.len() as u64);
    ctx.count("validation_images", ex.validation.len() as u64);
    ctx.count("skipped_rows", ex.skipped);
    let classes = p.labels.len();
    let size = p.image_size as usize;
    ctx.progress
        .set_message(format!("loading {} + {} images", ex.train.len(), ex.validation.len()));
    let t = Instant::now();
    let (train_x, train_y) = load(ctx, &ex.train, size, classes)?;
    let (val_x, val_y) = load(ctx, &ex.validation, size, classes)?;
    ctx.log(format!(
        "loaded {} train + {} validation images at {size}×{size} in {:.1} s",
        ex.train.len(),
        ex.validation.len(),
        t.elapsed().as_secs_f64()
    ));

    tch::manual_seed(p.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = tiny(&vs.root(), classes as i64);
    let mut opt = nn::Adam {
        beta1: 0.9,
        beta2: 0.999,
        wd: 0.0,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&vs, p.lr)?;

    let n = ex.train.len();
    let per_epoch = n.div_ceil(p.batch_size) as u64;
    let total = per_epoch * p.epochs as u64;
    let out = &ctx.out_dir;
    let (last_path, best_path, progress_path) = (
        out.join("last.safetensors"),
        out.join("best.safetensors"),
        out.join("progress.json"),
    );

    // Resume from the last evaluation of an interrupted run.
    let mut state = Progress {
        step: 0,
        best_f1: -1.0,
        history: Vec::new(),
    };
    if last_path.is_file() && progress_path.is_file() && best_path.is_file() {
        let saved: Progress = serde_json::from_slice(&std::fs::read(&progress_path)?)
            .with_context(|| format!("{} is not a train progress file", progress_path.display()))?;
        if saved.step <= total {
            vs.load(&last_path)
                .with_context(|| format!("cannot resume from {}", last_path.display()))?;
            ctx.log(format!("resuming at step {} of {total}", saved.step));
            ctx.count("resumed_at_step", saved.step);
            state = saved;
        }
    }

    // The loss; DBL re-balances from the training part's class frequencies.
    let loss_fn = match p.loss.as_str() {
        "bce" => crate::losses::Loss::bce(),
        "asl" => crate::losses::Loss::asymmetric(),
        "dbl" => {
            let freq: Vec<f64> = Vec::<f64>::try_from(train_y.to_kind(tch::Kind::Double).sum_dim_intlist(
                0,
                false,
                tch::Kind::Double,
            ))?;
            crate::losses::Loss::distribution_balanced(freq, train_y.size()[0] as f64)
        }
        other => anyhow::bail!("loss `{other}` is not implemented"),
    };
    loss_fn
        .validate()
        .map_err(|e| anyhow::anyhow!("loss `{}` on this training part: {e}", p.loss))?;
    ctx.log(format!("loss {}", loss_fn.name()));
    ctx.progress.set_total(total);
    ctx.progress.inc(state.step);
    let first_step = state.step;
    let (mut loss_sum, mut loss_n) = (0.0, 0u64);
    let mut order: Option<(u64, Vec<usize>)> = None;
    let last_val_f1 = |s: &Progress| {
        s.history
            .last()
            .map_or("-".to_string(), |r| format!("{:.3}", r.scores.macro_f1))
    };
    for step in state.step..total {
        let epoch = step / per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(n, p.seed, epoch)));
        }
        let batch_no = (step % per_epoch) as usize;
        let ord = &order.as_ref().expect("set above").1;
        let idx: Vec<i64> = ord[batch_no * p.batch_size..((batch_no + 1) * p.batch_size).min(n)]
            .iter()
            .map(|&i| i as i64)
            .collect();
        let idx = Tensor::from_slice(&idx);
        let xs = train_x.index_select(0, &idx).to_device(device);
        let ys = train_y.index_select(0, &idx).to_device(device);
        let lr = learning_rate(p.lr, step, p.warmup_steps, total);
        opt.set_lr(lr);
        let loss = loss_fn.compute(&net.forward_t(&xs, true), &ys);
        opt.backward_step(&loss);
        let l = loss.double_value(&[]);
        ensure!(l.is_finite(), "training diverged at step {}: loss {l}", step + 1);
        loss_sum += l;
        loss_n += 1;
        ctx.progress.inc(1);
        ctx.progress.set_message(format!(
            "epoch {}/{} step {}/{total} loss {l:.4} val F1 {}",
            epoch + 1,
            p.epochs,
            step + 1,
            last_val_f1(&state)
        ));

        let done = step + 1;
        if done % p.eval_every == 0 || done == total {
            let (val_loss, s) = evaluate(&net, &val_x, &val_y, device, classes);
            let best = s.macro_f1 > state.best_f1;
            if best {
                state.best_f1 = s.macro_f1;
                save(&vs, &best_path)?;
            }
            save(&vs, &last_path)?;
            state.history.push(Row {
                step: done,
                epoch,
                lr,
                train_loss: (loss_n > 0).then(|| loss_sum / loss_n as f64),
                val_loss,
                scores: s,
                best,
            });
            state.step = done;
            replace(&progress_path, |t| Ok(std::fs::write(t, serde_json::to_vec(&state)?)?))?;
            (loss_sum, loss_n) = (0.0, 0);
        }
    }

    // The history table, config.json; progress.json is only for resuming.
    let schema = history_schema();
    let mut b = TableBuilder::new(&schema);
    for r in &state.history {
        b.i64("step", Some(r.step as i64))
            .i64("epoch", Some(r.epoch as i64))
            .f64("lr", Some(r.lr))
            .f64("train_loss", r.train_loss)
            .f64("val_loss", Some(r.val_loss))
            .f64("val_macro_f1", Some(r.scores.macro_f1))
            .f64("val_macro_auc", r.scores.macro_auc)
            .str(
                "val_auc",
                Some(&json_of(&p.labels, r.scores.auc.iter().map(|a| serde_json::json!(a)))),
            )
            .str(
                "val_f1",
                Some(&json_of(&p.labels, r.scores.f1.iter().map(|f| serde_json::json!(f)))),
            )
            .bool("best", Some(r.best));
    }
    let mut w = ctx.writer("history", &schema)?;
    w.write(&b.finish()?)?;
    w.finish()?;
    let best = state.history.iter().rfind(|r| r.best);
    let last = state.history.last();
    let config = serde_json::json!({
        "kind": pipe::stages::train::KIND,
        "params": params,
        "architecture": p.architecture,
        "labels": p.labels,
        "input": {
            "shape": [1, size, size],
            "values": "grey levels / 255 in [0, 1], the convert stage's PNG resized bilinearly to image_size",
        },
        "output": "one logit per label (sigmoid for the probability)",
        "train_images": ex.train.len(),
        "validation_images": ex.validation.len(),
        "steps": total,
        "steps_per_epoch": per_epoch,
        "best": best.map(|r| serde_json::json!({"step": r.step, "val_macro_f1": r.scores.macro_f1, "val_macro_auc": r.scores.macro_auc})),
        "last": last.map(|r| serde_json::json!({"step": r.step, "val_macro_f1": r.scores.macro_f1, "val_macro_auc": r.scores.macro_auc})),
        "device": used,
    });
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    std::fs::remove_file(&progress_path)?;
    if let Some(r) = last {
        ctx.log(format!(
            "steps {}..{total} of {total} in {:.1} s on {used}; last val macro F1 {:.3}, macro AUC {}; best F1 {:.3}",
            first_step + 1,
            started.elapsed().as_secs_f64(),
            r.scores.macro_f1,
            r.scores.macro_auc.map_or("-".into(), |a| format!("{a:.3}")),
            state.best_f1
        ));
    }
    Ok(used)
}
