//! A label hierarchy (Pham et al., "Interpreting chest X-rays via CNNs that exploit
//! hierarchical disease dependencies and uncertainty labels", after Irvin et al.): a
//! child label is positive only if its parent is (Cardiomegaly under Enlarged
//! Cardiomediastinum; the four Phu Tho regions under `abnormal`).
//!
//! The file is YAML, `child: parent` per line, over the model's label names
//! (`stages/train/*_hierarchy.yaml`). Two uses:
//! - conditional training (`train`, `hierarchy:`): a child's target counts only on the
//!   images whose ancestors are all positive — the network then learns p(child |
//!   parent); the others are left out of the loss (NaN, as U-Ignore);
//! - unconditional inference (`evaluate`, `hierarchy:`): p(label) = Π p(node | parent)
//!   along the path from the root, so a child is never more probable than its parent.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Each label's parent among the same labels.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub labels: Vec<String>,
    parent: Vec<Option<usize>>,
}

impl Hierarchy {
    pub fn load(path: &Path, labels: &[String]) -> anyhow::Result<Hierarchy> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read hierarchy {}", path.display()))?;
        Hierarchy::parse(&text, labels).with_context(|| format!("hierarchy {}", path.display()))
    }

    /// `child: parent` lines of YAML; every name one of `labels`, no cycle.
    pub fn parse(text: &str, labels: &[String]) -> anyhow::Result<Hierarchy> {
        // An empty file is an empty hierarchy.
        let map: std::collections::BTreeMap<String, String> =
            serde_yaml::from_str::<Option<_>>(text)?.unwrap_or_default();
        let index = |name: &str, role: &str| {
            labels.iter().position(|l| l == name).with_context(|| {
                format!(
                    "{role} `{name}` is not one of the model's labels ({})",
                    labels.join(", ")
                )
            })
        };
        let mut parent = vec![None; labels.len()];
        for (child, p) in &map {
            let (c, p) = (index(child, "label")?, index(p, "parent")?);
            parent[c] = Some(p);
        }
        let h = Hierarchy {
            labels: labels.to_vec(),
            parent,
        };
        for c in 0..labels.len() {
            // A path longer than the labels has come back to itself.
            let mut at = c;
            for _ in 0..=labels.len() {
                match h.parent[at] {
                    Some(p) if p == c => bail!("`{}` is its own ancestor", labels[c]),
                    Some(p) => at = p,
                    None => break,
                }
            }
        }
        Ok(h)
    }

    /// Parent, grandparent, … of label `c`.
    pub fn ancestors(&self, c: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = c;
        while let Some(p) = self.parent[at] {
            out.push(p);
            at = p;
        }
        out
    }

    /// Unconditional probabilities from the network's conditional ones (`probs[c][i]`:
    /// label `c`, image `i`): p(c) = p(c | parent) · p(parent), down from the root.
    pub fn unconditional(&self, probs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        (0..probs.len())
            .map(|c| {
                (0..probs[c].len())
                    .map(|i| self.ancestors(c).iter().fold(probs[c][i], |p, &a| p * probs[a][i]))
                    .collect()
            })
            .collect()
    }

    /// Conditional-training targets of one image (in label order): a label with an
    /// ancestor that is not positive (target below 0.5, or left out) is left out too.
    /// Returns how many it left out.
    pub fn condition(&self, targets: &mut [f32]) -> u64 {
        let positive: Vec<bool> = targets.iter().map(|t| *t >= 0.5).collect();
        let mut left_out = 0;
        for (c, t) in targets.iter_mut().enumerate() {
            if !t.is_nan() && self.ancestors(c).iter().any(|&a| !positive[a]) {
                *t = f32::NAN;
                left_out += 1;
            }
        }
        left_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Pham et al.'s example tree A → B → {C, D}: p(C) = p(A)·p(B|A)·p(C|B),
    /// p(D) = p(A)·p(B|A)·p(D|B), computed by hand.
    #[test]
    fn unconditional_probability_is_the_product_along_the_path() {
        let h = Hierarchy::parse("B: A\nC: B\nD: B\n", &labels(&["A", "B", "C", "D", "E"])).unwrap();
        let conditional = vec![
            vec![0.9, 0.2],  // A
            vec![0.8, 0.5],  // B | A
            vec![0.7, 0.99], // C | B
            vec![0.1, 0.3],  // D | B
            vec![0.6, 0.4],  // E, a root
        ];
        let p = h.unconditional(&conditional);
        let by_hand = [
            [0.9, 0.2],
            [0.9 * 0.8, 0.2 * 0.5],
            [0.9 * 0.8 * 0.7, 0.2 * 0.5 * 0.99],
            [0.9 * 0.8 * 0.1, 0.2 * 0.5 * 0.3],
            [0.6, 0.4],
        ];
        for c in 0..5 {
            for i in 0..2 {
                assert!((p[c][i] - by_hand[c][i]).abs() < 1e-6, "label {c} image {i}");
                for &a in &h.ancestors(c) {
                    assert!(p[c][i] <= p[a][i], "a child above its ancestor");
                }
            }
        }
        assert_eq!(h.ancestors(2), [1, 0]);
    }

    #[test]
    fn conditional_targets_leave_out_children_of_negative_parents() {
        let h = Hierarchy::parse("B: A\nC: B\n", &labels(&["A", "B", "C"])).unwrap();
        let mut t = [1.0, 0.0, 1.0];
        assert_eq!(h.condition(&mut t), 1);
        assert_eq!((t[0], t[1]), (1.0, 0.0));
        assert!(t[2].is_nan(), "C's parent B is negative");
        let mut t = [0.0, 1.0, 0.0];
        assert_eq!(h.condition(&mut t), 2, "A negative: B and C left out");
        let mut t = [0.7, 1.0, 0.0]; // a soft (LSR) positive parent counts as positive
        assert_eq!(h.condition(&mut t), 0);
        let mut t = [f32::NAN, 1.0, 1.0]; // an ignored parent is not positive
        assert_eq!(h.condition(&mut t), 2);
    }

    #[test]
    fn unknown_labels_and_cycles_are_refused() {
        let l = labels(&["A", "B", "C"]);
        let e = Hierarchy::parse("B: Z\n", &l).unwrap_err().to_string();
        assert!(
            e.contains("parent `Z` is not one of the model's labels (A, B, C)"),
            "{e}"
        );
        let e = Hierarchy::parse("A: B\nB: C\nC: A\n", &l).unwrap_err().to_string();
        assert!(e.contains("is its own ancestor"), "{e}");
        assert!(Hierarchy::parse("", &l).unwrap().ancestors(0).is_empty());
    }
}
