//! `qc`: the paper's quality control — "a random sample of 5% of the labelled images
//! was reviewed by radiologists; errors were corrected and the process repeated until
//! no error was found".
//!
//! Each round draws a seeded `fraction` of the labelled, converted images that no
//! earlier round drew (the order is a keyed hash of (seed, round, sop_instance_uid), so
//! a round's sample does not depend on table order). The stage writes the sample as a
//! table, a contact sheet `qc.html` (thumbnail, description, the five labels and what
//! decided each) and `qc.csv`, the sheet to fill in: `ok`, or `wrong` with the right
//! labels (and the right report when the match was wrong). `pipe review FILE qc --apply
//! qc.csv` merges the verdicts into the `verdicts` file this stage reads and turns the
//! wrong ones into overrides and resolutions; the verdicts file is part of the key, so
//! the next run labels again and draws the next round. A round with every image judged
//! `ok` passes QC: the stage then shows that round and says so (`rounds.state`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::Context as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::csv::{self, Table};
use crate::evaluate::report::escape;
use crate::label::LABELS;
use crate::review::{VERDICT_COLUMNS, page, thumbnail};
use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{TableBuilder, read_batch, str_col};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Share of the labelled images each round draws (the paper: 5%); at least one.
    #[serde(default = "d_fraction")]
    pub fraction: f64,
    /// Seeds every round's draw.
    #[serde(default)]
    pub seed: u64,
    /// The radiologists' verdicts so far (`pipe review FILE qc --apply` writes it).
    #[serde(default = "d_verdicts")]
    pub verdicts: String,
}

fn d_fraction() -> f64 {
    0.05
}
fn d_verdicts() -> String {
    "stages/qc/verdicts.csv".into()
}

pub struct Qc;

/// A round's standing, from its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundState {
    /// Not every image of the sample has a verdict yet.
    Open,
    /// Some verdict is `wrong`: the next round is drawn once the fixes are in.
    Errors,
    /// Every image judged `ok`.
    Passed,
}

impl RoundState {
    fn name(self) -> &'static str {
        match self {
            RoundState::Open => "open",
            RoundState::Errors => "errors",
            RoundState::Passed => "passed",
        }
    }
}

/// The images of round `round`: `fraction` of `eligible` (at least one), leaving out
/// `taken` (earlier rounds), ordered by a keyed hash of (seed, round, uid).
pub fn draw(eligible: &[&str], taken: &HashSet<String>, fraction: f64, seed: u64, round: u64) -> Vec<String> {
    let n = ((fraction * eligible.len() as f64).ceil() as usize)
        .max(1)
        .min(eligible.len());
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&round.to_le_bytes());
    key[16..].copy_from_slice(b"pipe qc round \0\0");
    let mut ranked: Vec<(blake3::Hash, &str)> = eligible
        .iter()
        .filter(|s| !taken.contains(**s))
        .map(|s| (blake3::keyed_hash(&key, s.as_bytes()), *s))
        .collect();
    ranked.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    ranked.into_iter().take(n).map(|(_, s)| s.to_string()).collect()
}

/// Verdicts by round: round → (sop → wrong?).
fn read_verdicts(path: &std::path::Path) -> anyhow::Result<std::collections::BTreeMap<u64, HashMap<String, bool>>> {
    let mut out = std::collections::BTreeMap::<u64, HashMap<String, bool>>::new();
    let t = Table::read(path)?;
    let (round, sop, verdict) = (t.column("round")?, t.column("sop_instance_uid")?, t.column("verdict")?);
    for (line, r) in &t.rows {
        let n: u64 = csv::get(r, round)
            .parse()
            .with_context(|| format!("{}:{line}: round must be a number", path.display()))?;
        let wrong = match csv::get(r, verdict).to_lowercase().as_str() {
            "ok" | "right" | "correct" => false,
            "wrong" | "error" => true,
            "" => continue,
            other => anyhow::bail!("{}:{line}: verdict must be ok or wrong, got {other:?}", path.display()),
        };
        out.entry(n).or_default().insert(csv::get(r, sop).to_string(), wrong);
    }
    Ok(out)
}

impl Stage for Qc {
    type Params = Params;
    const KIND: &'static str = "qc";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "quality control: a seeded sample of the labelled images per round as a contact sheet and a verdict sheet, until a round finds no error";

    fn check(p: &Params) -> Vec<String> {
        let mut e = Vec::new();
        if !(p.fraction > 0.0 && p.fraction <= 1.0) {
            e.push(format!("fraction: must be in (0, 1], got {}", p.fraction));
        }
        e
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["labels", "pairs", "images"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["sample".into(), "rounds".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![Reference {
            param: "verdicts".into(),
            path: p.verdicts.clone(),
        }]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let labels = read_batch(ctx.input("labels")?)?;
        let pairs = read_batch(ctx.input("pairs")?)?;
        let images_path = ctx.input("images")?;
        let images = read_batch(images_path)?;
        let image_dir = images_path.parent().unwrap_or(std::path::Path::new("."));

        let (i_sop, i_image) = (str_col(&images, "sop_instance_uid")?, str_col(&images, "image")?);
        let image_of: HashMap<&str, &str> = (0..images.num_rows())
            .map(|i| (i_sop.value(i), i_image.value(i)))
            .collect();
        let (p_sop, p_desc) = (str_col(&pairs, "sop_instance_uid")?, str_col(&pairs, "description")?);
        let description_of: HashMap<&str, &str> = (0..pairs.num_rows())
            .map(|i| (p_sop.value(i), p_desc.value(i)))
            .collect();
        let (l_sop, l_report, l_hash) = (
            str_col(&labels, "sop_instance_uid")?,
            str_col(&labels, "report_id")?,
            str_col(&labels, "description_hash")?,
        );
        let row_of: HashMap<&str, usize> = (0..labels.num_rows()).map(|i| (l_sop.value(i), i)).collect();
        let mut eligible: Vec<&str> = (0..labels.num_rows())
            .map(|i| l_sop.value(i))
            .filter(|s| image_of.contains_key(s))
            .collect();
        eligible.sort_unstable();
        eligible.dedup();
        anyhow::ensure!(
            !eligible.is_empty(),
            "no labelled image has a converted image: nothing to sample"
        );

        // Which round: the first, the next after a round with errors, or the last one
        // while it is open or once it passed.
        let verdicts = read_verdicts(&ctx.resolve(&p.verdicts))?;
        let mut taken = HashSet::new();
        let mut samples: Vec<(u64, Vec<String>)> = Vec::new();
        let mut round = 1;
        loop {
            let sample = draw(&eligible, &taken, p.fraction, p.seed, round);
            let judged = verdicts.get(&round);
            let state = state_of(&sample, judged);
            taken.extend(sample.iter().cloned());
            samples.push((round, sample));
            // Stop at the first round that is not finished with errors, or when there is
            // nothing left to draw.
            if state != RoundState::Errors || taken.len() >= eligible.len() {
                break;
            }
            round += 1;
        }
        let unknown: usize = verdicts
            .iter()
            .filter(|(r, _)| **r <= round)
            .flat_map(|(r, v)| v.keys().map(move |s| (*r, s)))
            .filter(|(r, s)| !samples[(*r - 1) as usize].1.contains(s))
            .count();
        if unknown > 0 {
            ctx.log(format!(
                "{unknown} verdict(s) name images their round did not draw (another seed or fraction?): ignored"
            ));
        }
        ctx.count("verdicts_unused", unknown as u64);

        // rounds
        let schema = crate::schema!("qc/rounds");
        let mut b = TableBuilder::new(&schema);
        for (r, sample) in &samples {
            let judged = verdicts.get(r);
            let count = |wrong: bool| {
                sample
                    .iter()
                    .filter(|s| judged.and_then(|j| j.get(*s)) == Some(&wrong))
                    .count() as i64
            };
            b.i64("round", Some(*r as i64))
                .i64("sampled", Some(sample.len() as i64))
                .i64("ok", Some(count(false)))
                .i64("wrong", Some(count(true)))
                .str("state", Some(state_of(sample, judged).name()));
        }
        let mut w = ctx.writer("rounds", &schema)?;
        w.write(&b.finish()?)?;
        w.finish()?;

        // sample of the current round
        let (current, sample) = samples.last().cloned().context("no round")?;
        let judged = verdicts.get(&current);
        let state = state_of(&sample, judged);
        let flags: Vec<_> = LABELS
            .iter()
            .map(|l| pipe_core::table::bool_col(&labels, l))
            .collect::<anyhow::Result<_>>()?;
        let by: Vec<_> = LABELS
            .iter()
            .map(|l| str_col(&labels, &format!("{l}_by")))
            .collect::<anyhow::Result<_>>()?;
        let schema = crate::schema!("qc/sample");
        let mut b = TableBuilder::new(&schema);
        let mut sheet = csv::line(&VERDICT_COLUMNS);
        let mut cards = String::new();
        std::fs::create_dir_all(ctx.out_dir.join("thumbs"))?;
        ctx.progress.set_total(sample.len() as u64);
        for (k, s) in sample.iter().enumerate() {
            let i = row_of[s.as_str()];
            let image = image_dir.join(image_of[s.as_str()]);
            // Relative to the cache, as evaluate's predictions: same key, same bytes.
            let image_rel = image
                .strip_prefix(&ctx.cache_dir)
                .unwrap_or(&image)
                .to_string_lossy()
                .into_owned();
            let description = description_of.get(s.as_str()).copied().unwrap_or("");
            let verdict = judged.and_then(|j| j.get(s)).map(|&w| if w { "wrong" } else { "ok" });
            b.i64("round", Some(current as i64))
                .str("sop_instance_uid", Some(s))
                .str("report_id", Some(l_report.value(i)))
                .str("description_hash", Some(l_hash.value(i)))
                .str("description", Some(description))
                .str("image", Some(&image_rel))
                .str("verdict", verdict);
            for (l, (f, by)) in LABELS.iter().zip(flags.iter().zip(&by)) {
                b.bool(l, Some(f.value(i))).str(&format!("{l}_by"), Some(by.value(i)));
            }
            let mut record = vec![current.to_string(), s.clone(), verdict.unwrap_or("").to_string()];
            record.extend(flags.iter().map(|f| u8::from(f.value(i)).to_string()));
            record.extend([
                l_report.value(i).to_string(),
                l_hash.value(i).to_string(),
                String::new(),
            ]);
            sheet.push_str(&csv::line(&record));

            let thumb = format!("thumbs/{k:04}.png");
            let made = thumbnail(&image, &ctx.out_dir.join(&thumb));
            let rows: String = LABELS
                .iter()
                .zip(flags.iter().zip(&by))
                .map(|(l, (f, by))| {
                    format!(
                        "<tr><td>{l}</td><td>{}</td><td class=\"meta\">{}</td></tr>",
                        u8::from(f.value(i)),
                        escape(by.value(i))
                    )
                })
                .collect();
            let _ = writeln!(
                cards,
                "<div class=\"item\" id=\"{}\">{}<div><div class=\"meta\">{} · report {} · description {}{}</div>\
                 <p>{}</p><table class=\"labels\"><tbody>{rows}</tbody></table></div></div>",
                escape(s),
                match &made {
                    Ok(()) => format!("<img src=\"{thumb}\" alt=\"\">"),
                    Err(e) => format!("<div class=\"noimg\">no thumbnail: {}</div>", escape(&format!("{e:#}"))),
                },
                escape(s),
                escape(l_report.value(i)),
                escape(l_hash.value(i)),
                match verdict {
                    Some("wrong") => " · <span class=\"wrong\">judged wrong</span>".to_string(),
                    Some(v) => format!(" · judged {v}"),
                    None => String::new(),
                },
                escape(description)
            );
            ctx.progress.inc(1);
        }
        let mut w = ctx.writer("sample", &schema)?;
        w.write(&b.finish()?)?;
        w.finish()?;
        std::fs::write(ctx.out_dir.join("qc.csv"), sheet)?;
        let how = match state {
            RoundState::Passed => format!(
                "Round {current} found no error in {} images: quality control passed.",
                sample.len()
            ),
            _ => format!(
                "Round {current}: {} of {} labelled images ({}%, seed {}). In qc.csv write ok or wrong in \
                 `verdict` for each; for a wrong one correct the five labels (and report_id if the report is \
                 not this image's), then run `pipe review FILE qc --apply qc.csv` and `pipe run`: the fixes \
                 become overrides and the next round is drawn, until a round finds no error.",
                sample.len(),
                eligible.len(),
                p.fraction * 100.0,
                p.seed
            ),
        };
        std::fs::write(
            ctx.out_dir.join("qc.html"),
            page(&format!("Quality control, round {current}"), &how, &cards),
        )?;
        ctx.count("qc_round", current);
        ctx.count("qc_sampled", sample.len() as u64);
        ctx.count(
            "qc_wrong",
            judged.map_or(0, |j| j.values().filter(|w| **w).count()) as u64,
        );
        ctx.log(format!("round {current}: {} ({} images)", state.name(), sample.len()));
        Ok(())
    }
}

fn state_of(sample: &[String], judged: Option<&HashMap<String, bool>>) -> RoundState {
    let Some(j) = judged else { return RoundState::Open };
    if sample.iter().any(|s| j.get(s) == Some(&true)) {
        RoundState::Errors
    } else if sample.iter().all(|s| j.contains_key(s)) {
        RoundState::Passed
    } else {
        RoundState::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_five_percent_seeded_and_never_twice() {
        let uids: Vec<String> = (0..1000).map(|i| format!("1.2.{i}")).collect();
        let eligible: Vec<&str> = uids.iter().map(String::as_str).collect();
        let none = HashSet::new();
        let a = draw(&eligible, &none, 0.05, 7, 1);
        assert_eq!(a.len(), 50);
        assert_eq!(a, draw(&eligible, &none, 0.05, 7, 1), "same seed, same sample");
        // Independent of the order of the table.
        let mut reversed = eligible.clone();
        reversed.reverse();
        assert_eq!(a, draw(&reversed, &none, 0.05, 7, 1));
        assert_ne!(a, draw(&eligible, &none, 0.05, 8, 1));
        let taken: HashSet<String> = a.iter().cloned().collect();
        let b = draw(&eligible, &taken, 0.05, 7, 2);
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|s| !taken.contains(s)));
        // At least one image, at most what is left.
        assert_eq!(draw(&eligible[..3], &none, 0.05, 0, 1).len(), 1);
    }

    #[test]
    fn round_states() {
        let sample = vec!["a".to_string(), "b".to_string()];
        let j = |v: &[(&str, bool)]| v.iter().map(|(s, w)| (s.to_string(), *w)).collect::<HashMap<_, _>>();
        assert_eq!(state_of(&sample, None), RoundState::Open);
        assert_eq!(state_of(&sample, Some(&j(&[("a", false)]))), RoundState::Open);
        assert_eq!(state_of(&sample, Some(&j(&[("a", true)]))), RoundState::Errors);
        assert_eq!(
            state_of(&sample, Some(&j(&[("a", false), ("b", false)]))),
            RoundState::Passed
        );
    }
}
