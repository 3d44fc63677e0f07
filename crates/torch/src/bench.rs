//! Timings for `benches/train.py`, each printed as one JSON line:
//! - `pipe-torch bench-step --arch tiny --batch 32 --size 64 --steps 30 --threads 2`:
//!   training steps of a `train` architecture (forward, BCE with logits, backward, Adam) on a fixed random batch,
//!   or, with `--dir DIR --workers N`, on batches from the train loader over the PNGs in
//!   DIR (augmented; the time of a step then includes waiting for its batch);
//! - `pipe-torch bench-loader --dir DIR --size 64 --batch 32 --workers 2`: one epoch of
//!   the train loader (decode, augment, batch) over the PNGs in DIR, each batch turned
//!   into tensors as the training loop does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Reduction, Tensor};

use pipe_cxr::examples::Example;
use pipe_cxr::train::loader::{Augment, Batch, Loader, LoaderOptions, epoch_batches};

/// Steps run before timing: the first ones allocate and pick kernels.
const WARMUP_STEPS: usize = 5;

/// `--key value` pairs; every key must be in `known`.
fn options(args: &[String], known: &[&str]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .with_context(|| format!("expected --option, got `{k}`"))?;
        ensure!(
            known.contains(&key),
            "unknown option --{key}; known: --{}",
            known.join(", --")
        );
        let v = it.next().with_context(|| format!("--{key} needs a value"))?;
        out.insert(key.to_string(), v.clone());
    }
    Ok(out)
}

fn get<T: std::str::FromStr>(o: &HashMap<String, String>, key: &str, default: T) -> anyhow::Result<T> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| anyhow::anyhow!("--{key}: cannot parse `{v}`")),
    }
}

/// Median and 90th percentile (nearest rank) of `ms`.
fn median_p90(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p90 = ms[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    (median, p90)
}

pub fn step(args: &[String]) -> anyhow::Result<()> {
    let o = options(
        args,
        &[
            "arch", "batch", "size", "steps", "threads", "classes", "seed", "dir", "workers",
        ],
    )?;
    let arch: String = get(&o, "arch", "tiny".to_string())?;
    let batch: i64 = get(&o, "batch", 32)?;
    let size: i64 = get(&o, "size", 64)?;
    let steps: usize = get(&o, "steps", 30)?;
    let threads: i32 = get(&o, "threads", 2)?;
    let classes: i64 = get(&o, "classes", 5)?;
    let seed: i64 = get(&o, "seed", 0)?;
    ensure!(
        batch > 0 && size >= 8 && steps > 0 && threads > 0 && classes > 0,
        "bad sizes"
    );
    tch::set_num_threads(threads);
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    // The networks of the `train` stage, so the timing is the stage's.
    let net = crate::nets::build(&arch, &vs.root(), classes)?;
    // The `train` stage's optimiser, so the timing is the stage's.
    let mut opt = crate::optim::Adam::new(&vs, 0.9, 0.999, 1e-8, 1e-3);
    let x = Tensor::rand([batch, 1, size, size], (Kind::Float, Device::Cpu));
    let y = Tensor::rand([batch, classes], (Kind::Float, Device::Cpu))
        .ge(0.5)
        .to_kind(Kind::Float);
    // With --dir, each step takes the next batch of the loader, epoch after epoch.
    let mut feed = match o.get("dir") {
        None => None,
        Some(dir) => {
            let examples = Arc::new(png_examples(&PathBuf::from(dir), classes as usize)?);
            let opts = LoaderOptions {
                batch_size: batch as usize,
                size: size as usize,
                classes: classes as usize,
                augment: Some(Augment::default()),
                seed: seed as u64,
                epoch: 0,
                workers: get(&o, "workers", 2)?,
                prefetch: 4,
            };
            Some(Feed {
                examples,
                opts,
                loader: None,
            })
        }
    };
    let mut ms = Vec::with_capacity(steps);
    for i in 0..WARMUP_STEPS + steps {
        let t = Instant::now();
        let (x, y) = match &mut feed {
            None => (x.shallow_clone(), y.shallow_clone()),
            Some(f) => {
                let b = f.next()?;
                (
                    Tensor::from_slice(&b.images).view([b.len as i64, 1, size, size]),
                    Tensor::from_slice(&b.targets).view([b.len as i64, classes]),
                )
            }
        };
        let loss = net
            .forward_t(&x, true)
            .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean);
        opt.backward_step(&loss);
        // Reading the loss each step is what the training loop does.
        let l = loss.double_value(&[]);
        ensure!(l.is_finite(), "loss {l} at step {i}");
        if i >= WARMUP_STEPS {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (median, p90) = median_p90(&mut ms);
    println!(
        "{}",
        serde_json::json!({
            "bench": "step", "impl": "pipe-torch", "arch": arch, "batch": batch, "size": size,
            "steps": steps, "threads": threads, "median_ms": median, "p90_ms": p90,
            "loader_workers": feed.as_ref().map(|f| f.opts.workers),
            "images_per_s": batch as f64 / (median / 1e3),
        })
    );
    Ok(())
}

/// The train loader over epochs 0, 1, … of `examples`.
struct Feed {
    examples: Arc<Vec<Example>>,
    opts: LoaderOptions,
    loader: Option<Loader>,
}

impl Feed {
    fn next(&mut self) -> anyhow::Result<Batch> {
        loop {
            if let Some(b) = self.loader.as_mut().and_then(Iterator::next) {
                return b;
            }
            if self.loader.is_some() {
                self.opts.epoch += 1;
            }
            let order = pipe_cxr::train::epoch_order(self.examples.len(), self.opts.seed, self.opts.epoch);
            self.loader = Some(epoch_batches(self.examples.clone(), order, 0, &self.opts));
        }
    }
}

/// The PNGs in `dir` (sorted by name) as examples with all-zero targets.
fn png_examples(dir: &std::path::Path, classes: usize) -> anyhow::Result<Vec<Example>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    images.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("png"));
    images.sort();
    if images.is_empty() {
        bail!("no .png files in {}", dir.display());
    }
    Ok(images
        .into_iter()
        .enumerate()
        .map(|(i, image)| Example {
            sop_instance_uid: i.to_string(),
            patient_id: i.to_string(),
            image,
            targets: vec![0.0; classes],
            uncertain: vec![false; classes],
        })
        .collect())
}

pub fn loader(args: &[String]) -> anyhow::Result<()> {
    let o = options(
        args,
        &[
            "dir", "size", "batch", "workers", "prefetch", "augment", "classes", "seed",
        ],
    )?;
    let dir = PathBuf::from(o.get("dir").context("--dir is required")?);
    let size: usize = get(&o, "size", 64)?;
    let batch_size: usize = get(&o, "batch", 32)?;
    let workers: usize = get(&o, "workers", 2)?;
    let prefetch: usize = get(&o, "prefetch", 4)?;
    let augment: bool = get(&o, "augment", true)?;
    let classes: usize = get(&o, "classes", 5)?;
    let seed: u64 = get(&o, "seed", 0)?;
    let examples = png_examples(&dir, classes)?;
    let n = examples.len();
    let opts = LoaderOptions {
        batch_size,
        size,
        classes,
        augment: augment.then(Augment::default),
        seed,
        epoch: 0,
        workers,
        prefetch,
    };
    let order = pipe_cxr::train::epoch_order(n, seed, 0);
    let t = Instant::now();
    let mut first_ms = None;
    let mut batches = 0;
    let mut checksum = 0.0;
    for b in epoch_batches(Arc::new(examples), order, 0, &opts) {
        let b = b?;
        first_ms.get_or_insert(t.elapsed().as_secs_f64() * 1e3);
        // The consumer's share: copying the batch into tensors.
        let x = Tensor::from_slice(&b.images).view([b.len as i64, 1, size as i64, size as i64]);
        let y = Tensor::from_slice(&b.targets).view([b.len as i64, classes as i64]);
        checksum += x.sum(Kind::Double).double_value(&[]) + y.sum(Kind::Double).double_value(&[]);
        batches += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(checksum.is_finite(), "non-finite pixels");
    println!(
        "{}",
        serde_json::json!({
            "bench": "loader", "images": n, "batches": batches, "size": size, "batch": batch_size,
            "workers": workers, "prefetch": prefetch, "augment": augment, "seconds": secs,
            "first_batch_ms": first_ms, "images_per_s": n as f64 / secs,
        })
    );
    Ok(())
}
