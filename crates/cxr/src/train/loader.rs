//! The training data loader: worker threads decode and augment images and assemble
//! batches while the network trains on the previous ones.
//!
//! - `workers` threads claim samples one at a time (so even the first batch is built by
//!   all of them) and write them into their batch's buffer;
//! - batches are delivered strictly in order, and at most `prefetch` batches (finished
//!   or being built) exist beyond the one the consumer holds, so memory is bounded;
//! - sample `p` of epoch `e` is augmented with its own generator, seeded by
//!   (seed, epoch, p) alone: the batches are identical whatever the thread count or the
//!   timing, and a resumed run (`first_batch`) sees exactly what the killed one would have;
//! - dropping the [`Loader`] stops the threads after the sample each is decoding.
//!
//! Pure Rust (no LibTorch): the worker turns a [`Batch`] into tensors (pinned on CUDA).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::anyhow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::examples::Example;
use crate::pixels::load_png;
use pipe_core::rng::Rng;

/// The stream of [`Rng::for_item`] that augmentation draws from ("augm").
const AUGMENT_STREAM: u64 = 0x6175_676d;
/// Spaces epochs apart in the per-sample generator index (epoch × this + position).
const EPOCH_STRIDE: u64 = 1_000_003;

/// Random augmentation of training images (params `augment`); validation images are
/// never augmented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Mirror left/right with probability ½. Off by default: a chest X-ray is not
    /// left/right symmetric (heart on the left, situs inversus is a finding), so a flip
    /// makes images that do not occur.
    pub hflip: bool,
    /// Rotation about the centre, uniform in ±this many degrees.
    pub rotate_degrees: f64,
    /// Random-resized crop: the fraction of the image's area kept, uniform in
    /// [min, max]; the crop (square) is scaled back to the full size.
    pub scale: [f64; 2],
    /// Shift of the crop's centre, uniform in ± this fraction of the side, per axis.
    pub translate: f64,
    /// Brightness factor uniform in 1 ± this.
    pub brightness: f64,
    /// Contrast factor (about the image mean) uniform in 1 ± this.
    pub contrast: f64,
}

impl Default for Augment {
    fn default() -> Augment {
        Augment {
            hflip: false,
            rotate_degrees: 5.0,
            scale: [0.85, 1.0],
            translate: 0.05,
            brightness: 0.1,
            contrast: 0.1,
        }
    }
}

impl Augment {
    /// No augmentation: [`augment`] returns its input unchanged.
    pub fn none() -> Augment {
        Augment {
            hflip: false,
            rotate_degrees: 0.0,
            scale: [1.0, 1.0],
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        }
    }

    /// Messages name the param as `augment.FIELD`.
    pub fn validate(&self) -> Result<(), String> {
        let within = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("augment.{name}: must be within 0..={max}, got {v}"))
            }
        };
        // Beyond 45° the corners lose most of the lungs.
        within("rotate_degrees", self.rotate_degrees, 45.0)?;
        within("translate", self.translate, 0.5)?;
        within("brightness", self.brightness, 1.0)?;
        within("contrast", self.contrast, 1.0)?;
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(format!(
                "augment.scale: must be [min, max] with 0 < min <= max <= 1, got [{lo}, {hi}]"
            ));
        }
        Ok(())
    }
}

/// Uniform in ±`half`; exactly 0 when `half` is 0.
fn symmetric(rng: &mut Rng, half: f64) -> f64 {
    half * (2.0 * rng.f64() - 1.0)
}

/// One random augmentation of `img` (`size`×`size` grey values in [0, 1], row-major):
/// one affine warp (rotation, crop scale, translation, optional mirror; bilinear, zero
/// outside the image), then brightness and contrast, clamped to [0, 1]. Always draws the
/// same number of values from `rng`, so what follows does not depend on the params.
pub fn augment(img: &[f32], size: usize, a: &Augment, rng: &mut Rng) -> Vec<f32> {
    assert_eq!(img.len(), size * size, "image is not {size}×{size}");
    let angle = symmetric(rng, a.rotate_degrees).to_radians();
    let area = a.scale[0] + (a.scale[1] - a.scale[0]) * rng.f64();
    let tx = symmetric(rng, a.translate) * size as f64;
    let ty = symmetric(rng, a.translate) * size as f64;
    let flip = rng.f64() < 0.5 && a.hflip;
    let brightness = 1.0 + symmetric(rng, a.brightness);
    let contrast = 1.0 + symmetric(rng, a.contrast);

    // Inverse mapping: output pixel → source point. Side of the crop / side of the
    // image = √area, so each output pixel steps √area source pixels.
    let k = area.sqrt();
    let mut out = if angle == 0.0 && k == 1.0 && tx == 0.0 && ty == 0.0 && !flip {
        img.to_vec()
    } else {
        let (sin, cos) = angle.sin_cos();
        let (c, n) = (size as f64 / 2.0, size as isize);
        let at = |x: isize, y: isize| -> f64 {
            if x < 0 || y < 0 || x >= n || y >= n {
                0.0
            } else {
                img[y as usize * size + x as usize] as f64
            }
        };
        let mut out = Vec::with_capacity(size * size);
        for y in 0..size {
            let v = (y as f64 + 0.5 - c) * k;
            for x in 0..size {
                let mut u = (x as f64 + 0.5 - c) * k;
                if flip {
                    u = -u;
                }
                // Source coordinates, pixel centres at integers.
                let sx = c + tx + cos * u - sin * v - 0.5;
                let sy = c + ty + sin * u + cos * v - 0.5;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
                let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
                out.push((top * (1.0 - fy) + bottom * fy) as f32);
            }
        }
        out
    };
    if brightness != 1.0 {
        for p in &mut out {
            *p = (*p as f64 * brightness).clamp(0.0, 1.0) as f32;
        }
    }
    if contrast != 1.0 {
        let mean = out.iter().map(|&p| p as f64).sum::<f64>() / out.len().max(1) as f64;
        for p in &mut out {
            *p = ((*p as f64 - mean) * contrast + mean).clamp(0.0, 1.0) as f32;
        }
    }
    out
}

/// One batch, as the network takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Batch number within the epoch (0-based).
    pub index: u64,
    /// `[len, 1, size, size]`, row-major, values in [0, 1].
    pub images: Vec<f32>,
    /// `[len, classes]`, row-major, 1.0 / 0.0.
    pub targets: Vec<f32>,
    /// Images in this batch: the batch size, or fewer for the last of the epoch.
    pub len: usize,
}

/// What [`epoch_batches`] builds besides the examples and their order.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Side of the square images the network takes.
    pub size: usize,
    /// Targets per example.
    pub classes: usize,
    /// None for validation: images exactly as [`load_png`] gives them.
    pub augment: Option<Augment>,
    pub seed: u64,
    pub epoch: u64,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// Batches built ahead of the consumer (at least 1).
    pub prefetch: usize,
}

/// Batches `first_batch..` of one pass over `examples` in `order` (indices into
/// `examples`), built by background threads. An error (an unreadable image, named in
/// the message) is delivered in its batch's place and ends the iteration.
pub fn epoch_batches(
    examples: Arc<Vec<Example>>,
    order: Vec<usize>,
    first_batch: usize,
    opts: &LoaderOptions,
) -> Loader {
    let batch_size = opts.batch_size.max(1);
    let batches = order.len().div_ceil(batch_size) as u64;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            next_sample: (first_batch * batch_size).min(order.len()),
            deliver: first_batch as u64,
            building: BTreeMap::new(),
            stop: false,
        }),
        work: Condvar::new(),
        ready: Condvar::new(),
    });
    let job = Arc::new(Job {
        examples,
        order,
        batch_size,
        size: opts.size,
        classes: opts.classes,
        augment: opts.augment.clone(),
        seed: opts.seed,
        epoch: opts.epoch,
        window: opts.prefetch.max(1) as u64,
    });
    let threads = if first_batch as u64 >= batches {
        Vec::new()
    } else {
        (0..opts.workers.max(1))
            .map(|i| {
                let (shared, job) = (shared.clone(), job.clone());
                std::thread::Builder::new()
                    .name(format!("loader-{i}"))
                    .spawn(move || work(&shared, &job))
                    .expect("cannot start a loader thread")
            })
            .collect()
    };
    Loader {
        shared,
        threads,
        batches,
        done: false,
    }
}

/// The batches of one epoch, in order; see [`epoch_batches`].
pub struct Loader {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    batches: u64,
    done: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the consumer takes a batch (room in the window) or on stop.
    work: Condvar,
    /// Signalled when a batch is complete.
    ready: Condvar,
}

struct State {
    /// Position in `order` of the next sample to claim.
    next_sample: usize,
    /// The next batch the consumer takes.
    deliver: u64,
    building: BTreeMap<u64, Partial>,
    stop: bool,
}

struct Partial {
    batch: Batch,
    filled: usize,
    error: Option<anyhow::Error>,
}

struct Job {
    examples: Arc<Vec<Example>>,
    order: Vec<usize>,
    batch_size: usize,
    size: usize,
    classes: usize,
    augment: Option<Augment>,
    seed: u64,
    epoch: u64,
    window: u64,
}

impl Job {
    fn batch_len(&self, b: u64) -> usize {
        let start = b as usize * self.batch_size;
        self.batch_size.min(self.order.len() - start)
    }

    /// Sample at `position` of the epoch: image and targets.
    fn sample(&self, position: usize) -> anyhow::Result<(Vec<f32>, &[f32])> {
        let e = self.examples.get(self.order[position]).ok_or_else(|| {
            anyhow!(
                "order names example {} of {}",
                self.order[position],
                self.examples.len()
            )
        })?;
        anyhow::ensure!(
            e.targets.len() == self.classes,
            "{}: {} targets, expected {}",
            e.sop_instance_uid,
            e.targets.len(),
            self.classes
        );
        let img = load_png(&e.image, self.size)?;
        let img = match &self.augment {
            None => img,
            Some(a) => {
                let index = self.epoch.wrapping_mul(EPOCH_STRIDE).wrapping_add(position as u64);
                let mut rng = Rng::for_item(self.seed, AUGMENT_STREAM, index);
                augment(&img, self.size, a, &mut rng)
            }
        };
        Ok((img, &e.targets))
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A poisoned lock only means a thread panicked while holding it; the state is
    // updated in single steps, so it is still consistent.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loader thread: claim a sample inside the window, build it unlocked, store it.
fn work(shared: &Shared, job: &Job) {
    let pixels = job.size * job.size;
    loop {
        let (position, b) = {
            let mut s = lock(shared);
            let b = loop {
                if s.stop || s.next_sample >= job.order.len() {
                    return;
                }
                let b = (s.next_sample / job.batch_size) as u64;
                if b < s.deliver + job.window {
                    break b;
                }
                s = shared.work.wait(s).unwrap_or_else(|p| p.into_inner());
            };
            let position = s.next_sample;
            s.next_sample += 1;
            s.building.entry(b).or_insert_with(|| {
                let len = job.batch_len(b);
                Partial {
                    batch: Batch {
                        index: b,
                        images: vec![0.0; len * pixels],
                        targets: vec![0.0; len * job.classes],
                        len,
                    },
                    filled: 0,
                    error: None,
                }
            });
            (position, b)
        };
        // A panic in decoding must reach the consumer as an error, not leave it waiting.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.sample(position)))
            .unwrap_or_else(|_| Err(anyhow!("decoding sample {position} panicked")));
        let mut s = lock(shared);
        let Some(p) = s.building.get_mut(&b) else {
            return; // stopped and cleared
        };
        let slot = position - b as usize * job.batch_size;
        match result {
            Ok((img, targets)) => {
                p.batch.images[slot * pixels..(slot + 1) * pixels].copy_from_slice(&img);
                p.batch.targets[slot * job.classes..(slot + 1) * job.classes].copy_from_slice(targets);
            }
            Err(e) => {
                p.error.get_or_insert(e);
            }
        }
        p.filled += 1;
        if p.filled == p.batch.len {
            shared.ready.notify_all();
        }
    }
}

impl Iterator for Loader {
    type Item = anyhow::Result<Batch>;

    fn next(&mut self) -> Option<anyhow::Result<Batch>> {
        if self.done {
            return None;
        }
        let mut s = lock(&self.shared);
        if s.deliver >= self.batches {
            self.done = true;
            return None;
        }
        loop {
            let b = s.deliver;
            if s.building.get(&b).is_some_and(|p| p.filled == p.batch.len) {
                let p = s.building.remove(&b).expect("checked above");
                s.deliver += 1;
                self.shared.work.notify_all();
                return Some(match p.error {
                    None => Ok(p.batch),
                    Some(e) => {
                        self.done = true;
                        s.stop = true;
                        Err(e.context(format!("batch {b} of epoch")))
                    }
                });
            }
            s = self.shared.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        {
            let mut s = lock(&self.shared);
            s.stop = true;
            s.building.clear();
        }
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use super::*;

    /// A `side`×`side` 8-bit grey PNG whose pixels depend on `seed`.
    fn write_png(path: &Path, side: u32, seed: u64) {
        let mut rng = Rng::for_item(seed, 1, 0);
        let data: Vec<u8> = (0..side * side).map(|_| rng.range(0, 256) as u8).collect();
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&data).unwrap();
    }

    fn dataset(dir: &Path, n: usize) -> Arc<Vec<Example>> {
        Arc::new(
            (0..n)
                .map(|i| {
                    let image = dir.join(format!("{i}.png"));
                    write_png(&image, 24, i as u64);
                    Example {
                        sop_instance_uid: format!("1.2.{i}"),
                        patient_id: format!("P{i}"),
                        image,
                        targets: vec![(i % 2) as f32, u8::from(i % 3 == 0) as f32],
                        uncertain: vec![false; 2],
                    }
                })
                .collect(),
        )
    }

    fn opts(augment: Option<Augment>, epoch: u64, workers: usize) -> LoaderOptions {
        LoaderOptions {
            batch_size: 4,
            size: 16,
            classes: 2,
            augment,
            seed: 9,
            epoch,
            workers,
            prefetch: 2,
        }
    }

    fn all(l: Loader) -> Vec<Batch> {
        l.collect::<anyhow::Result<Vec<_>>>().unwrap()
    }

    #[test]
    fn none_is_the_identity_and_output_stays_in_range() {
        let mut rng = Rng::for_item(1, 2, 3);
        let img: Vec<f32> = (0..32 * 32).map(|_| rng.f64() as f32).collect();
        assert_eq!(augment(&img, 32, &Augment::none(), &mut rng), img);
        let strong = Augment {
            hflip: true,
            rotate_degrees: 45.0,
            scale: [0.3, 1.0],
            translate: 0.5,
            brightness: 1.0,
            contrast: 1.0,
        };
        assert_eq!(strong.validate(), Ok(()));
        for _ in 0..50 {
            let out = augment(&img, 32, &strong, &mut rng);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            assert_ne!(out, img);
        }
    }

    #[test]
    fn rotation_keeps_a_centred_blob_centred() {
        let size = 64;
        let c = size as f64 / 2.0;
        let img: Vec<f32> = (0..size * size)
            .map(|i| {
                let (x, y) = ((i % size) as f64 + 0.5 - c, (i / size) as f64 + 0.5 - c);
                (-(x * x + 2.0 * y * y) / 40.0).exp() as f32
            })
            .collect();
        let a = Augment {
            rotate_degrees: 30.0,
            ..Augment::none()
        };
        let mut rng = Rng::for_item(5, 6, 7);
        for _ in 0..10 {
            let out = augment(&img, size, &a, &mut rng);
            assert_ne!(out, img);
            let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
            for (i, &v) in out.iter().enumerate() {
                let v = v as f64;
                m += v;
                mx += v * ((i % size) as f64 + 0.5);
                my += v * ((i / size) as f64 + 0.5);
            }
            assert!(
                (mx / m - c).abs() < 0.05 && (my / m - c).abs() < 0.05,
                "{} {}",
                mx / m,
                my / m
            );
        }
    }

    #[test]
    fn validation_messages_name_the_field() {
        assert_eq!(Augment::default().validate(), Ok(()));
        assert_eq!(Augment::none().validate(), Ok(()));
        let bad = Augment {
            rotate_degrees: 90.0,
            ..Augment::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "augment.rotate_degrees: must be within 0..=45, got 90"
        );
        let bad = Augment {
            scale: [0.9, 0.5],
            ..Augment::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("augment.scale:"));
        let a: Augment = serde_json::from_str(r#"{"hflip": true}"#).unwrap();
        assert_eq!(
            a,
            Augment {
                hflip: true,
                ..Augment::default()
            }
        );
        assert!(serde_json::from_str::<Augment>(r#"{"rotate": 3}"#).is_err());
    }

    #[test]
    fn same_batches_whatever_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let ex = dataset(dir.path(), 11);
        let order = crate::train::epoch_order(11, 9, 0);
        let one = all(epoch_batches(
            ex.clone(),
            order.clone(),
            0,
            &opts(Some(Augment::default()), 0, 1),
        ));
        let three = all(epoch_batches(
            ex.clone(),
            order.clone(),
            0,
            &opts(Some(Augment::default()), 0, 3),
        ));
        assert_eq!(one.len(), 3);
        assert_eq!(one.iter().map(|b| b.len).collect::<Vec<_>>(), vec![4, 4, 3]);
        assert_eq!(one.iter().map(|b| b.index).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(one, three);
        // Targets follow the order.
        let t: Vec<f32> = order.iter().flat_map(|&i| ex[i].targets.clone()).collect();
        assert_eq!(one.iter().flat_map(|b| b.targets.clone()).collect::<Vec<_>>(), t);
        // A resumed run starting at batch 1 sees the same batches.
        let resumed = all(epoch_batches(
            ex.clone(),
            order.clone(),
            1,
            &opts(Some(Augment::default()), 0, 2),
        ));
        assert_eq!(resumed, one[1..]);
        assert!(all(epoch_batches(ex.clone(), order.clone(), 3, &opts(None, 0, 2))).is_empty());
        // Another epoch draws other augmentations.
        let other = all(epoch_batches(ex, order, 0, &opts(Some(Augment::default()), 1, 2)));
        assert_eq!(other.len(), 3);
        for (a, b) in one.iter().zip(&other) {
            assert_ne!(a.images, b.images);
            assert_eq!(a.targets, b.targets);
        }
    }

    #[test]
    fn validation_batches_equal_load_png() {
        let dir = tempfile::tempdir().unwrap();
        let ex = dataset(dir.path(), 7);
        let order: Vec<usize> = (0..7).collect();
        let got = all(epoch_batches(ex.clone(), order, 0, &opts(None, 0, 3)));
        let images: Vec<f32> = got.iter().flat_map(|b| b.images.clone()).collect();
        let want: Vec<f32> = ex.iter().flat_map(|e| load_png(&e.image, 16).unwrap()).collect();
        assert_eq!(images, want);
    }

    #[test]
    fn dropping_mid_epoch_stops_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let ex = dataset(dir.path(), 40);
        let order: Vec<usize> = (0..40).collect();
        let mut o = opts(Some(Augment::default()), 0, 3);
        o.prefetch = 1;
        let mut l = epoch_batches(ex, order, 0, &o);
        assert_eq!(l.next().unwrap().unwrap().index, 0);
        // Let the threads fill the window and block on it.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(l);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn a_corrupt_png_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut ex = Arc::try_unwrap(dataset(dir.path(), 9)).unwrap();
        let bad: PathBuf = dir.path().join("broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        ex[5].image = bad.clone();
        let order: Vec<usize> = (0..9).collect();
        let mut l = epoch_batches(Arc::new(ex), order, 0, &opts(Some(Augment::default()), 0, 2));
        assert!(l.next().unwrap().is_ok());
        let e = l.next().unwrap().unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&bad.display().to_string()), "{msg}");
        assert!(msg.contains("batch 1"), "{msg}");
        assert!(l.next().is_none());
    }
}
