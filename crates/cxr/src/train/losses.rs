//! Loss functions of the `train` stage (LibTorch; compiled into `pipe-torch` only).
//!
//! The paper (Phu Tho CXR, "Model development") trains its five-class multi-label
//! classifier with three losses: binary cross-entropy, the Asymmetric Loss of Ben-Baruch
//! et al. (arXiv:2009.14119) and the Distribution-Balanced Loss of Wu et al. (ECCV 2020).
//! Each takes logits `[N, C]` and targets `[N, C]` in {0, 1} (any float kind; targets are
//! converted to the logits' kind and device) and returns a scalar. The reductions differ
//! as in the official implementations, see [`Loss::compute`].

use tch::{Reduction, Tensor};

/// A multi-label loss; a NaN target is left out (masked: U-Ignore). Build with the constructors ([`Loss::bce`], [`Loss::asymmetric`],
/// [`Loss::distribution_balanced`], …) and check with [`Loss::validate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// `binary_cross_entropy_with_logits`, mean over all `N·C` elements.
    Bce,
    /// Asymmetric Loss (Ben-Baruch et al.), transcribed from the official `AsymmetricLoss`
    /// (Alibaba-MIIL/ASL, `src/loss_functions/losses.py`):
    ///
    /// ```text
    /// xs_pos = σ(x); xs_neg = 1 − xs_pos; if clip > 0: xs_neg = (xs_neg + clip).clamp(max=1)
    /// loss   = y·log(xs_pos.clamp(min=eps)) + (1−y)·log(xs_neg.clamp(min=eps))
    /// if γ+ > 0 or γ− > 0:                   (weight computed without gradient, as the
    ///     pt = xs_pos·y + xs_neg·(1−y)        official default disable_torch_grad_focal_loss)
    ///     loss *= (1 − pt)^(γ+·y + γ−·(1−y))
    /// ASL = −Σ loss / N
    /// ```
    ///
    /// The official code returns the plain sum; here it is divided by the batch size `N`
    /// (not by `N·C`), so the value does not grow with the batch.
    Asymmetric {
        gamma_pos: f64,
        gamma_neg: f64,
        clip: f64,
        eps: f64,
    },
    /// Distribution-Balanced Loss (Wu et al.), transcribed from the official `ResampleLoss`
    /// (wutong16/DistributionBalancedLoss, `mllt/models/losses/resample_loss.py`) with
    /// `use_sigmoid=True, reweight_func='rebalance', weight_norm=None, focal=False,
    /// map_param=dict(alpha, beta, gamma=mu), logit_reg=dict(neg_scale, init_bias),
    /// reduction='mean', loss_weight=1.0`:
    ///
    /// ```text
    /// freq_inv    = 1 / class_freq                                  [C]
    /// repeat_rate = Σ_c y·freq_inv                                  [N, 1]
    /// r           = freq_inv / repeat_rate                          [N, C]  (re-balancing)
    /// w           = σ(beta·(r − mu)) + alpha                                  (smoothing)
    /// b           = −log(num_samples / class_freq − 1) · init_bias / neg_scale   (κ·prior)
    /// z           = x + b;  z = z·(1−y)·neg_scale + z·y           (negative-tolerant reg.)
    /// w           = w / neg_scale·(1−y) + w·y
    /// DBL         = mean over N·C of BCEWithLogits(z, y, weight=w)
    /// ```
    ///
    /// Note the official code divides the prior bias by `neg_scale` (`self.init_bias = −log(
    /// train_num / class_freq − 1) · init_bias / neg_scale`); this follows it. An instance
    /// with no positive label has `repeat_rate = 0`, so `r = ∞` and `w = 1 + alpha` on every
    /// class (the official code's IEEE result, kept as is). The weights carry no gradient.
    DistributionBalanced {
        /// Positive training instances per class (`class_freq` of the official code).
        class_freq: Vec<f64>,
        /// Training instances in all (`train_num` = class_freq + neg_class_freq).
        num_samples: f64,
        /// `map_param.alpha`: added to the smoothed weight (0.1).
        alpha: f64,
        /// `map_param.beta`: slope of the smoothing sigmoid (10).
        beta: f64,
        /// `map_param.gamma` (μ): centre of the smoothing sigmoid (0.2).
        mu: f64,
        /// `logit_reg.neg_scale` (λ): negative logits scaled by it, their loss divided by it (2).
        neg_scale: f64,
        /// `logit_reg.init_bias` (κ): scale of the class-prior bias added to the logits (0.05).
        init_bias: f64,
    },
}

impl Loss {
    /// Plain binary cross-entropy.
    pub fn bce() -> Self {
        Loss::Bce
    }

    /// ASL with the setting the ASL paper found best for multi-label: γ+ = 0, γ− = 4,
    /// clip 0.05, eps 1e-8.
    pub fn asymmetric() -> Self {
        Self::asymmetric_with(0.0, 4.0, 0.05)
    }

    /// ASL with the given γ+, γ−, clip (eps 1e-8).
    pub fn asymmetric_with(gamma_pos: f64, gamma_neg: f64, clip: f64) -> Self {
        Loss::Asymmetric {
            gamma_pos,
            gamma_neg,
            clip,
            eps: 1e-8,
        }
    }

    /// DBL with the official defaults (`map_param` alpha 0.1, beta 10, gamma 0.2;
    /// `logit_reg` neg_scale 2.0, init_bias 0.05), for the training set's positive counts
    /// per class and its size.
    pub fn distribution_balanced(class_freq: Vec<f64>, num_samples: f64) -> Self {
        Loss::DistributionBalanced {
            class_freq,
            num_samples,
            alpha: 0.1,
            beta: 10.0,
            mu: 0.2,
            neg_scale: 2.0,
            init_bias: 0.05,
        }
    }

    /// Short name for logs: `bce`, `asl`, `dbl`.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Asymmetric { .. } => "asl",
            Loss::DistributionBalanced { .. } => "dbl",
        }
    }

    /// Checks the parameters; a message naming the bad one otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be finite, got {v}"))
            }
        };
        match self {
            Loss::Bce => Ok(()),
            Loss::Asymmetric {
                gamma_pos,
                gamma_neg,
                clip,
                eps,
            } => {
                for (name, v) in [
                    ("gamma_pos", gamma_pos),
                    ("gamma_neg", gamma_neg),
                    ("clip", clip),
                    ("eps", eps),
                ] {
                    finite(name, *v)?;
                }
                if *gamma_pos < 0.0 || *gamma_neg < 0.0 {
                    return Err(format!(
                        "gammas must be ≥ 0, got gamma_pos {gamma_pos}, gamma_neg {gamma_neg}"
                    ));
                }
                if !(0.0..1.0).contains(clip) {
                    return Err(format!("clip must be in [0, 1), got {clip}"));
                }
                if *eps <= 0.0 || *eps >= 1.0 {
                    return Err(format!("eps must be in (0, 1), got {eps}"));
                }
                Ok(())
            }
            Loss::DistributionBalanced {
                class_freq,
                num_samples,
                alpha,
                beta,
                mu,
                neg_scale,
                init_bias,
            } => {
                for (name, v) in [
                    ("num_samples", num_samples),
                    ("alpha", alpha),
                    ("beta", beta),
                    ("mu", mu),
                    ("neg_scale", neg_scale),
                    ("init_bias", init_bias),
                ] {
                    finite(name, *v)?;
                }
                if class_freq.is_empty() {
                    return Err("class_freq is empty".into());
                }
                for (i, f) in class_freq.iter().enumerate() {
                    // log(num_samples / f − 1) needs 0 < f < num_samples.
                    if !(f.is_finite() && *f > 0.0 && f < num_samples) {
                        return Err(format!(
                            "class_freq[{i}] = {f}: every class needs 0 < positives < num_samples ({num_samples})"
                        ));
                    }
                }
                if *beta <= 0.0 {
                    return Err(format!("beta must be > 0, got {beta}"));
                }
                if *neg_scale <= 0.0 {
                    return Err(format!("neg_scale must be > 0, got {neg_scale}"));
                }
                Ok(())
            }
        }
    }

    /// The scalar loss of a batch: logits `[N, C]`, targets `[N, C]` in {0, 1}.
    ///
    /// Reductions: BCE and DBL average over all `N·C` elements (PyTorch's and the official
    /// code's `reduction='mean'`); ASL sums over all elements and divides by `N` (the
    /// official code returns the sum). Panics on shapes that differ, are not 2-D, or (DBL)
    /// whose `C` is not `class_freq.len()`: those are programming errors of the caller.
    pub fn compute(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let size = logits.size();
        assert!(size.len() == 2, "logits must be [N, C], got {size:?}");
        assert_eq!(
            size,
            targets.size(),
            "logits {size:?} and targets {:?} differ",
            targets.size()
        );
        let kind = logits.kind();
        let y = targets.to_device(logits.device()).to_kind(kind);
        // A NaN target (an uncertain label under U-Ignore) is out of the loss: it counts
        // neither in the sum nor in the mean, and its logit gets no gradient. Without one,
        // the computation is exactly the unmasked one.
        let nan = y.isnan();
        let masked = nan.any().int64_value(&[]) != 0;
        let (y, mask) = if masked {
            (y.nan_to_num(0.0, None, None), Some(nan.logical_not().to_kind(kind)))
        } else {
            (y, None)
        };
        match self {
            Loss::Bce => match &mask {
                None => logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean),
                Some(m) => {
                    let each = logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::None);
                    (each * m).sum(kind) / m.sum(kind).clamp_min(1.0)
                }
            },
            Loss::Asymmetric {
                gamma_pos,
                gamma_neg,
                clip,
                eps,
            } => {
                let xs_pos = logits.sigmoid();
                let mut xs_neg = 1.0 - &xs_pos;
                if *clip > 0.0 {
                    let shifted: Tensor = xs_neg + *clip;
                    xs_neg = shifted.clamp_max(1.0);
                }
                let anti = 1.0 - &y;
                let loss = &y * xs_pos.clamp_min(*eps).log() + &anti * xs_neg.clamp_min(*eps).log();
                let loss = match &mask {
                    Some(m) => loss * m,
                    None => loss,
                };
                let loss = if *gamma_pos > 0.0 || *gamma_neg > 0.0 {
                    let w = tch::no_grad(|| {
                        let pt = &xs_pos * &y + &xs_neg * &anti;
                        let gamma = &y * *gamma_pos + &anti * *gamma_neg;
                        let base: Tensor = 1.0 - pt;
                        base.pow(&gamma)
                    });
                    loss * w
                } else {
                    loss
                };
                -loss.sum(kind) / size[0] as f64
            }
            Loss::DistributionBalanced {
                class_freq,
                num_samples,
                alpha,
                beta,
                mu,
                neg_scale,
                init_bias,
            } => {
                assert_eq!(
                    size[1],
                    class_freq.len() as i64,
                    "logits have {} classes, class_freq {}",
                    size[1],
                    class_freq.len()
                );
                let freq = Tensor::from_slice(class_freq).to_kind(kind).to_device(logits.device());
                let anti = 1.0 - &y;
                let weight = tch::no_grad(|| {
                    let freq_inv = freq.ones_like() / &freq;
                    let repeat_rate = (&y * &freq_inv).sum_dim_intlist([1i64].as_slice(), true, kind);
                    let r = freq_inv.unsqueeze(0) / repeat_rate;
                    let w = (*beta * (r - *mu)).sigmoid() + *alpha;
                    &w / *neg_scale * &anti + &w * &y
                });
                let bias =
                    tch::no_grad(|| -((freq.full_like(*num_samples) / &freq) - 1.0).log() * *init_bias / *neg_scale);
                let z = logits + bias.unsqueeze(0);
                let z = &z * &anti * *neg_scale + &z * &y;
                match &mask {
                    None => z.binary_cross_entropy_with_logits(&y, Some(&weight), None, Reduction::Mean),
                    Some(m) => {
                        let each = z.binary_cross_entropy_with_logits(&y, Some(&(weight * m)), None, Reduction::None);
                        each.sum(kind) / m.sum(kind).clamp_min(1.0)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use serde_json::{Value, json};
    use tch::{Kind, Tensor};

    use super::Loss;

    const N: usize = 8;
    const C: usize = 5;
    const FREQ: [f64; 5] = [60.0, 90.0, 300.0, 150.0, 600.0];
    const TRAIN_NUM: f64 = 1600.0;

    /// PyTorch references, transcribed from the official code (not from the Rust above):
    /// ASL from Alibaba-MIIL/ASL `AsymmetricLoss.forward` (then ÷ N), DBL from
    /// wutong16/DistributionBalancedLoss `ResampleLoss` (`__init__`, `rebalance_weight`,
    /// `logit_reg_functions`, `forward` with focal=False, `binary_cross_entropy` + mean).
    /// For each case: the loss and d loss / d logits.
    const REFERENCE: &str = r#"
import json, sys
import torch
import torch.nn.functional as F

def asl(x, y, p):
    gamma_neg, gamma_pos, clip, eps = p["gamma_neg"], p["gamma_pos"], p["clip"], p["eps"]
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        torch.set_grad_enabled(False)  # torch._C.set_grad_enabled upstream; gone in torch 2.11
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        torch.set_grad_enabled(True)
        loss = loss * one_sided_w
    return -loss.sum() / x.shape[0]

def dbl(x, y, p):
    dt = x.dtype
    class_freq = torch.tensor(p["class_freq"], dtype=dt)
    train_num = p["num_samples"]
    neg_scale = p["neg_scale"]
    init_bias = - torch.log(train_num / class_freq - 1) * p["init_bias"] / neg_scale
    freq_inv = torch.ones(class_freq.shape, dtype=dt) / class_freq
    # rebalance_weight
    repeat_rate = torch.sum(y * freq_inv, dim=1, keepdim=True)
    pos_weight = freq_inv.clone().detach().unsqueeze(0) / repeat_rate
    weight = torch.sigmoid(p["beta"] * (pos_weight - p["mu"])) + p["alpha"]
    # logit_reg_functions (out of place: the official `logits += ...` would modify a leaf)
    logits = x + init_bias
    logits = logits * (1 - y) * neg_scale + logits * y
    weight = weight / neg_scale * (1 - y) + weight * y
    # binary_cross_entropy with weight, weight_reduce_loss(reduction='mean'), loss_weight 1
    loss = F.binary_cross_entropy_with_logits(logits, y, weight, reduction='none')
    return 1.0 * loss.mean()

def bce(x, y, p):
    return F.binary_cross_entropy_with_logits(x, y)

out = []
for c in json.load(sys.stdin):
    dt = {"f32": torch.float32, "f64": torch.float64}[c["dtype"]]
    n, k = c["n"], c["c"]
    x = torch.tensor(c["logits"], dtype=torch.float64).to(dt).reshape(n, k).requires_grad_(True)
    y = torch.tensor(c["targets"], dtype=torch.float64).to(dt).reshape(n, k)
    loss = {"bce": bce, "asl": asl, "dbl": dbl}[c["loss"]](x, y, c["params"])
    loss.backward()
    out.append({"loss": loss.item(), "grad": x.grad.double().flatten().tolist()})
json.dump(out, sys.stdout)
"#;

    fn reference(cases: &Value) -> Vec<Value> {
        let python = std::env::var("PIPE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .args(["-c", REFERENCE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        // Python reads all of stdin before writing, so writing first cannot deadlock.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cases.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{python} (needs torch) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A fixed batch: logits uniform in [−4, 4] from a 64-bit LCG, targets positive with
    /// probability 0.3; row 0 all negative (a normal study), row 1 all positive.
    fn batch(seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let logits: Vec<f64> = (0..N * C).map(|_| next() * 8.0 - 4.0).collect();
        let targets = (0..N * C)
            .map(|i| match i / C {
                0 => 0.0,
                1 => 1.0,
                _ => f64::from(u8::from(next() < 0.3)),
            })
            .collect();
        (logits, targets)
    }

    fn params(loss: &Loss) -> Value {
        match loss {
            Loss::Bce => json!({}),
            Loss::Asymmetric {
                gamma_pos,
                gamma_neg,
                clip,
                eps,
            } => {
                json!({"gamma_pos": gamma_pos, "gamma_neg": gamma_neg, "clip": clip, "eps": eps})
            }
            Loss::DistributionBalanced {
                class_freq,
                num_samples,
                alpha,
                beta,
                mu,
                neg_scale,
                init_bias,
            } => json!({
                "class_freq": class_freq, "num_samples": num_samples, "alpha": alpha, "beta": beta,
                "mu": mu, "neg_scale": neg_scale, "init_bias": init_bias,
            }),
        }
    }

    /// Loss and gradient w.r.t. the logits, computed here.
    fn ours(loss: &Loss, logits: &[f64], targets: &[f64], kind: Kind) -> (f64, Vec<f64>) {
        let x = Tensor::from_slice(logits)
            .reshape([N as i64, C as i64])
            .to_kind(kind)
            .set_requires_grad(true);
        let y = Tensor::from_slice(targets).reshape([N as i64, C as i64]).to_kind(kind);
        let l = loss.compute(&x, &y);
        assert_eq!(l.size(), Vec::<i64>::new(), "{} is not a scalar", loss.name());
        assert_eq!(l.kind(), kind);
        l.backward();
        let grad = Vec::<f64>::try_from(&x.grad().to_kind(Kind::Double).reshape([-1])).unwrap();
        (l.double_value(&[]), grad)
    }

    /// Compares every (loss, dtype, batch) with PyTorch; prints the largest differences.
    fn check(name: &str, losses: &[Loss]) {
        let seeds = [1u64, 2, 3];
        let kinds = [(Kind::Double, "f64"), (Kind::Float, "f32")];
        let mut cases = vec![];
        let mut mine = vec![];
        for loss in losses {
            loss.validate().unwrap();
            for &(kind, dtype) in &kinds {
                for &seed in &seeds {
                    let (logits, targets) = batch(seed);
                    mine.push((loss.clone(), dtype, ours(loss, &logits, &targets, kind)));
                    cases.push(json!({
                        "loss": loss.name(), "params": params(loss), "dtype": dtype, "n": N, "c": C,
                        "logits": logits, "targets": targets,
                    }));
                }
            }
        }
        let theirs = reference(&Value::Array(cases));
        assert_eq!(theirs.len(), mine.len());
        let mut worst: Vec<(String, f64, f64)> = vec![];
        for ((loss, dtype, (l, g)), t) in mine.iter().zip(&theirs) {
            let tl = t["loss"].as_f64().unwrap();
            let tg: Vec<f64> = t["grad"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(l.is_finite(), "{loss:?} {dtype}: loss {l}");
            let dl = (l - tl).abs();
            let dg = g.iter().zip(&tg).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(dl < 1e-5, "{loss:?} {dtype}: ours {l} vs PyTorch {tl}");
            assert!(dg < 1e-5, "{loss:?} {dtype}: gradients differ by {dg}");
            let key = format!("{loss:?} {dtype}");
            match worst.iter_mut().find(|w| w.0 == key) {
                Some(w) => {
                    w.1 = w.1.max(dl);
                    w.2 = w.2.max(dg);
                }
                None => worst.push((key, dl, dg)),
            }
        }
        for (key, dl, dg) in worst {
            println!("{name}: {key}: max |loss diff| {dl:e}, max |grad diff| {dg:e}");
        }
    }

    #[test]
    fn bce_matches_pytorch() {
        check("bce", &[Loss::bce()]);
    }

    #[test]
    fn asl_matches_official() {
        check(
            "asl",
            &[
                Loss::asymmetric(),
                Loss::asymmetric_with(1.0, 4.0, 0.0),
                Loss::asymmetric_with(0.0, 0.0, 0.0),
            ],
        );
        assert_eq!(Loss::asymmetric(), Loss::asymmetric_with(0.0, 4.0, 0.05));
    }

    #[test]
    fn asl_without_focusing_or_clip_is_bce_sum_over_n() {
        for seed in [1, 2, 3] {
            let (logits, targets) = batch(seed);
            let (asl, _) = ours(&Loss::asymmetric_with(0.0, 0.0, 0.0), &logits, &targets, Kind::Double);
            let (bce, _) = ours(&Loss::Bce, &logits, &targets, Kind::Double);
            let d = (asl - bce * C as f64).abs();
            println!("asl(0,0,0) vs C·bce: |diff| {d:e}");
            assert!(d < 1e-9, "ASL(0,0,0) {asl} vs BCE sum/N {}", bce * C as f64);
        }
    }

    #[test]
    fn dbl_matches_official() {
        let default = Loss::distribution_balanced(FREQ.to_vec(), TRAIN_NUM);
        let Loss::DistributionBalanced {
            class_freq,
            num_samples,
            alpha,
            beta,
            mu,
            ..
        } = default.clone()
        else {
            unreachable!()
        };
        let plain = Loss::DistributionBalanced {
            class_freq,
            num_samples,
            alpha,
            beta,
            mu,
            neg_scale: 1.0,
            init_bias: 0.0,
        };
        check("dbl", &[default, plain.clone()]);

        // Without the regularisation it is BCE weighted by the re-balanced weights.
        let (logits, targets) = batch(4);
        let (l, _) = ours(&plain, &logits, &targets, Kind::Double);
        let mut sum = 0.0;
        for i in 0..N {
            let row = &targets[i * C..(i + 1) * C];
            let repeat: f64 = row.iter().zip(FREQ).map(|(y, f)| y / f).sum();
            for j in 0..C {
                let r = (1.0 / FREQ[j]) / repeat;
                let w = 1.0 / (1.0 + (-10.0 * (r - 0.2)).exp()) + 0.1;
                let (x, y) = (logits[i * C + j], row[j]);
                let p = 1.0 / (1.0 + (-x).exp());
                sum -= w * (y * p.ln() + (1.0 - y) * (1.0 - p).ln());
            }
        }
        let expect = sum / (N * C) as f64;
        println!(
            "dbl(neg_scale 1, init_bias 0) vs weighted BCE by hand: |diff| {:e}",
            (l - expect).abs()
        );
        assert!((l - expect).abs() < 1e-9, "{l} vs {expect}");
    }

    #[test]
    fn gradients_are_finite_even_for_saturated_logits() {
        let losses = [
            Loss::bce(),
            Loss::asymmetric(),
            Loss::asymmetric_with(1.0, 4.0, 0.0),
            Loss::asymmetric_with(0.0, 0.0, 0.0),
            Loss::distribution_balanced(FREQ.to_vec(), TRAIN_NUM),
        ];
        let (mut logits, targets) = batch(5);
        // Saturate some logits both ways, on positives and negatives.
        for (i, x) in logits.iter_mut().enumerate().step_by(3) {
            *x = if i % 2 == 0 { 60.0 } else { -60.0 };
        }
        for loss in &losses {
            for kind in [Kind::Float, Kind::Double] {
                let (l, g) = ours(loss, &logits, &targets, kind);
                assert!(l.is_finite(), "{loss:?} {kind:?}: loss {l}");
                assert!(g.iter().all(|v| v.is_finite()), "{loss:?} {kind:?}: gradient {g:?}");
                assert!(g.iter().any(|v| *v != 0.0), "{loss:?} {kind:?}: zero gradient");
            }
        }
    }

    /// Uncertain labels under each policy (Pham et al.; U-Ignore as Haghpanah's masked
    /// loss), against the loss computed by hand in f64: BCE of each element
    /// −[y·log σ(x) + (1−y)·log(1−σ(x))], averaged over the elements that count.
    #[test]
    fn uncertainty_policies_match_a_hand_computed_loss() {
        let logits = [1.5, -0.5, 0.25, -2.0, 3.0, 0.0];
        // Two images × three labels; positions 1 and 5 are uncertain.
        let certain = [1.0, f64::NAN, 0.0, 0.0, 1.0, f64::NAN];
        let bce = |x: f64, y: f64| {
            let p = 1.0 / (1.0 + (-x).exp());
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        };
        let by_hand = |fill: &dyn Fn(usize) -> Option<f64>| {
            let (mut sum, mut n) = (0.0, 0.0);
            for (i, (&x, &y)) in logits.iter().zip(&certain).enumerate() {
                let y = if y.is_nan() { fill(i) } else { Some(y) };
                if let Some(y) = y {
                    sum += bce(x, y);
                    n += 1.0;
                }
            }
            sum / n
        };
        let ours = |fill: &dyn Fn(usize) -> Option<f64>| {
            let t: Vec<f64> = certain
                .iter()
                .enumerate()
                .map(|(i, &y)| if y.is_nan() { fill(i).unwrap_or(f64::NAN) } else { y })
                .collect();
            let x = Tensor::from_slice(&logits).reshape([2, 3]).set_requires_grad(true);
            let y = Tensor::from_slice(&t).reshape([2, 3]);
            let l = Loss::bce().compute(&x, &y);
            l.backward();
            let g = Vec::<f64>::try_from(&x.grad().reshape([-1])).unwrap();
            (l.double_value(&[]), g)
        };
        // U-Ignore, U-Ones, U-Zeros, and LSR draws (any value in the range is a target).
        type Fill<'a> = &'a dyn Fn(usize) -> Option<f64>;
        let cases: [(&str, Fill); 5] = [
            ("ignore", &|_| None),
            ("ones", &|_| Some(1.0)),
            ("zeros", &|_| Some(0.0)),
            ("ones_lsr", &|i| Some(if i == 1 { 0.61 } else { 0.83 })),
            ("zeros_lsr", &|i| Some(if i == 1 { 0.05 } else { 0.27 })),
        ];
        for (name, fill) in cases {
            let (l, g) = ours(fill);
            let expect = by_hand(fill);
            assert!((l - expect).abs() < 1e-6, "{name}: {l} vs {expect} by hand");
            if name == "ignore" {
                assert_eq!((g[1], g[5]), (0.0, 0.0), "masked labels get no gradient");
                assert!(g.iter().enumerate().all(|(i, v)| i == 1 || i == 5 || *v != 0.0));
                // By hand: 4 elements count, not 6.
                let four: f64 = [(1.5, 1.0), (0.25, 0.0), (-2.0, 0.0), (3.0, 1.0)]
                    .iter()
                    .map(|&(x, y)| bce(x, y))
                    .sum::<f64>()
                    / 4.0;
                assert!((l - four).abs() < 1e-12);
            }
        }
        // ASL and DBL leave a masked element out too: its gradient is zero.
        for loss in [
            Loss::asymmetric(),
            Loss::distribution_balanced(vec![3.0, 2.0, 1.0], 6.0),
        ] {
            let run = |t: [f64; 6]| {
                let x = Tensor::from_slice(&logits).reshape([2, 3]).set_requires_grad(true);
                let l = loss.compute(&x, &Tensor::from_slice(&t).reshape([2, 3]));
                l.backward();
                (
                    l.double_value(&[]),
                    Vec::<f64>::try_from(&x.grad().reshape([-1])).unwrap(),
                )
            };
            let (l, g) = run(certain);
            assert!(l.is_finite() && g.iter().all(|v| v.is_finite()), "{loss:?}");
            assert_eq!((g[1], g[5]), (0.0, 0.0), "{loss:?}");
        }
    }

    #[test]
    fn validate_rejects_bad_params() {
        assert!(Loss::asymmetric_with(-1.0, 4.0, 0.05).validate().is_err());
        assert!(Loss::asymmetric_with(0.0, 4.0, 1.0).validate().is_err());
        assert!(Loss::distribution_balanced(vec![], 10.0).validate().is_err());
        assert!(Loss::distribution_balanced(vec![10.0, 0.0], 10.0).validate().is_err());
        assert!(Loss::distribution_balanced(vec![10.0], 10.0).validate().is_err());
        assert!(Loss::distribution_balanced(FREQ.to_vec(), TRAIN_NUM).validate().is_ok());
        assert!(Loss::asymmetric().validate().is_ok());
    }
}
