//! Classification metrics of the `evaluate` stage, per class and macro-averaged, with
//! bootstrap confidence intervals.
//!
//! Paper, "Experimental setup": F1, AUC, sensitivity and specificity per class and as the
//! macro average of the classes, each with a 95% CI from a non-parametric bootstrap
//! (Efron & Tibshirani): 3,000 replicates, the 2.5 and 97.5 percentiles. Every function
//! here matches scikit-learn / numpy on the same arrays (the tests run them side by
//! side): `roc_auc_score`, `roc_curve(drop_intermediate=False)`, the `*_score` functions
//! with `zero_division=0`, and `numpy.percentile`'s default (linear) method.
//!
//! Counts are integers throughout and AUC is the Mann–Whitney statistic computed in
//! integers, so a value depends only on the data, never on summation order: the same
//! arrays give bit-identical metrics on every machine and thread count.
//!
//! Scores must be finite (they are probabilities); NaN is ordered by `f64::total_cmp`
//! rather than rejected, so it gives a deterministic but meaningless result.

use rayon::prelude::*;
use serde::Serialize;

use pipe_core::rng::Rng;

/// Stream of [`Rng::for_item`] for bootstrap resamples ("boot"), so that a seed shared
/// with other uses of the generator does not give correlated draws.
const BOOTSTRAP_STREAM: u64 = 0x626f_6f74;

/// Lower and upper percentiles of the 95% interval.
const CI_PERCENTILES: (f64, f64) = (2.5, 97.5);

/// Ranks of `scores` grouped into runs of equal score: `(order, ends)` where `order`
/// lists sample indices by score (decreasing when `descending`) and `ends[g]` is the
/// exclusive end in `order` of tie group `g`. Every metric here walks these groups, which
/// is what makes ties count as halves (AUC) or all-or-nothing (thresholds) as sklearn does.
fn tie_groups(scores: &[f64], descending: bool) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    if descending {
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    } else {
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    }
    let mut ends = Vec::new();
    for k in 1..order.len() {
        // total_cmp, not ==, so that the grouping agrees with the sort (0.0 vs -0.0).
        if scores[order[k]].total_cmp(&scores[order[k - 1]]).is_ne() {
            ends.push(k);
        }
    }
    if !order.is_empty() {
        ends.push(order.len());
    }
    (order, ends)
}

/// Area under the ROC curve, as the Mann–Whitney U statistic over (positives × negatives):
/// the rank sum of the positives with average ranks for ties, so a tied (positive,
/// negative) pair counts ½ — exactly the trapezoidal area of sklearn's `roc_auc_score`.
/// O(n log n). `None` when only one class is present (AUC undefined; sklearn raises).
///
/// Ranks are kept doubled so that every quantity is an integer and only the final
/// division rounds.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "roc_auc: scores and labels differ in length"
    );
    let (order, ends) = tie_groups(scores, false);
    let positives = labels.iter().filter(|&&l| l).count() as u128;
    let negatives = labels.len() as u128 - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Group [start, end) (0-based) holds 1-based ranks start+1..=end, whose average
    // doubled is start + end + 1.
    let mut rank_sum2: u128 = 0;
    let mut start = 0;
    for &end in &ends {
        let pos = order[start..end].iter().filter(|&&i| labels[i]).count() as u128;
        rank_sum2 += pos * (start + end + 1) as u128;
        start = end;
    }
    // U = R₊ − P(P+1)/2, doubled.
    let u2 = rank_sum2 - positives * (positives + 1);
    Some(u2 as f64 / (2 * positives * negatives) as f64)
}

/// ROC curve points `(false positive rate, true positive rate, threshold)` as sklearn's
/// `roc_curve(drop_intermediate=False)`: one point per distinct score, thresholds
/// decreasing, a sample being positive when its score is >= the threshold, preceded by
/// `(0, 0, +inf)`. Like sklearn, a rate whose denominator is zero (no negatives, or no
/// positives) is NaN on every point.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64)> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "roc_curve: scores and labels differ in length"
    );
    let (order, ends) = tie_groups(scores, true);
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    // 0/0 is NaN in IEEE arithmetic, which is sklearn's value too.
    let rate = |count: u64, total: f64| count as f64 / total;
    let mut points = vec![(rate(0, negatives), rate(0, positives), f64::INFINITY)];
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut start = 0;
    for &end in &ends {
        for &i in &order[start..end] {
            if labels[i] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        points.push((rate(fp, negatives), rate(tp, positives), scores[order[start]]));
        start = end;
    }
    points
}

/// Confusion counts of a binary decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

/// `num / den`, 0 when `den` is 0: sklearn's `zero_division=0`, so that a class never
/// predicted (or never present) scores 0 rather than poisoning the macro mean with NaN.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl Confusion {
    /// Counts of `scores` thresholded at `threshold` (positive when score >= threshold,
    /// sklearn's convention for `roc_curve`) against `labels`.
    pub fn from(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
        assert_eq!(
            scores.len(),
            labels.len(),
            "Confusion: scores and labels differ in length"
        );
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Sensitivity = recall = TP / (TP + FN).
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Specificity = TN / (TN + FP), the recall of the negative class.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }

    /// Precision = TP / (TP + FP).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// F1 = 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, written in
    /// counts as sklearn does so that it is 0 (not NaN) when both are 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// Accuracy = (TP + TN) / all.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn_)
    }
}

/// The threshold, among the distinct scores, that maximises F1 (decision: score >=
/// threshold); among equal F1 the highest threshold, i.e. the fewest positive calls.
/// This is how a threshold is chosen on the validation part. F1s are compared as exact
/// fractions, so ties are real ties. Empty input gives 0.5, the default threshold.
pub fn best_f1_threshold(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        labels.len(),
        "best_f1_threshold: scores and labels differ in length"
    );
    let (order, ends) = tie_groups(scores, true);
    let positives = labels.iter().filter(|&&l| l).count() as u128;
    // Thresholds decrease, so a later group wins only when strictly better.
    let mut best: Option<(u128, u128, f64)> = None;
    let (mut tp, mut fp) = (0u128, 0u128);
    let mut start = 0;
    for &end in &ends {
        for &i in &order[start..end] {
            if labels[i] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        // F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P); the denominator is >= 1
        // because at least this group is called positive.
        let (num, den) = (2 * tp, tp + fp + positives);
        if best.is_none_or(|(bn, bd, _)| num * bd > bn * den) {
            best = Some((num, den, scores[order[start]]));
        }
        start = end;
    }
    best.map_or(0.5, |(_, _, t)| t)
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending) by linear interpolation,
/// numpy's default `percentile` method, step for step (including its two-sided lerp) so
/// that the bounds match numpy bit for bit. NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let virtual_index = (n - 1) as f64 * (p / 100.0);
    let below = virtual_index.floor().clamp(0.0, (n - 1) as f64);
    let (lo, hi) = (below as usize, (below as usize + 1).min(n - 1));
    let t = virtual_index - below;
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// Precision–recall curve points `(recall, precision, threshold)`, one per distinct
/// score with thresholds decreasing (a sample positive when its score is >= the
/// threshold): sklearn's `precision_recall_curve` read backwards, without its closing
/// `(recall 0, precision 1)` point. Empty when there are no positives (recall undefined).
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64)> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "pr_curve: scores and labels differ in length"
    );
    let positives = labels.iter().filter(|&&l| l).count() as u64;
    if positives == 0 {
        return Vec::new();
    }
    let (order, ends) = tie_groups(scores, true);
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut start = 0;
    let mut points = Vec::with_capacity(ends.len());
    for &end in &ends {
        for &i in &order[start..end] {
            if labels[i] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        points.push((
            tp as f64 / positives as f64,
            tp as f64 / (tp + fp) as f64,
            scores[order[start]],
        ));
        start = end;
    }
    points
}

/// Average precision, sklearn's `average_precision_score`: Σ (Rₖ − Rₖ₋₁) Pₖ over the
/// thresholds of [`pr_curve`] (the step-wise area, not the optimistic trapezoid). For a
/// rare class it says more than AUC: a chest_wall at 5% has AP ≈ 0.05 by chance.
/// `None` without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let curve = pr_curve(scores, labels);
    if curve.is_empty() {
        return None;
    }
    let mut previous = 0.0;
    let mut ap = 0.0;
    for &(recall, precision, _) in &curve {
        ap += (recall - previous) * precision;
        previous = recall;
    }
    Some(ap)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// The bin's probability range (lower, upper].
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean predicted probability of its samples (NaN when empty).
    pub mean_probability: f64,
    /// Share of positives among its samples (NaN when empty).
    pub positive_rate: f64,
}

/// Reliability diagram over `bins` equal-width bins of [0, 1], binned as sklearn's
/// `calibration_curve(strategy="uniform")` does (edges `i · (1/bins)` as numpy's
/// linspace makes them; a probability on an inner edge belongs to the lower bin), with
/// the expected calibration error: Σ (countᵦ / n) · |positive rateᵦ − mean probabilityᵦ|
/// (Guo et al. 2017). The ECE is NaN when there are no samples.
pub fn calibration(scores: &[f64], labels: &[bool], bins: usize) -> (Vec<CalibrationBin>, f64) {
    assert_eq!(
        scores.len(),
        labels.len(),
        "calibration: scores and labels differ in length"
    );
    assert!(bins > 0, "calibration: no bins");
    let step = 1.0 / bins as f64;
    let edge = |i: usize| if i == bins { 1.0 } else { i as f64 * step };
    let (mut count, mut sum, mut positives) = (vec![0u64; bins], vec![0.0f64; bins], vec![0u64; bins]);
    for (&s, &l) in scores.iter().zip(labels) {
        // numpy.searchsorted(inner edges, s, side="left"): the inner edges below s.
        let b = (1..bins).take_while(|&i| edge(i) < s).count();
        count[b] += 1;
        sum[b] += s;
        positives[b] += u64::from(l);
    }
    let n = scores.len() as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|b| {
            let (mean, rate) = (sum[b] / count[b] as f64, positives[b] as f64 / count[b] as f64);
            if count[b] > 0 {
                ece += count[b] as f64 / n * (rate - mean).abs();
            }
            CalibrationBin {
                lower: edge(b),
                upper: edge(b + 1),
                count: count[b],
                mean_probability: mean,
                positive_rate: rate,
            }
        })
        .collect();
    (out, if scores.is_empty() { f64::NAN } else { ece })
}

/// A point estimate with its bootstrap 95% interval. `low` and `high` are NaN when no
/// replicate could be computed (no replicates asked, no samples, or — for AUC — no
/// replicate with both classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metric {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Metrics of one class, or of the macro average (label `"macro"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub label: String,
    /// Decision threshold (positive when score >= it); `None` for the macro entry, whose
    /// classes each have their own.
    pub threshold: Option<f64>,
    /// `None` when the class has a single label value in the data (for the macro entry:
    /// when any class has).
    pub auc: Option<Metric>,
    /// Replicates that had both label values (for the macro entry: in every class) and
    /// so entered the AUC interval.
    pub auc_replicates: usize,
    pub f1: Metric,
    pub sensitivity: Metric,
    pub specificity: Metric,
    pub precision: Metric,
    pub accuracy: Metric,
    /// Samples evaluated.
    pub support: usize,
    /// Positive samples (for the macro entry: summed over the classes).
    pub positives: usize,
}

/// The statistics of one entry on one (re)sample.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Values {
    auc: Option<f64>,
    /// f1, sensitivity, specificity, precision, accuracy.
    rest: [f64; 5],
}

impl Values {
    fn of(confusion: &Confusion, auc: Option<f64>) -> Values {
        let c = confusion;
        Values {
            auc,
            rest: [c.f1(), c.sensitivity(), c.specificity(), c.precision(), c.accuracy()],
        }
    }

    /// The macro average: the plain mean over classes of each statistic (sklearn's
    /// `average="macro"`); AUC only when every class has one, as sklearn's macro
    /// `roc_auc_score` raises otherwise.
    fn mean(classes: &[Values]) -> Values {
        let k = classes.len() as f64;
        let auc = classes.iter().map(|v| v.auc).sum::<Option<f64>>().map(|s| s / k);
        let mut rest = [0.0; 5];
        for (m, r) in rest.iter_mut().enumerate() {
            *r = classes.iter().map(|v| v.rest[m]).sum::<f64>() / k;
        }
        Values { auc, rest }
    }
}

/// One class prepared for resampling: samples sorted by decreasing score in tie groups,
/// and which are called positive at the class threshold. A resample is then a vector of
/// multiplicities (how often each sample was drawn), and its AUC and confusion come from
/// one O(n) walk, with no sort per replicate.
struct Prepared<'a> {
    labels: &'a [bool],
    order: Vec<usize>,
    ends: Vec<usize>,
    /// Whether the sample at each sorted position is called positive (score >= threshold);
    /// a prefix for finite scores, kept per position so that it always agrees with
    /// [`Confusion::from`].
    called: Vec<bool>,
}

impl<'a> Prepared<'a> {
    fn new(scores: &[f64], labels: &'a [bool], threshold: f64) -> Prepared<'a> {
        let (order, ends) = tie_groups(scores, true);
        let called = order.iter().map(|&i| scores[i] >= threshold).collect();
        Prepared {
            labels,
            order,
            ends,
            called,
        }
    }

    /// Statistics of the sample in which sample `i` appears `weights[i]` times. AUC is
    /// the same Mann–Whitney count as [`roc_auc`], walked from the top: each negative of
    /// a tie group is outranked by every positive above the group (1 each) and tied with
    /// the group's own positives (½ each) — kept doubled, in integers.
    fn values(&self, weights: &[u32]) -> Values {
        let mut c = Confusion::default();
        let (mut pos_above, mut u2) = (0u128, 0u128);
        let mut start = 0;
        for &end in &self.ends {
            let (mut pos, mut neg) = (0u64, 0u64);
            for k in start..end {
                let i = self.order[k];
                let w = weights[i] as u64;
                match (self.called[k], self.labels[i]) {
                    (true, true) => c.tp += w,
                    (true, false) => c.fp += w,
                    (false, false) => c.tn += w,
                    (false, true) => c.fn_ += w,
                }
                if self.labels[i] {
                    pos += w;
                } else {
                    neg += w;
                }
            }
            u2 += neg as u128 * (2 * pos_above + pos as u128);
            pos_above += pos as u128;
            start = end;
        }
        let positives = (c.tp + c.fn_) as u128;
        let negatives = (c.tn + c.fp) as u128;
        let auc = (positives > 0 && negatives > 0).then(|| u2 as f64 / (2 * positives * negatives) as f64);
        Values::of(&c, auc)
    }
}

/// Multiplicities of bootstrap replicate `replicate`: `weights.len()` draws with
/// replacement. Its generator depends only on (seed, replicate), never on which thread
/// runs it or what ran before, so the intervals are the same for any thread count.
fn resample(seed: u64, replicate: usize, weights: &mut [u32]) {
    weights.fill(0);
    let n = weights.len() as u128;
    let mut rng = Rng::for_item(seed, BOOTSTRAP_STREAM, replicate as u64);
    for _ in 0..weights.len() {
        // Multiply-shift maps 64 random bits onto 0..n (bias below n / 2⁶⁴).
        let i = ((rng.next_u64() as u128 * n) >> 64) as usize;
        weights[i] += 1;
    }
}

/// Metrics of every class and their macro average (last entry, label `"macro"`), each with
/// a 95% bootstrap interval.
///
/// `scores[c][i]` and `labels[c][i]` are class `c`'s score and truth for sample `i`;
/// `thresholds[c]` its decision threshold (0.5, or [`best_f1_threshold`] on validation).
///
/// Bootstrap: `replicates` resamples of the samples (rows) with replacement, the same
/// resample for every class of a replicate (so the macro value of a replicate is the mean
/// of its classes, and the interval of the macro reflects their correlation); thresholds
/// stay fixed. Each replicate's draws come from `(seed, replicate index)`, so the result
/// is identical for any `threads` (0: rayon's default). Intervals are the 2.5 and 97.5
/// percentiles of the replicate values (numpy's linear method); replicates in which a
/// class has a single label value have no AUC and are left out of that AUC's interval.
pub fn evaluate(
    names: &[String],
    scores: &[Vec<f64>],
    labels: &[Vec<bool>],
    thresholds: &[f64],
    replicates: usize,
    seed: u64,
    threads: usize,
) -> Vec<ClassMetrics> {
    let k = names.len();
    assert!(
        scores.len() == k && labels.len() == k && thresholds.len() == k,
        "evaluate: {k} names but {} score, {} label and {} threshold vectors",
        scores.len(),
        labels.len(),
        thresholds.len()
    );
    if k == 0 {
        return Vec::new();
    }
    let n = labels[0].len();
    for c in 0..k {
        assert!(
            scores[c].len() == n && labels[c].len() == n,
            "evaluate: class {} has {} scores and {} labels, expected {n}",
            names[c],
            scores[c].len(),
            labels[c].len()
        );
    }

    // Point estimates, by the public functions the tests hold against sklearn.
    let mut points: Vec<Values> = (0..k)
        .map(|c| {
            let confusion = Confusion::from(&scores[c], &labels[c], thresholds[c]);
            Values::of(&confusion, roc_auc(&scores[c], &labels[c]))
        })
        .collect();
    points.push(Values::mean(&points));

    let prepared: Vec<Prepared> = (0..k)
        .map(|c| Prepared::new(&scores[c], &labels[c], thresholds[c]))
        .collect();
    let replicate = |weights: &mut Vec<u32>, r: usize| -> Vec<Values> {
        resample(seed, r, weights);
        let mut v: Vec<Values> = prepared.iter().map(|p| p.values(weights)).collect();
        v.push(Values::mean(&v));
        v
    };
    let run = || -> Vec<Vec<Values>> {
        if n == 0 {
            return Vec::new();
        }
        (0..replicates)
            .into_par_iter()
            .map_init(|| vec![0u32; n], replicate)
            .collect()
    };
    // A private pool so that `threads` is honoured whatever the global pool is; should
    // one not start, the global pool gives the same numbers (they do not depend on it).
    let boot = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };

    let interval = |mut values: Vec<f64>, value: f64| -> Metric {
        values.sort_by(f64::total_cmp);
        Metric {
            value,
            low: percentile(&values, CI_PERCENTILES.0),
            high: percentile(&values, CI_PERCENTILES.1),
        }
    };
    points
        .iter()
        .enumerate()
        .map(|(e, point)| {
            let aucs: Vec<f64> = boot.iter().filter_map(|r| r[e].auc).collect();
            let auc_replicates = aucs.len();
            let rest: Vec<Metric> = (0..5)
                .map(|m| interval(boot.iter().map(|r| r[e].rest[m]).collect(), point.rest[m]))
                .collect();
            let is_macro = e == k;
            ClassMetrics {
                label: if is_macro {
                    "macro".to_string()
                } else {
                    names[e].clone()
                },
                threshold: (!is_macro).then(|| thresholds[e]),
                auc: point.auc.map(|a| interval(aucs, a)),
                auc_replicates,
                f1: rest[0],
                sensitivity: rest[1],
                specificity: rest[2],
                precision: rest[3],
                accuracy: rest[4],
                support: n,
                positives: if is_macro {
                    labels.iter().map(|l| l.iter().filter(|&&b| b).count()).sum()
                } else {
                    labels[e].iter().filter(|&&b| b).count()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use serde_json::{Value, json};

    use super::*;

    /// Computes on the Python side what the tests compare with: scikit-learn's metrics and
    /// numpy's percentile, for a list of cases given as JSON on stdin.
    const REFERENCE: &str = r#"
import json, math, struct, sys, warnings
import numpy as np
from sklearn import metrics as m
warnings.filterwarnings("ignore")

# Floats travel as their IEEE bits (serde_json's default parser may be 1 ulp off), and
# non-finite ones as null since JSON has no NaN or inf.
def num(x):
    x = float(x)
    return struct.unpack("<Q", struct.pack("<d", x))[0] if math.isfinite(x) else None

def binary(c):
    y = np.array(c["labels"], dtype=int)
    s = np.array(c["scores"], dtype=float)
    fpr, tpr, thr = m.roc_curve(y, s, drop_intermediate=False)
    best = None
    for t in sorted(set(s.tolist()), reverse=True):
        f = m.f1_score(y, (s >= t).astype(int), zero_division=0)
        if best is None or f > best[0]:
            best = (f, t)
    at = []
    for t in c["thresholds"]:
        p = (s >= t).astype(int)
        at.append({
            "f1": num(m.f1_score(y, p, zero_division=0)),
            "sensitivity": num(m.recall_score(y, p, zero_division=0)),
            "specificity": num(m.recall_score(y, p, pos_label=0, zero_division=0)),
            "precision": num(m.precision_score(y, p, zero_division=0)),
            "accuracy": num(m.accuracy_score(y, p)),
        })
    out = {}
    if y.sum() > 0:
        prec, rec, pthr = m.precision_recall_curve(y, s)
        out["ap"] = num(m.average_precision_score(y, s))
        out["pr"] = [[num(r), num(p), num(t)] for r, p, t in zip(rec[:-1], prec[:-1], pthr)]
    if len(s):
        from sklearn.calibration import calibration_curve
        frac, mean = calibration_curve(y, s, n_bins=10, strategy="uniform")
        out["calibration"] = [[num(a), num(b)] for a, b in zip(frac, mean)]
        # ECE by hand with numpy: sklearn has none.
        ids = np.searchsorted(np.linspace(0.0, 1.0, 11)[1:-1], s)
        ece = 0.0
        for b in range(10):
            sel = ids == b
            if sel.any():
                ece += sel.sum() / len(s) * abs(y[sel].mean() - s[sel].mean())
        out["ece"] = num(ece)
    return out | {
        "auc": num(m.roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else None,
        "roc": [[num(a), num(b), num(t)] for a, b, t in zip(fpr, tpr, thr)],
        "best_f1_threshold": num(best[1]),
        "at": at,
    }

def macro(c):
    y = np.array(c["labels"], dtype=int).T
    s = np.array(c["scores"], dtype=float).T
    p = (s >= np.array(c["thresholds"])).astype(int)
    k = y.shape[1]
    try:
        auc = m.roc_auc_score(y, s, average="macro")
    except ValueError:
        auc = None
    return {
        "auc": None if auc is None else num(auc),
        "f1": num(m.f1_score(y, p, average="macro", zero_division=0)),
        "sensitivity": num(m.recall_score(y, p, average="macro", zero_division=0)),
        "precision": num(m.precision_score(y, p, average="macro", zero_division=0)),
        "specificity": num(float(np.mean([m.recall_score(y[:, j], p[:, j], pos_label=0, zero_division=0) for j in range(k)]))),
        "accuracy": num(float(np.mean([m.accuracy_score(y[:, j], p[:, j]) for j in range(k)]))),
    }

def percentile(c):
    return [num(np.percentile(np.array(c["values"], dtype=float), q)) for q in c["ps"]]

ops = {"binary": binary, "macro": macro, "percentile": percentile}
json.dump([ops[c["op"]](c) for c in json.load(sys.stdin)], sys.stdout)
"#;

    /// Runs [`REFERENCE`] on `cases` with the test Python (the venv's, first on PATH under
    /// `make test`; `PIPE_TEST_PYTHON` overrides).
    fn reference(cases: Value) -> Vec<Value> {
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
            "{python} (needs numpy and scikit-learn) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Per metric: largest |ours − reference|, comparisons, and how many were bit-identical,
    /// for the report; asserts each difference ≤ 1e-9.
    #[derive(Default)]
    struct Diffs(Vec<(String, f64, usize, usize)>);

    impl Diffs {
        fn check(&mut self, what: &str, ours: f64, theirs: &Value) {
            let bits = theirs
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: reference gave {theirs}"));
            let theirs = f64::from_bits(bits);
            let d = (ours - theirs).abs();
            assert!(d <= 1e-9, "{what}: ours {ours} vs reference {theirs}");
            let metric = what.split(' ').next().unwrap().to_string();
            let i = match self.0.iter().position(|e| e.0 == metric) {
                Some(i) => i,
                None => {
                    self.0.push((metric, 0.0, 0, 0));
                    self.0.len() - 1
                }
            };
            let e = &mut self.0[i];
            e.1 = e.1.max(d);
            e.2 += 1;
            e.3 += usize::from(ours.to_bits() == bits);
        }

        fn report(&self, test: &str) {
            for (metric, max, n, exact) in &self.0 {
                println!("{test}: {metric}: max |diff| {max:e}, {exact}/{n} bit-identical");
            }
        }
    }

    /// Scores rounded to 2 decimals (so ties are common) that lean higher for positives.
    fn dataset(n: usize, seed: u64, prevalence: f64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = Rng::for_item(seed, 1, n as u64);
        let labels: Vec<bool> = (0..n).map(|_| rng.chance(prevalence)).collect();
        let scores = labels
            .iter()
            .map(|&l| (((if l { 0.3 } else { 0.0 }) + 0.7 * rng.f64()) * 100.0).round() / 100.0)
            .collect();
        (scores, labels)
    }

    fn binary_cases() -> Vec<(String, Vec<f64>, Vec<bool>)> {
        let mut cases = Vec::new();
        for (n, seed) in [(7, 1), (7, 2), (100, 3), (1000, 4)] {
            let (s, mut l) = dataset(n, seed, 0.4);
            // Both classes present even for n = 7.
            l[0] = true;
            l[1] = false;
            cases.push((format!("random n={n} seed={seed}"), s, l));
        }
        let (s, l) = dataset(1000, 5, 0.05);
        cases.push(("rare positives n=1000".into(), s, l));
        let l: Vec<bool> = (0..50).map(|i| i % 3 == 0).collect();
        cases.push(("all ties".into(), vec![0.3; 50], l));
        let s: Vec<f64> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    0.6 + i as f64 / 200.0
                } else {
                    0.1 + i as f64 / 200.0
                }
            })
            .collect();
        let l: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        cases.push(("perfectly separable".into(), s, l));
        let (s, _) = dataset(30, 6, 0.5);
        cases.push(("only positives".into(), s.clone(), vec![true; 30]));
        cases.push(("only negatives".into(), s, vec![false; 30]));
        cases
    }

    #[test]
    fn binary_metrics_match_sklearn() {
        let cases = binary_cases();
        let thresholds: Vec<Vec<f64>> = cases
            .iter()
            .map(|(_, s, l)| vec![0.5, 0.3, 0.0, 1.5, best_f1_threshold(s, l)])
            .collect();
        let request: Vec<Value> = cases
            .iter()
            .zip(&thresholds)
            .map(|((_, s, l), t)| json!({"op": "binary", "scores": s, "labels": l, "thresholds": t}))
            .collect();
        let answers = reference(Value::Array(request));
        let mut diffs = Diffs::default();
        for (((name, s, l), ts), r) in cases.iter().zip(&thresholds).zip(&answers) {
            match roc_auc(s, l) {
                Some(auc) => diffs.check(&format!("auc ({name})"), auc, &r["auc"]),
                None => assert!(r["auc"].is_null(), "{name}: no AUC, sklearn has {}", r["auc"]),
            }
            let curve = roc_curve(s, l);
            let theirs = r["roc"].as_array().unwrap();
            assert_eq!(curve.len(), theirs.len(), "{name}: ROC points");
            assert_eq!(curve[0].2, f64::INFINITY, "{name}: first threshold");
            for (k, (&(fpr, tpr, t), p)) in curve.iter().zip(theirs).enumerate() {
                for (what, ours, theirs) in [("fpr", fpr, &p[0]), ("tpr", tpr, &p[1]), ("threshold", t, &p[2])] {
                    if ours.is_finite() {
                        diffs.check(&format!("roc_{what} ({name}, point {k})"), ours, theirs);
                    } else {
                        // JSON has no NaN or inf: the reference sends null for both.
                        assert!(theirs.is_null(), "{name}: roc {what}[{k}] = {ours}, sklearn {theirs}");
                    }
                }
            }
            // Precision–recall: sklearn's points run by increasing threshold.
            match r.get("ap") {
                Some(ap) => {
                    diffs.check(
                        &format!("average_precision ({name})"),
                        average_precision(s, l).unwrap(),
                        ap,
                    );
                    let curve = pr_curve(s, l);
                    let theirs = r["pr"].as_array().unwrap();
                    assert_eq!(curve.len(), theirs.len(), "{name}: PR points");
                    for (k, (&(recall, precision, t), p)) in curve.iter().zip(theirs.iter().rev()).enumerate() {
                        diffs.check(&format!("pr_recall ({name}, point {k})"), recall, &p[0]);
                        diffs.check(&format!("pr_precision ({name}, point {k})"), precision, &p[1]);
                        diffs.check(&format!("pr_threshold ({name}, point {k})"), t, &p[2]);
                    }
                }
                None => assert!(average_precision(s, l).is_none() && pr_curve(s, l).is_empty(), "{name}"),
            }
            // Reliability: sklearn lists the non-empty bins only.
            let (bins, ece) = calibration(s, l, 10);
            assert_eq!(bins.iter().map(|b| b.count).sum::<u64>() as usize, s.len());
            let full: Vec<&CalibrationBin> = bins.iter().filter(|b| b.count > 0).collect();
            let theirs = r["calibration"].as_array().unwrap();
            assert_eq!(full.len(), theirs.len(), "{name}: calibration bins");
            for (k, (b, t)) in full.iter().zip(theirs).enumerate() {
                diffs.check(&format!("calibration_rate ({name}, bin {k})"), b.positive_rate, &t[0]);
                diffs.check(
                    &format!("calibration_mean ({name}, bin {k})"),
                    b.mean_probability,
                    &t[1],
                );
            }
            diffs.check(&format!("ece ({name})"), ece, &r["ece"]);
            diffs.check(
                &format!("best_f1_threshold ({name})"),
                best_f1_threshold(s, l),
                &r["best_f1_threshold"],
            );
            for (&t, at) in ts.iter().zip(r["at"].as_array().unwrap()) {
                let c = Confusion::from(s, l, t);
                assert_eq!((c.tp + c.fp + c.tn + c.fn_) as usize, s.len());
                let what = |m: &str| format!("{m} ({name}, threshold {t})");
                diffs.check(&what("f1"), c.f1(), &at["f1"]);
                diffs.check(&what("sensitivity"), c.sensitivity(), &at["sensitivity"]);
                diffs.check(&what("specificity"), c.specificity(), &at["specificity"]);
                diffs.check(&what("precision"), c.precision(), &at["precision"]);
                diffs.check(&what("accuracy"), c.accuracy(), &at["accuracy"]);
            }
        }
        diffs.report("binary_metrics_match_sklearn");
    }

    #[test]
    fn special_cases() {
        assert_eq!(
            roc_auc(
                &[0.3; 10],
                &[true, false, true, false, true, false, true, false, true, false]
            ),
            Some(0.5)
        );
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.9, 0.8], &[true, true]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(
            roc_curve(&[0.3, 0.3], &[true, false]),
            vec![(0.0, 0.0, f64::INFINITY), (1.0, 1.0, 0.3)]
        );
        assert_eq!(best_f1_threshold(&[], &[]), 0.5);
        // F1 is 0 at every threshold without positives: the highest threshold wins.
        assert_eq!(best_f1_threshold(&[0.2, 0.7, 0.4], &[false, false, false]), 0.7);
        // Exact tie 2/3 at 0.8 (TP 1, FN 1) and at 0.4 (TP 2, FP 2): the higher one.
        assert_eq!(
            best_f1_threshold(&[0.8, 0.6, 0.5, 0.4], &[true, false, false, true]),
            0.8
        );
        let c = Confusion::from(&[0.1, 0.2], &[false, false], 0.5);
        assert_eq!(
            (c.f1(), c.precision(), c.sensitivity(), c.specificity(), c.accuracy()),
            (0.0, 0.0, 0.0, 1.0, 1.0)
        );
    }

    #[test]
    fn percentile_matches_numpy() {
        let mut rng = Rng::for_item(11, 2, 0);
        let ps = [0.0, 2.5, 25.0, 50.0, 97.5, 100.0, 33.3];
        let vectors: Vec<Vec<f64>> = [1, 2, 3, 7, 40, 100, 3000]
            .iter()
            .map(|&n| {
                let mut v: Vec<f64> = (0..n)
                    .map(|_| rng.normal() * 10.0f64.powi(rng.range(-3, 3) as i32))
                    .collect();
                v.sort_by(f64::total_cmp);
                v
            })
            .collect();
        let request = vectors
            .iter()
            .map(|v| json!({"op": "percentile", "values": v, "ps": ps}))
            .collect();
        let answers = reference(Value::Array(request));
        let mut diffs = Diffs::default();
        for (v, r) in vectors.iter().zip(&answers) {
            for (&p, theirs) in ps.iter().zip(r.as_array().unwrap()) {
                let ours = percentile(v, p);
                diffs.check(&format!("percentile (n={}, p={p})", v.len()), ours, theirs);
            }
        }
        diffs.report("percentile_matches_numpy");
        assert!(percentile(&[], 50.0).is_nan());
    }

    fn multiclass(n: usize, k: usize, seed: u64) -> (Vec<String>, Vec<Vec<f64>>, Vec<Vec<bool>>) {
        let prevalence = [0.4, 0.15, 0.3, 0.05, 0.5, 0.25];
        let (scores, labels) = (0..k)
            .map(|c| dataset(n, seed * 10 + c as u64, prevalence[c % 6]))
            .unzip();
        ((0..k).map(|c| format!("class{c}")).collect(), scores, labels)
    }

    #[test]
    fn evaluate_points_match_sklearn() {
        let (names, scores, labels) = multiclass(300, 4, 21);
        let thresholds: Vec<f64> = vec![0.5, best_f1_threshold(&scores[1], &labels[1]), 0.35, 0.5];
        let result = evaluate(&names, &scores, &labels, &thresholds, 200, 1, 2);
        assert_eq!(result.len(), 5);
        let mut request: Vec<Value> = (0..4)
            .map(|c| json!({"op": "binary", "scores": scores[c], "labels": labels[c], "thresholds": [thresholds[c]]}))
            .collect();
        request.push(json!({"op": "macro", "scores": scores, "labels": labels, "thresholds": thresholds}));
        let answers = reference(Value::Array(request));
        let mut diffs = Diffs::default();
        for (m, r) in result.iter().zip(&answers) {
            let (theirs, auc) = if m.label == "macro" {
                (r, &r["auc"])
            } else {
                (&r["at"][0], &r["auc"])
            };
            let name = &m.label;
            diffs.check(&format!("auc ({name})"), m.auc.unwrap().value, auc);
            diffs.check(&format!("f1 ({name})"), m.f1.value, &theirs["f1"]);
            diffs.check(
                &format!("sensitivity ({name})"),
                m.sensitivity.value,
                &theirs["sensitivity"],
            );
            diffs.check(
                &format!("specificity ({name})"),
                m.specificity.value,
                &theirs["specificity"],
            );
            diffs.check(&format!("precision ({name})"), m.precision.value, &theirs["precision"]);
            diffs.check(&format!("accuracy ({name})"), m.accuracy.value, &theirs["accuracy"]);
        }
        diffs.report("evaluate_points_match_sklearn");
        let last = &result[4];
        assert_eq!(
            (last.label.as_str(), last.threshold, last.support),
            ("macro", None, 300)
        );
        assert_eq!(last.positives, labels.iter().flatten().filter(|&&b| b).count());
        assert_eq!(result[1].threshold, Some(thresholds[1]));
        assert_eq!(result[3].positives, labels[3].iter().filter(|&&b| b).count());
    }

    /// The O(n) weighted walk a replicate uses gives exactly what the public functions
    /// give on the resample written out.
    #[test]
    fn replicate_values_equal_direct_computation() {
        let (_, scores, labels) = multiclass(150, 3, 5);
        let thresholds = [0.5, 0.42, 0.61];
        let mut weights = vec![0u32; 150];
        for c in 0..3 {
            let prepared = Prepared::new(&scores[c], &labels[c], thresholds[c]);
            let ones = vec![1u32; 150];
            let direct = Values::of(
                &Confusion::from(&scores[c], &labels[c], thresholds[c]),
                roc_auc(&scores[c], &labels[c]),
            );
            assert_eq!(prepared.values(&ones), direct);
            for r in 0..20 {
                resample(9, r, &mut weights);
                assert_eq!(weights.iter().sum::<u32>(), 150);
                let (mut s, mut l) = (Vec::new(), Vec::new());
                for (i, &w) in weights.iter().enumerate() {
                    for _ in 0..w {
                        s.push(scores[c][i]);
                        l.push(labels[c][i]);
                    }
                }
                let direct = Values::of(&Confusion::from(&s, &l, thresholds[c]), roc_auc(&s, &l));
                assert_eq!(prepared.values(&weights), direct, "class {c}, replicate {r}");
            }
        }
    }

    #[test]
    fn bootstrap_is_deterministic_across_threads() {
        let (names, scores, labels) = multiclass(400, 3, 8);
        let thresholds = [0.5; 3];
        let one = evaluate(&names, &scores, &labels, &thresholds, 500, 42, 1);
        let two = evaluate(&names, &scores, &labels, &thresholds, 500, 42, 2);
        // Debug text compares NaN too, and every bit that prints.
        assert_eq!(format!("{one:?}"), format!("{two:?}"));
        assert_eq!(one, two);
        let other = evaluate(&names, &scores, &labels, &thresholds, 500, 43, 2);
        assert_ne!(one, other, "another seed gives other intervals");
        assert!(one.iter().all(|m| m.auc_replicates == 500));
    }

    #[test]
    fn interval_contains_the_point_estimate() {
        let (names, scores, labels) = multiclass(500, 5, 13);
        let result = evaluate(&names, &scores, &labels, &[0.5; 5], 3000, 7, 2);
        for m in &result {
            let all = [
                m.auc.unwrap(),
                m.f1,
                m.sensitivity,
                m.specificity,
                m.precision,
                m.accuracy,
            ];
            for (what, x) in ["auc", "f1", "sensitivity", "specificity", "precision", "accuracy"]
                .iter()
                .zip(all)
            {
                assert!(
                    x.low < x.high && x.low <= x.value && x.value <= x.high,
                    "{} {what}: {x:?}",
                    m.label
                );
                // A 95% interval on 500 samples is a few hundredths wide, not the whole range.
                assert!(x.high - x.low < 0.4, "{} {what}: {x:?}", m.label);
            }
        }
        let macro_ = result.last().unwrap();
        let mean_f1 = result[..5].iter().map(|m| m.f1.value).sum::<f64>() / 5.0;
        assert_eq!(macro_.f1.value, mean_f1);
        // Averaging five classes narrows the interval relative to the average class.
        let width = |m: &Metric| m.high - m.low;
        let mean_width = result[..5].iter().map(|m| width(&m.f1)).sum::<f64>() / 5.0;
        assert!(width(&macro_.f1) < mean_width);
    }

    #[test]
    fn single_class_replicates_leave_auc_out() {
        // One positive in six: a resample misses it with probability (5/6)^6 ≈ 0.33.
        let names = vec!["rare".to_string(), "absent".to_string()];
        let scores = vec![vec![0.9, 0.1, 0.2, 0.3, 0.4, 0.45], vec![0.9, 0.1, 0.2, 0.3, 0.4, 0.45]];
        let labels = vec![vec![true, false, false, false, false, false], vec![false; 6]];
        let result = evaluate(&names, &scores, &labels, &[0.5, 0.5], 1000, 3, 2);
        let mut weights = vec![0u32; 6];
        let expected = (0..1000)
            .filter(|&r| {
                resample(3, r, &mut weights);
                weights[0] > 0 && weights[0] < 6
            })
            .count();
        assert!(expected > 500 && expected < 800, "{expected}");
        assert_eq!(result[0].auc_replicates, expected);
        assert_eq!(result[0].auc.unwrap().value, 1.0);
        assert_eq!((result[1].auc, result[1].auc_replicates), (None, 0));
        // The macro AUC needs every class's.
        assert_eq!((result[2].auc, result[2].auc_replicates), (None, 0));
        assert_eq!(
            result[1].f1,
            Metric {
                value: 0.0,
                low: 0.0,
                high: 0.0
            }
        );
        // No bootstrap: point estimates with NaN bounds.
        let none = evaluate(&names, &scores, &labels, &[0.5, 0.5], 0, 3, 1);
        assert!(none[0].f1.low.is_nan() && none[0].auc.unwrap().high.is_nan());
        assert_eq!(none[0].f1.value, 1.0);
    }

    #[test]
    fn bootstrap_is_fast() {
        let (names, scores, labels) = multiclass(2000, 5, 17);
        let start = Instant::now();
        let result = evaluate(&names, &scores, &labels, &[0.5; 5], 3000, 1, 2);
        let elapsed = start.elapsed();
        println!("bootstrap_is_fast: 3000 replicates x 2000 samples x 5 classes in {elapsed:.2?} (2 threads)");
        assert_eq!(result.len(), 6);
        assert!(elapsed.as_secs_f64() < 10.0, "bootstrap took {elapsed:?}");
    }
}
