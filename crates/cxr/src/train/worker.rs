//! The LibTorch side of `train`; compiled into `pipe-torch` only.
//!
//! Builds the network (`nets.rs`), optionally from pretrained weights with a frozen
//! backbone, runs Adam with warm-up + cosine over `epochs` passes whose batches the
//! loader (`loader.rs`) decodes and augments on background threads, evaluates on the
//! validation part every `eval_every` steps and at the end, keeps the best checkpoint by
//! validation macro F1, and writes `history`, `config.json`, `best.safetensors` and
//! `last.safetensors`. See the contract in `mod.rs`.
//!
//! Resumable: at every evaluation the weights, Adam's state (`optimizer.safetensors`,
//! see `optim.rs`) and then `progress.json` naming their hashes are written; a killed
//! run continues from them exactly, or starts over if they do not match (killed while
//! saving).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device as TDevice, Kind, Reduction, Tensor};

use pipe_core::stage::Context;

use crate::nets::Net;
use crate::optim::Adam;
use pipe_core::table::TableBuilder;
use pipe_cxr::examples::{Example, examples};
use pipe_cxr::train::loader::{self, Batch, LoaderOptions, epoch_batches};
use pipe_cxr::train::{Params, Policy, Scores, epoch_order, history_schema, learning_rate, scores};

/// Saved at every evaluation beside `last.safetensors`; what a resumed run starts from.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// Optimiser steps done.
    step: u64,
    best_f1: f64,
    history: Vec<Row>,
    /// BLAKE3 of the files saved with this step: resume only from a matching set.
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
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

/// One loader batch as `[B, 1, S, S]` images and `[B, C]` targets on `device` (through
/// pinned memory and a non-blocking copy on CUDA, so the copy overlaps the step).
fn tensors(b: &Batch, size: i64, classes: i64, device: TDevice) -> (Tensor, Tensor) {
    let n = b.len as i64;
    let x = Tensor::from_slice(&b.images).view([n, 1, size, size]);
    let y = Tensor::from_slice(&b.targets).view([n, classes]);
    match device {
        TDevice::Cuda(_) => (
            x.pin_memory(device).to_device_(device, Kind::Float, true, false),
            y.pin_memory(device).to_device_(device, Kind::Float, true, false),
        ),
        _ => (x, y),
    }
}

/// Validation loss (mean over images and labels) and per-label scores; the images come
/// through the loader without augmentation.
fn evaluate(
    net: &Net,
    validation: &Arc<Vec<Example>>,
    opts: &LoaderOptions,
    device: TDevice,
) -> anyhow::Result<(f64, Scores)> {
    let _guard = tch::no_grad_guard();
    let classes = opts.classes;
    let mut loss = 0.0;
    let mut probs: Vec<f64> = Vec::with_capacity(validation.len() * classes);
    let mut targets: Vec<f32> = Vec::with_capacity(validation.len() * classes);
    let order: Vec<usize> = (0..validation.len()).collect();
    for b in epoch_batches(validation.clone(), order, 0, opts) {
        let b = b?;
        let (x, y) = tensors(&b, opts.size as i64, classes as i64, device);
        let logits = net.forward_t(&x, false).to_kind(Kind::Float);
        loss += logits
            .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Sum)
            .double_value(&[]);
        let p = logits
            .sigmoid()
            .to_kind(Kind::Double)
            .to_device(TDevice::Cpu)
            .view([-1]);
        probs.extend(Vec::<f64>::try_from(&p)?);
        targets.extend_from_slice(&b.targets);
    }
    let n = validation.len() as f64;
    Ok((loss / (n * classes as f64), scores(&probs, &targets, classes)))
}

/// The uncertainty policies (`uncertain`, `uncertain_by_label`) on the training part:
/// each uncertain label's target as its policy says (NaN: left out of the loss). The
/// validation part keeps its labels, as evaluate does.
fn apply_uncertainty(p: &Params, ex: &mut pipe_cxr::examples::Examples, ctx: &Context) -> anyhow::Result<()> {
    let policies: Vec<Policy> = p.labels.iter().map(|l| p.policy_of(l)).collect();
    for ((label, policy), knows) in p.labels.iter().zip(&policies).zip(&ex.knows_uncertain) {
        ensure!(
            *policy == Policy::AsLabelled || *knows,
            "uncertain: `{label}` is under {policy:?}, but labels has no `{label}_uncertain` column (nor −1 values) to say which are uncertain"
        );
    }
    let mut uncertain = 0u64;
    for e in &mut ex.train {
        for (c, policy) in policies.iter().enumerate() {
            if e.uncertain[c] {
                uncertain += 1;
                e.targets[c] = p.uncertain_target(*policy, e.targets[c], &e.sop_instance_uid, c);
            }
        }
    }
    ctx.count("uncertain_train_labels", uncertain);
    if let Some(path) = &p.hierarchy {
        let h = pipe_cxr::hierarchy::Hierarchy::load(&ctx.resolve(path), &p.labels)?;
        let left_out: u64 = ex.train.iter_mut().map(|e| h.condition(&mut e.targets)).sum();
        ctx.count("conditioned_out", left_out);
        ctx.log(format!(
            "conditional training on {path}: {left_out} labels of the training part left out (an ancestor not positive)"
        ));
    }
    if policies.iter().any(|q| *q != Policy::AsLabelled) {
        let each: Vec<String> = p
            .labels
            .iter()
            .zip(&policies)
            .map(|(l, q)| format!("{l}: {q:?}"))
            .collect();
        ctx.log(format!(
            "{uncertain} uncertain labels in the training part; policies {}",
            each.join(", ")
        ));
    }
    Ok(())
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

/// BLAKE3 of each file that exists, by file name.
fn hashes(files: &[&std::path::PathBuf]) -> std::collections::BTreeMap<String, String> {
    files
        .iter()
        .filter_map(|f| {
            let h = pipe_core::hash::file_hex(f).ok()?;
            Some((f.file_name()?.to_string_lossy().into_owned(), h))
        })
        .collect()
}

fn json_of(labels: &[String], values: impl Iterator<Item = serde_json::Value>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels.iter().cloned().zip(values).collect();
    serde_json::Value::Object(map).to_string()
}

/// Dynamic loss scaling for float16 mixed precision (what PyTorch's `GradScaler` does):
/// the loss is multiplied by `scale` before the backward pass so small gradients do not
/// underflow; a step whose gradients overflow is skipped and the scale halved, and after
/// `GROWTH_INTERVAL` good steps it doubles.
struct LossScaler {
    scale: f64,
    good: u32,
}

impl LossScaler {
    const GROWTH_INTERVAL: u32 = 2000;

    /// Backward pass and optimiser step; false when the step was skipped.
    fn step(&mut self, opt: &mut Adam, loss: &Tensor) -> bool {
        opt.zero_grad();
        (loss * self.scale).backward();
        let grads = opt.grads();
        let finite = grads.iter().all(|g| g.isfinite().all().int64_value(&[]) != 0);
        if !finite {
            self.scale /= 2.0;
            self.good = 0;
            return false;
        }
        tch::no_grad(|| {
            for mut g in grads {
                let _ = g.g_mul_scalar_(1.0 / self.scale);
            }
        });
        opt.step();
        self.good += 1;
        if self.good == Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good = 0;
        }
        true
    }
}

pub fn run(params: &serde_json::Value, ctx: &Context) -> anyhow::Result<String> {
    let p: Params = serde_json::from_value(params.clone())?;
    let started = Instant::now();
    tch::set_num_threads(ctx.threads.max(1) as i32);
    let (device, used) = crate::device::device_for(ctx);
    let amp = p.mixed_precision && matches!(device, TDevice::Cuda(_));
    if p.mixed_precision && !amp {
        ctx.log("mixed_precision is for CUDA; training in float32 on the CPU");
    }

    let mut ex = examples(
        &p.labels,
        ctx.input("split")?,
        ctx.input("labels")?,
        ctx.input("images")?,
    )?;
    apply_uncertainty(&p, &mut ex, ctx)?;
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
    let n = ex.train.len();
    // Class frequencies of the training part, for DBL.
    let mut freq = vec![0.0f64; classes];
    for e in &ex.train {
        for (f, t) in freq.iter_mut().zip(&e.targets) {
            // An ignored (NaN) target is no positive.
            if t.is_finite() {
                *f += *t as f64;
            }
        }
    }
    let (train_set, validation_set) = (Arc::new(ex.train), Arc::new(ex.validation));
    // On the CPU the loader's threads take cores from LibTorch's; half the budget keeps
    // up with the step (benches/train.py). With a GPU the CPU is the loader's.
    let workers = match (p.workers, device) {
        (0, TDevice::Cpu) => (ctx.threads / 2).max(1),
        (0, _) => ctx.threads.max(1),
        (w, _) => w,
    };
    let loader = |augment: Option<loader::Augment>, epoch: u64| LoaderOptions {
        batch_size: p.batch_size,
        size,
        classes,
        augment,
        seed: p.seed,
        epoch,
        workers,
        prefetch: p.prefetch,
    };

    tch::manual_seed(p.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = crate::nets::build(&p.architecture, &vs.root(), classes as i64)?;
    ensure!(
        p.image_size >= net.min_size(),
        "{} needs images of at least {} pixels, image_size is {}",
        net.arch(),
        net.min_size(),
        p.image_size
    );
    // A train stage among the inputs (the first phase of conditional training, a model
    // to fine-tune): its checkpoint, else `pretrained`.
    let upstream = ctx
        .inputs
        .iter()
        .find(|i| i.table == "history")
        .map(|i| i.path.with_file_name(format!("{}.safetensors", p.init)));
    if let Some(path) = upstream.or_else(|| p.pretrained.as_ref().map(|pre| ctx.resolve(pre))) {
        let report = crate::nets::load_pretrained(&mut vs, &path, net.head_prefix())?;
        ctx.log(format!("pretrained {}: {report}", path.display()));
        if !report.reinitialised.is_empty() {
            ctx.log(format!(
                "re-initialised (shape differs): {}",
                report.reinitialised.join(", ")
            ));
        }
    }
    if p.freeze_backbone {
        let frozen = crate::nets::freeze_backbone(&vs, net.head_prefix());
        ctx.log(format!(
            "froze {frozen} backbone tensors; training `{}` only",
            net.head_prefix()
        ));
    }
    let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, p.lr);
    let mut scaler = LossScaler {
        scale: 65536.0,
        good: 0,
    };

    let per_epoch = n.div_ceil(p.batch_size) as u64;
    let total = per_epoch * p.epochs as u64;
    let out = &ctx.out_dir;
    let (last_path, best_path, progress_path, optimizer_path) = (
        out.join("last.safetensors"),
        out.join("best.safetensors"),
        out.join("progress.json"),
        out.join("optimizer.safetensors"),
    );
    let saved_files = [&last_path, &best_path, &optimizer_path];

    // Resume from the last evaluation of an interrupted run.
    let mut state = Progress {
        step: 0,
        best_f1: -1.0,
        history: Vec::new(),
        files: Default::default(),
    };
    if progress_path.is_file() {
        let saved: Progress = serde_json::from_slice(&std::fs::read(&progress_path)?)
            .with_context(|| format!("{} is not a train progress file", progress_path.display()))?;
        if saved.step > total {
            ctx.log(format!(
                "{} is past this run's {total} steps; starting over",
                progress_path.display()
            ));
        } else if saved.files != hashes(&saved_files) {
            ctx.log("the saved checkpoint does not match progress.json (killed while saving); starting over");
        } else {
            vs.load(&last_path)
                .with_context(|| format!("cannot resume from {}", last_path.display()))?;
            opt.load(&optimizer_path)?;
            ctx.log(format!(
                "resuming at step {} of {total} (weights and Adam's state)",
                saved.step
            ));
            ctx.count("resumed_at_step", saved.step);
            state = saved;
        }
    }

    let loss_fn = match p.loss.as_str() {
        "bce" => crate::losses::Loss::bce(),
        "asl" => crate::losses::Loss::asymmetric(),
        "dbl" => crate::losses::Loss::distribution_balanced(freq, n as f64),
        other => anyhow::bail!("loss `{other}` is not implemented"),
    };
    loss_fn
        .validate()
        .map_err(|e| anyhow::anyhow!("loss `{}` on this training part: {e}", p.loss))?;
    ctx.log(format!(
        "{} ({} trainable parameters, {} feature channels), loss {}, {n} training images in {per_epoch} batches of {} per epoch, {workers} loader threads",
        net.arch(),
        vs.trainable_variables().iter().filter(|t| t.requires_grad()).map(|t| t.numel()).sum::<usize>(),
        net.channels(),
        loss_fn.name(),
        p.batch_size
    ));
    ctx.progress.set_total(total);
    ctx.progress.inc(state.step);
    let first_step = state.step;
    let (mut loss_sum, mut loss_n, mut skipped) = (0.0, 0u64, 0u64);
    let last_val_f1 = |s: &Progress| {
        s.history
            .last()
            .map_or("-".to_string(), |r| format!("{:.3}", r.scores.macro_f1))
    };
    let (mut images_done, mut rate_since) = (0u64, Instant::now());
    let mut step = state.step;
    while step < total {
        let epoch = step / per_epoch;
        let first_batch = (step % per_epoch) as usize;
        let batches = epoch_batches(
            train_set.clone(),
            epoch_order(n, p.seed, epoch),
            first_batch,
            &loader(Some(p.augment.clone()), epoch),
        );
        for batch in batches {
            let batch = batch?;
            let (xs, ys) = tensors(&batch, p.image_size, classes as i64, device);
            let lr = learning_rate(p.lr, step, p.warmup_steps, total);
            opt.set_lr(lr);
            let logits = tch::autocast(amp, || {
                if p.freeze_backbone {
                    // A frozen backbone keeps its BatchNorm statistics too.
                    net.head(&net.features(&xs, false), true)
                } else {
                    net.forward_t(&xs, true)
                }
            });
            let loss = loss_fn.compute(&logits.to_kind(Kind::Float), &ys);
            if amp {
                if !scaler.step(&mut opt, &loss) {
                    skipped += 1;
                }
            } else {
                opt.backward_step(&loss);
            }
            let l = loss.double_value(&[]);
            ensure!(l.is_finite(), "training diverged at step {}: loss {l}", step + 1);
            loss_sum += l;
            loss_n += 1;
            images_done += batch.len as u64;
            step += 1;
            ctx.progress.inc(1);
            // The bar shows the step count and its rate; this says where training is.
            ctx.progress.set_message(format!(
                "epoch {}/{} loss {l:.4} val F1 {} {} img/s",
                epoch + 1,
                p.epochs,
                last_val_f1(&state),
                pipe_core::progress::sig3(images_done as f64 / rate_since.elapsed().as_secs_f64().max(1e-9))
            ));

            if step.is_multiple_of(p.eval_every) || step == total {
                let (val_loss, s) = evaluate(&net, &validation_set, &loader(None, 0), device)?;
                let best = s.macro_f1 > state.best_f1;
                if best {
                    state.best_f1 = s.macro_f1;
                    save(&vs, &best_path)?;
                }
                save(&vs, &last_path)?;
                opt.save(&optimizer_path)?;
                state.history.push(Row {
                    step,
                    epoch,
                    lr,
                    train_loss: (loss_n > 0).then(|| loss_sum / loss_n as f64),
                    val_loss,
                    scores: s,
                    best,
                });
                state.step = step;
                state.files = hashes(&saved_files);
                replace(&progress_path, |t| Ok(std::fs::write(t, serde_json::to_vec(&state)?)?))?;
                (loss_sum, loss_n) = (0.0, 0);
                (images_done, rate_since) = (0, Instant::now());
            }
        }
    }
    if skipped > 0 {
        ctx.log(format!(
            "mixed precision: {skipped} steps skipped for overflowing gradients"
        ));
        ctx.count("amp_skipped_steps", skipped);
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
        "kind": pipe_cxr::train::KIND,
        "params": params,
        "architecture": p.architecture,
        "labels": p.labels,
        "input": {
            "shape": [1, size, size],
            "values": "grey levels / 255 in [0, 1], the convert stage's PNG resized bilinearly to image_size",
        },
        "output": "one logit per label (sigmoid for the probability)",
        "train_images": train_set.len(),
        "validation_images": validation_set.len(),
        "steps": total,
        "steps_per_epoch": per_epoch,
        "best": best.map(|r| serde_json::json!({"step": r.step, "val_macro_f1": r.scores.macro_f1, "val_macro_auc": r.scores.macro_auc})),
        "last": last.map(|r| serde_json::json!({"step": r.step, "val_macro_f1": r.scores.macro_f1, "val_macro_auc": r.scores.macro_auc})),
        "device": used,
    });
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    // The entry is final: nothing resumes from it.
    std::fs::remove_file(&progress_path)?;
    std::fs::remove_file(&optimizer_path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 → 2 linear layer with fixed weights (not from the global RNG, which tests on
    /// other threads draw from concurrently).
    fn fixed_linear(vs: &nn::VarStore) -> nn::Linear {
        let lin = nn::linear(vs.root() / "l", 4, 2, Default::default());
        tch::no_grad(|| {
            let w: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 10.0).collect();
            lin.ws.shallow_clone().copy_(&Tensor::from_slice(&w).view([2, 4]));
            lin.bs
                .as_ref()
                .unwrap()
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.1f32, -0.2]));
        });
        lin
    }

    /// The layer's variables after one Adam step on a fixed batch, with or without the
    /// loss scaler (which must give the same update: it scales the loss, then unscales
    /// the gradients).
    fn one_step(scaled: Option<f64>, poison: bool) -> (Vec<Tensor>, Option<LossScaler>) {
        let vs = nn::VarStore::new(TDevice::Cpu);
        let lin = fixed_linear(&vs);
        let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, 1e-2);
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.1, 1.5, 0.3, -0.7, 0.9]).view([2, 4]);
        let mut loss = x.apply(&lin).pow_tensor_scalar(2).mean(Kind::Float);
        if poison {
            loss *= f64::INFINITY;
        }
        let scaler = match scaled {
            Some(scale) => {
                let mut s = LossScaler { scale, good: 0 };
                s.step(&mut opt, &loss);
                Some(s)
            }
            None => {
                opt.backward_step(&loss);
                None
            }
        };
        let vars = vs.trainable_variables().iter().map(|t| t.detach().copy()).collect();
        (vars, scaler)
    }

    #[test]
    fn loss_scaler_gives_the_plain_update_and_skips_overflow() {
        let (plain, _) = one_step(None, false);
        let (scaled, s) = one_step(Some(1024.0), false);
        for (a, b) in plain.iter().zip(&scaled) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "scaled update differs by {diff}");
        }
        assert_eq!(s.unwrap().good, 1);
        // Overflowing gradients: the step is skipped (weights as initialised) and the
        // scale halves.
        let vs = nn::VarStore::new(TDevice::Cpu);
        let _ = fixed_linear(&vs);
        let fresh: Vec<Tensor> = vs.trainable_variables().iter().map(|t| t.detach().copy()).collect();
        let (skipped, s) = one_step(Some(1024.0), true);
        assert!(
            plain
                .iter()
                .zip(&fresh)
                .any(|(a, b)| (a - b).abs().max().double_value(&[]) > 0.0)
        );
        for (a, b) in fresh.iter().zip(&skipped) {
            assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
        }
        assert_eq!(s.unwrap().scale, 512.0);
    }
}
