//! Adam whose state can be saved (compiled only into `pipe-torch`).
//!
//! tch's `nn::Adam` keeps its moments inside LibTorch's C++ optimiser, out of reach, so
//! a resumed run restarted them from zero: the weights after a kill and resume depended
//! on where the kill fell. This is the same algorithm as `torch.optim.Adam` (Kingma & Ba,
//! with PyTorch's bias correction and `eps` outside the square root, no weight decay),
//! written on tensors, with the first and second moments and the step count of every
//! trainable variable saved beside the checkpoint and loaded on resume.

use std::path::Path;

use anyhow::{Context as _, bail};
use tch::{Kind, Tensor, nn};

pub struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    lr: f64,
    /// Trainable variables by name (sorted): the weights, and their state.
    vars: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates each variable has had (a variable without a gradient is not updated).
    steps: Vec<i64>,
}

impl Adam {
    /// Over the variables of `vs` that require a gradient (frozen ones are left alone).
    pub fn new(vs: &nn::VarStore, beta1: f64, beta2: f64, eps: f64, lr: f64) -> Adam {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |vars: &[(String, Tensor)]| -> Vec<Tensor> {
            vars.iter().map(|(_, t)| t.zeros_like().to_kind(Kind::Float)).collect()
        };
        Adam {
            beta1,
            beta2,
            eps,
            lr,
            m: zeros(&vars),
            v: zeros(&vars),
            steps: vec![0; vars.len()],
            vars,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.vars {
            t.zero_grad();
        }
    }

    /// The gradients of the trainable variables that have one.
    pub fn grads(&self) -> Vec<Tensor> {
        self.vars
            .iter()
            .map(|(_, t)| t.grad())
            .filter(|g| g.defined())
            .collect()
    }

    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// One update from the current gradients.
    pub fn step(&mut self) {
        let (b1, b2) = (self.beta1, self.beta2);
        tch::no_grad(|| {
            for (i, (_, w)) in self.vars.iter_mut().enumerate() {
                let g = w.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                self.steps[i] += 1;
                let t = self.steps[i] as i32;
                let _ = self.m[i].g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = self.v[i].g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                let denom = self.v[i].sqrt() / bc2.sqrt() + self.eps;
                let update = (&self.m[i] / denom) * (self.lr / bc1);
                let _ = w.g_sub_(&update.to_kind(w.kind()));
            }
        });
    }

    /// Save the moments and step counts (safetensors, written through a temporary).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(3 * self.vars.len());
        for (i, (name, _)) in self.vars.iter().enumerate() {
            named.push((format!("m.{name}"), self.m[i].to_device(tch::Device::Cpu)));
            named.push((format!("v.{name}"), self.v[i].to_device(tch::Device::Cpu)));
            named.push((format!("step.{name}"), Tensor::from(self.steps[i])));
        }
        let tmp = path.with_extension("tmp.safetensors");
        Tensor::write_safetensors(&named, &tmp).with_context(|| format!("cannot save {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Load what [`save`](Self::save) wrote for the same variables.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into_iter()
            .collect();
        if saved.len() != 3 * self.vars.len() {
            bail!(
                "{} holds the state of {} variables, the model has {} trainable ones",
                path.display(),
                saved.len() / 3,
                self.vars.len()
            );
        }
        for (i, (name, w)) in self.vars.iter().enumerate() {
            let get = |what: &str| {
                saved
                    .get(&format!("{what}.{name}"))
                    .with_context(|| format!("{} has no `{what}.{name}`", path.display()))
            };
            let (m, v) = (get("m")?, get("v")?);
            if m.size() != w.size() || v.size() != w.size() {
                bail!(
                    "{}: the moments of `{name}` have another shape than the variable",
                    path.display()
                );
            }
            self.m[i] = m.to_device(w.device()).to_kind(Kind::Float);
            self.v[i] = v.to_device(w.device()).to_kind(Kind::Float);
            self.steps[i] = get("step")?.int64_value(&[]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small layer and a fixed batch.
    /// Deterministic values, not LibTorch's global generator: tests run in parallel
    /// threads, and another test's draws between `manual_seed` and `randn` made two
    /// set-ups differ (a flaky "differs after resuming").
    fn values(n: usize, k: f32) -> Tensor {
        Tensor::from_slice(&(0..n).map(|i| (i as f32 * 0.37 + k).sin()).collect::<Vec<f32>>())
    }

    fn setup() -> (nn::VarStore, nn::Linear, Tensor, Tensor) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let lin = nn::linear(vs.root() / "lin", 6, 3, Default::default());
        tch::no_grad(|| {
            lin.ws.shallow_clone().copy_(&values(18, 1.0).view([3, 6]));
            if let Some(bs) = &lin.bs {
                bs.shallow_clone().copy_(&values(3, 2.0));
            }
        });
        let xs = values(48, 3.0).view([8, 6]);
        let ys = values(24, 4.0).view([8, 3]);
        (vs, lin, xs, ys)
    }

    fn loss(lin: &nn::Linear, xs: &Tensor, ys: &Tensor) -> Tensor {
        use tch::nn::Module;
        (lin.forward(xs) - ys).square().mean(Kind::Float)
    }

    fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn same_updates_as_libtorch_adam() {
        use tch::nn::OptimizerConfig;
        let (vs, lin, xs, ys) = setup();
        let (vs2, lin2, _, _) = setup();
        let mut ours = Adam::new(&vs, 0.9, 0.999, 1e-8, 1e-2);
        let mut theirs = nn::Adam::default().build(&vs2, 1e-2).unwrap();
        for _ in 0..20 {
            ours.backward_step(&loss(&lin, &xs, &ys));
            theirs.backward_step(&loss(&lin2, &xs, &ys));
        }
        for ((n, a), (_, b)) in weights(&vs).iter().zip(weights(&vs2)) {
            let diff = (a - &b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{n}: {diff}");
        }
    }

    #[test]
    fn resuming_from_saved_state_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, lin, xs, ys) = setup();
        let mut straight = Adam::new(&vs, 0.9, 0.999, 1e-8, 1e-2);
        for _ in 0..6 {
            straight.backward_step(&loss(&lin, &xs, &ys));
        }
        // Three steps, save weights and state, a new process's optimiser, three more.
        let (vs2, lin2, _, _) = setup();
        let mut first = Adam::new(&vs2, 0.9, 0.999, 1e-8, 1e-2);
        for _ in 0..3 {
            first.backward_step(&loss(&lin2, &xs, &ys));
        }
        first.save(&dir.path().join("optimizer.safetensors")).unwrap();
        let mut resumed = Adam::new(&vs2, 0.9, 0.999, 1e-8, 1e-2);
        resumed.load(&dir.path().join("optimizer.safetensors")).unwrap();
        for _ in 0..3 {
            resumed.backward_step(&loss(&lin2, &xs, &ys));
        }
        for ((n, a), (_, b)) in weights(&vs).iter().zip(weights(&vs2)) {
            assert!(a.equal(&b), "{n} differs after resuming");
        }
        // Without the state (what resuming used to do) the weights differ.
        let (vs3, lin3, _, _) = setup();
        let mut lost = Adam::new(&vs3, 0.9, 0.999, 1e-8, 1e-2);
        for _ in 0..3 {
            lost.backward_step(&loss(&lin3, &xs, &ys));
        }
        let mut fresh = Adam::new(&vs3, 0.9, 0.999, 1e-8, 1e-2);
        for _ in 0..3 {
            fresh.backward_step(&loss(&lin3, &xs, &ys));
        }
        assert!(
            weights(&vs)
                .iter()
                .zip(weights(&vs3))
                .any(|((_, a), (_, b))| !a.equal(&b))
        );
    }
}
