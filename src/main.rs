//! `pipe`: the command line. Glue only: the engine's commands come from `pipe-core`,
//! the kinds from `pipe-cxr` (plus the engine's built-in ones), the synthetic hospital
//! from `pipe-synth`; this file adds the commands that belong to the chest X-ray domain.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipe_core::Registry;

mod init;

#[derive(Parser)]
#[command(
    name = "pipe",
    version,
    about = "Content-hashed pipelines from a hospital imaging archive to a trained chest X-ray classifier"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Engine(pipe_core::cli::Cmd),
    /// Score a label stage against hand labels: precision, recall, F1 per class (Table 3).
    /// With --descriptions, label a CSV of hand-labelled descriptions directly, without
    /// a pipeline: coverage, scores and every disagreement.
    LabelEval {
        /// The pipeline file (default: the only one in pipelines/, or pipe.yaml).
        file: Option<PathBuf>,
        /// Hand labels: Parquet or CSV with report_id and the five label columns.
        #[arg(long, required_unless_present = "descriptions")]
        truth: Option<PathBuf>,
        /// The label stage of the pipeline.
        #[arg(long, default_value = "label")]
        stage: String,
        /// CSV `id,description,chest_wall,pleura,parenchyma,cardiac,abnormal` (1/0/u),
        /// labelled with the label kind's default resources under --root.
        #[arg(long, conflicts_with = "truth")]
        descriptions: Option<PathBuf>,
        /// Project root the resources (stages/label/…) are found under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// What an uncertain label counts as, in the truth and in the labeller's output.
        #[arg(long, value_enum, default_value = "positive")]
        uncertain: UncertainArg,
        /// Also write the disagreements as an HTML page (the review queues' layout).
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Every evaluate stage's metrics in one table, with 95% intervals (each variant of
    /// a `matrix:` sweep a line), or `pipe metrics diff A B`: two results metric by
    /// metric. A and B are pipeline files (their evaluate stages of the same name are
    /// compared) or metrics.parquet files.
    Metrics {
        /// [FILE], or `diff A B`.
        #[arg(num_args = 0..=3, value_names = ["FILE"])]
        args: Vec<PathBuf>,
        /// The label to show (`macro`, or a class such as `cardiac`).
        #[arg(long, default_value = "macro")]
        label: String,
    },
    /// A review queue as a CSV to fill in beside an HTML page to read it by — `match`
    /// (images with several candidate reports), `label` (descriptions the labeller
    /// cannot read), `qc` (the qc stage's current round) — or, with --apply, a filled
    /// CSV put back where the stages read answers (resolutions, overrides, QC verdicts).
    Review {
        /// [FILE] QUEUE: the pipeline file may be left out.
        #[arg(required = true, num_args = 1..=2, value_names = ["FILE", "QUEUE"])]
        args: Vec<String>,
        /// Where the files go (default: review/<pipeline>/ under the pipeline root).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A filled CSV of this queue to apply.
        #[arg(long)]
        apply: Option<PathBuf>,
        /// The stage whose queue (default: the pipeline's only stage of that kind).
        #[arg(long)]
        stage: Option<String>,
    },
    /// Write a deterministic synthetic dataset with its ground truth in OUT/truth: a
    /// hospital (PACS DICOM, HIS XML), or a CheXpert-like or VinDr-like public dataset.
    Synth {
        #[arg(value_enum, default_value = "hospital")]
        dataset: Dataset,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        studies: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
    /// Start a project in DIR: a pipeline extending the paper's settings, the editable
    /// resources (keywords, templates), a .gitignore for the cache.
    Init {
        dir: PathBuf,
        /// The PACS export (a folder of DICOM files), as the pipeline should name it.
        #[arg(long, default_value = "data/pacs")]
        pacs: String,
        /// The HIS export (a folder of XML session files).
        #[arg(long, default_value = "data/his")]
        his: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dataset {
    /// PACS DICOM files and HIS XML reports (the demo's input).
    Hospital,
    /// CheXpert-v1.0-small/train.csv and its JPEG images.
    Chexpert,
    /// VinDr-CXR-style DICOM files and reader annotations (3 readers; test: consensus).
    Vindr,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UncertainArg {
    Positive,
    Negative,
}

/// The metrics of every evaluate stage of a pipeline file (by stage name), or of one
/// metrics.parquet file (by its path); a stage without a current result says why.
fn metrics_of(path: &std::path::Path, kinds: &Registry) -> anyhow::Result<pipe_cxr::evaluate::compare::Named> {
    use pipe_cxr::evaluate::compare::read_metrics;
    if path.extension().is_some_and(|e| e == "parquet") {
        return Ok(vec![(path.display().to_string(), Ok(read_metrics(path)?))]);
    }
    let p = pipe_core::cli::load(path, kinds)?;
    let stages: Vec<String> = p
        .stages
        .iter()
        .filter(|s| s.kind.name() == pipe_cxr::evaluate::KIND)
        .map(|s| format!("{}.metrics", s.name))
        .collect();
    anyhow::ensure!(!stages.is_empty(), "{} has no evaluate stage", path.display());
    let targets: Vec<&str> = stages.iter().map(String::as_str).collect();
    Ok(stages
        .iter()
        .zip(pipe_core::cli::table_paths(&p, &targets))
        .map(|(t, path)| {
            let name = t.trim_end_matches(".metrics").to_string();
            let m = path
                .map_err(|e| e.to_string())
                .and_then(|f| read_metrics(&f).map_err(|e| e.to_string()));
            (name, m)
        })
        .collect())
}

/// Every kind a pipeline may use: the chest X-ray ones and the engine's built-ins.
fn registry() -> Registry {
    Registry::new(pipe_cxr::KINDS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pipe_core::cli::exit_code(dispatch(cli.command))
}

fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    let kinds = registry();
    // The engine's commands take stdout as they need it: a stage job (`pipe job`)
    // writes progress events from several threads.
    let cmd = match cmd {
        Cmd::Engine(cmd) => return pipe_core::cli::dispatch(cmd, &kinds),
        other => other,
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Engine(_) => unreachable!("dispatched above"),
        Cmd::LabelEval {
            descriptions: Some(csv),
            root,
            uncertain,
            html,
            ..
        } => {
            use pipe_cxr::label::{Labeller, Params, Uncertain};
            let uncertain = match uncertain {
                UncertainArg::Positive => Uncertain::Positive,
                UncertainArg::Negative => Uncertain::Negative,
            };
            let params: Params = serde_json::from_str("{}")?;
            let labeller = Labeller::load(&params, &|f: &str| root.join(f))?;
            let rows = pipe_cxr::label::read_labelled_descriptions(&csv)?;
            let r = pipe_cxr::label::score_descriptions(&labeller, &rows, uncertain);
            writeln!(
                out,
                "{} descriptions in {}: {} decided ({:.1}%), {} to review",
                r.total,
                csv.display(),
                r.decided,
                100.0 * r.decided as f64 / r.total.max(1) as f64,
                r.reviews.len()
            )?;
            write_scores(&mut out, &r.scores)?;
            for d in &r.disagreements {
                writeln!(out, "disagree {d}")?;
            }
            for d in &r.reviews {
                writeln!(out, "review   {d}")?;
            }
            if let Some(page) = html {
                let title = format!("label-eval: {}", csv.display());
                std::fs::write(
                    &page,
                    pipe_cxr::review::disagreements_page(&title, &r.disagreements, &r.reviews),
                )
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", page.display()))?;
                writeln!(out, "page: {}", page.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Review {
            mut args,
            out: dir,
            apply,
            stage,
        } => {
            let queue = args.pop().expect("clap requires the queue");
            let file = pipe_core::cli::pipeline_file(args.pop().map(PathBuf::from))?;
            let p = pipe_core::cli::load(&file, &kinds)?;
            let text = pipe_cxr::review::run(&p, &queue, dir.as_deref(), apply.as_deref(), stage.as_deref())?;
            write!(out, "{text}")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Metrics { args, label } => {
            use pipe_cxr::evaluate::compare;
            if args.first().is_some_and(|a| a.as_os_str() == "diff") {
                anyhow::ensure!(
                    args.len() == 3,
                    "usage: pipe metrics diff A B (pipeline files or metrics.parquet files)"
                );
                let (a, b) = (metrics_of(&args[1], &kinds)?, metrics_of(&args[2], &kinds)?);
                let mut any = false;
                for (name, ma) in &a {
                    // Two single results are compared whatever their names.
                    let mb = b.iter().find(|(n, _)| n == name || (a.len() == 1 && b.len() == 1));
                    let Some((nb, mb)) = mb else { continue };
                    any = true;
                    writeln!(out, "{name} (a) vs {nb} (b)")?;
                    match (ma, mb) {
                        (Ok(ma), Ok(mb)) => write!(out, "{}", compare::diff(ma, mb))?,
                        (Err(e), _) | (_, Err(e)) => writeln!(out, "  {e}")?,
                    }
                }
                anyhow::ensure!(any, "no evaluate stage of the same name in both");
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::ensure!(args.len() <= 1, "usage: pipe metrics [FILE] or pipe metrics diff A B");
            let file = pipe_core::cli::pipeline_file(args.into_iter().next())?;
            write!(out, "{}", compare::show(&metrics_of(&file, &kinds)?, &label))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::LabelEval {
            file,
            truth,
            stage,
            html,
            ..
        } => {
            let truth = truth.expect("clap requires --truth without --descriptions");
            let file = pipe_core::cli::pipeline_file(file)?;
            let p = pipe_core::cli::load(&file, &kinds)?;
            let path = pipe_core::cli::table_path(&p, &format!("{stage}.labels"))?;
            let predicted = pipe_cxr::label::read_label_table(&path)?;
            let truth_labels = pipe_cxr::label::read_label_table(&truth)?;
            let (scores, n) = pipe_cxr::label::evaluate(&predicted, &truth_labels);
            writeln!(
                out,
                "{n} reports labelled by `{stage}` and in {} ({} in the truth)",
                truth.display(),
                truth_labels.len()
            )?;
            write_scores(&mut out, &scores)?;
            // Coverage: reports labelled against pairs waiting in the review queue.
            let review = pipe_core::table::read_batch(&pipe_core::cli::table_path(&p, &format!("{stage}.review"))?)?;
            let waiting = pipe_core::table::i64_col(&review, "pairs")?;
            let waiting: i64 = (0..review.num_rows()).map(|i| waiting.value(i)).sum();
            writeln!(
                out,
                "coverage: {} reports decided, {waiting} in review ({} distinct descriptions): {:.2}% decided",
                predicted.len(),
                review.num_rows(),
                100.0 * predicted.len() as f64 / (predicted.len() as f64 + waiting as f64).max(1.0)
            )?;
            let s = p.index(&stage).map(|i| &p.stages[i]);
            if let Some(input) = s.and_then(|s| s.inputs.first()) {
                let pairs = pipe_core::cli::table_path(&p, &input.to_string())?;
                let found = pipe_cxr::label::disagreements(&path, &pairs, &truth_labels)?;
                for d in &found {
                    writeln!(out, "disagree {d}")?;
                }
                if let Some(page) = html {
                    let title = format!("label-eval: {} against {}", stage, truth.display());
                    std::fs::write(&page, pipe_cxr::review::disagreements_page(&title, &found, &[]))
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", page.display()))?;
                    writeln!(out, "page: {}", page.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Synth {
            dataset,
            out: dir,
            studies,
            seed,
            size,
        } => {
            let t = std::time::Instant::now();
            let what = match dataset {
                Dataset::Hospital => {
                    let s = pipe_synth::generate::generate(&pipe_synth::generate::Options {
                        out: dir.clone(),
                        studies,
                        seed,
                        size,
                    })?;
                    format!(
                        "synthetic hospital in {}: {studies} studies, {} DICOM files, {} HIS session files ({} reports)",
                        dir.display(),
                        s.dicom_files,
                        s.his_files,
                        s.reports
                    )
                }
                Dataset::Chexpert => {
                    let rows = pipe_synth::chexpert::generate(&dir, studies, seed, size)?;
                    format!(
                        "synthetic CheXpert in {}: {studies} studies, {rows} rows in {}/train.csv",
                        dir.display(),
                        dir.join(pipe_synth::chexpert::DATASET).display()
                    )
                }
                Dataset::Vindr => {
                    let (train, test) = pipe_synth::vindr::generate(&dir, studies, seed, size)?;
                    format!(
                        "synthetic VinDr in {}: {train} training images (3 readers), {test} test images (consensus)",
                        dir.display()
                    )
                }
            };
            writeln!(
                out,
                "{what}, truth in {}/truth ({:.1}s)",
                dir.display(),
                t.elapsed().as_secs_f64()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init { dir, pacs, his } => {
            init::init(&dir, &pacs, &his, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Precision, recall and F1 per class, one line each (paper, Table 3).
fn write_scores(out: &mut dyn Write, scores: &[pipe_cxr::label::ClassScore]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "class", "precision", "recall", "F1", "TP", "support"
    )?;
    for s in scores {
        writeln!(
            out,
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>8} {:>8}",
            s.label,
            s.precision(),
            s.recall(),
            s.f1(),
            s.tp,
            s.tp + s.fn_
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap checks its definitions only when a command is parsed: check them all here.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
