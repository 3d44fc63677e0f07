//! `map_labels`: one label set onto another through a table of P/N cells, as the Phu
//! Tho paper maps CheXpert's 14 observations to its 5 classes (Table 7,
//! `stages/map_labels/chexpert_to_phutho.yaml`), so a coarse and a fine model can be
//! trained on the same images.
//!
//! A class is positive when any observation with a P in its column is positive,
//! uncertain when none is positive and one is uncertain, negative otherwise. The
//! output has, per class, a bool `<class>` and `<class>_uncertain` — the label stage's
//! convention — so train's `uncertain:` policies apply to mapped labels as to the
//! labeller's. Observations are integer columns (1, 0, −1 uncertain, null blank: as the
//! chexpert import writes them) or bool ones (with `<name>_uncertain` beside them when
//! the labels know it). Done as polars expressions over the input table.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Reference, Stage};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The mapping table: `classes:` (the output labels) and `observations:` (one row
    /// of P/N cells per input label, a cell per class).
    pub mapping: String,
    /// Input columns carried over unchanged, when present (the image key is required).
    #[serde(default = "default_keep")]
    pub keep: Vec<String>,
}

fn default_keep() -> Vec<String> {
    vec!["sop_instance_uid".into(), "patient_id".into()]
}

/// A mapping file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub classes: Vec<String>,
    pub observations: BTreeMap<String, Vec<Cell>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Cell {
    P,
    N,
}

impl Mapping {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Mapping> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let m: Mapping =
            serde_yaml::from_str(&text).with_context(|| format!("{}: not a label mapping", path.display()))?;
        for (obs, cells) in &m.observations {
            if cells.len() != m.classes.len() {
                bail!(
                    "{}: `{obs}` has {} cells for {} classes ({})",
                    path.display(),
                    cells.len(),
                    m.classes.len(),
                    m.classes.join(", ")
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &m.classes {
            if !seen.insert(c) {
                bail!("{}: class `{c}` is listed twice", path.display());
            }
        }
        Ok(m)
    }

    /// The observations with a P in class `k`'s column.
    pub fn sources(&self, k: usize) -> Vec<&str> {
        self.observations
            .iter()
            .filter(|(_, cells)| cells[k] == Cell::P)
            .map(|(o, _)| o.as_str())
            .collect()
    }
}

pub struct MapLabels;

impl Stage for MapLabels {
    type Params = Params;
    const KIND: &'static str = "map_labels";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "map labels onto other classes through a P/N table (CheXpert's 14 → the Phu Tho 5)";

    fn references(p: &Params) -> Vec<Reference> {
        vec![Reference {
            param: "mapping".into(),
            path: p.mapping.clone(),
        }]
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["labels"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["labels".into()]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let mapping = Mapping::load(&ctx.resolve(&p.mapping))?;
        let input = ctx.input("labels")?;
        let frame = crate::frames::read(input)?;
        let schema = frame.schema().clone();
        let mut columns: Vec<Expr> = Vec::new();
        for k in &p.keep {
            if schema.contains(k) {
                columns.push(col(k.as_str()));
            } else if k == "sop_instance_uid" {
                bail!("{}: no column `sop_instance_uid` (the image key)", input.display());
            }
        }
        let missing: Vec<&str> = mapping
            .observations
            .keys()
            .filter(|o| !schema.contains(o))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: the mapping {} names observations the labels do not have: {}",
                input.display(),
                p.mapping,
                missing.join(", ")
            );
        }
        // Per observation: is it positive, is it uncertain (null cells are neither).
        let observation = |o: &str| -> anyhow::Result<(Expr, Expr)> {
            match schema.get(o) {
                Some(DataType::Boolean) => {
                    let uncertain = format!("{o}_uncertain");
                    let unc = if schema.get(&uncertain) == Some(&DataType::Boolean) {
                        col(uncertain.as_str()).fill_null(lit(false))
                    } else {
                        lit(false)
                    };
                    Ok((col(o).fill_null(lit(false)), unc))
                }
                Some(t) if t.is_integer() || t.is_float() => Ok((
                    col(o).cast(DataType::Int64).eq(lit(1i64)).fill_null(lit(false)),
                    col(o).cast(DataType::Int64).eq(lit(-1i64)).fill_null(lit(false)),
                )),
                Some(t) => bail!(
                    "{}: column `{o}` is {t}, not a label (bool or integer)",
                    input.display()
                ),
                None => unreachable!("checked above"),
            }
        };
        for (k, class) in mapping.classes.iter().enumerate() {
            let sources = mapping.sources(k);
            let (pos, unc): (Vec<Expr>, Vec<Expr>) = sources
                .iter()
                .map(|o| observation(o))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .unzip();
            let any = |e: Vec<Expr>| -> anyhow::Result<Expr> {
                if e.is_empty() {
                    Ok(lit(false))
                } else {
                    any_horizontal(e).map_err(|e| anyhow!("{e}"))
                }
            };
            let positive = any(pos)?;
            let uncertain = positive.clone().not().and(any(unc)?);
            columns.push(positive.alias(class.as_str()));
            columns.push(uncertain.alias(format!("{class}_uncertain").as_str()));
        }
        let mut out = frame
            .lazy()
            .select(columns)
            .collect()
            .map_err(|e| anyhow!("mapping {}: {e}", input.display()))?;
        for class in &mapping.classes {
            let positives = out
                .column(class)
                .map_err(|e| anyhow!("{e}"))?
                .as_materialized_series()
                .sum::<i64>()
                .unwrap_or(0);
            ctx.count(&format!("{class}_positive"), positives as u64);
        }
        crate::frames::write(ctx, "labels", &mut out, None)?;
        Ok(())
    }
}
