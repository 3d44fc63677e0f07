//! `command`: run a user's program as a cached stage — the escape hatch for custom steps.
//!
//! ```yaml
//! inventory:
//!   kind: command
//!   inputs: [collect.dicoms]
//!   params:
//!     run: [python3, scripts/inventory.py, "{in:dicoms}", "{out:files}"]
//!     outputs: [files]
//!     files: [scripts/inventory.py]        # hashed as content: editing it reruns
//!     schemas: { files: schemas/demo/files.yaml }
//! ```
//!
//! Placeholders in `run`: `{in:TABLE}` / `{in:STAGE.TABLE}` an input Parquet path,
//! `{out:TABLE}` where to write an output, `{out_dir}` the entry directory (other files
//! written there are kept), `{root}` the pipeline root. The same paths are in the
//! environment: `PIPE_INPUT_<TABLE>`, `PIPE_OUTPUT_<TABLE>`, `PIPE_OUT_DIR`,
//! `PIPE_ROOT`, `PIPE_THREADS`, `PIPE_STAGE`, and `PIPE_PARAMS` (the params as JSON).
//! The program runs in the pipeline root. Its outputs are read back and rewritten
//! through pipe's Parquet writer, so they get zstd, pipe's metadata and, when a schema
//! is given, a column check. Its stdout and stderr go to the stage log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use anyhow::{Context as _, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stage::{Context, Reference, Resources, Stage};
use crate::table::{TableSchema, adopt};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Program and arguments (no shell).
    pub run: Vec<String>,
    /// Tables the program writes (`{out:NAME}`).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Files and directories the result depends on (scripts, data): hashed as content.
    #[serde(default)]
    pub files: Vec<String>,
    /// Optional schema file per output table, checked on write.
    #[serde(default)]
    pub schemas: BTreeMap<String, String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Threads the program may use.
    #[serde(default = "one")]
    pub threads: usize,
}

fn one() -> usize {
    1
}

pub struct Command;

const STAGING: &str = ".staging";

impl Stage for Command {
    type Params = Params;
    const KIND: &'static str = "command";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "run a program with input/output Parquet paths, cached like any stage";

    fn outputs(p: &Params) -> Vec<String> {
        p.outputs.clone()
    }

    fn references(p: &Params) -> Vec<Reference> {
        let files = p.files.iter().enumerate().map(|(i, f)| Reference {
            param: format!("files[{i}]"),
            path: f.clone(),
        });
        let schemas = p.schemas.iter().map(|(t, f)| Reference {
            param: format!("schemas.{t}"),
            path: f.clone(),
        });
        files.chain(schemas).collect()
    }

    fn resources(p: &Params) -> Resources {
        Resources { cpu: p.threads, gpu: 0 }
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let Some((program, args)) = p.run.split_first() else {
            bail!("params.run is empty; give the program and its arguments");
        };
        for t in p.schemas.keys() {
            if !p.outputs.contains(t) {
                bail!("params.schemas names table `{t}`, which is not in params.outputs");
            }
        }
        let staging = ctx.out_dir.join(STAGING);
        std::fs::create_dir_all(&staging)?;
        let staged = |t: &str| staging.join(format!("{t}.parquet"));
        let expand = |arg: &str| -> anyhow::Result<String> { expand(arg, &p.outputs, ctx, &staged) };

        let mut cmd = Process::new(program);
        for a in args {
            cmd.arg(expand(a)?);
        }
        cmd.current_dir(&ctx.root)
            .env("PIPE_OUT_DIR", &ctx.out_dir)
            .env("PIPE_ROOT", &ctx.root)
            .env("PIPE_STAGE", &ctx.stage)
            .env("PIPE_THREADS", ctx.threads.to_string())
            .env("PIPE_PARAMS", serde_json::to_string(p)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for i in &ctx.inputs {
            cmd.env(format!("PIPE_INPUT_{}", env_name(&i.table)), &i.path);
            cmd.env(
                format!("PIPE_INPUT_{}_{}", env_name(&i.stage), env_name(&i.table)),
                &i.path,
            );
        }
        for t in &p.outputs {
            cmd.env(format!("PIPE_OUTPUT_{}", env_name(t)), staged(t));
        }
        for (k, v) in &p.env {
            cmd.env(k, v);
        }
        ctx.progress.set_message(p.run.join(" "));
        let mut child = crate::child::spawn_owned(&mut cmd)
            .with_context(|| format!("cannot start `{program}` (is it installed and on PATH?)"))?;
        let stderr = child.stderr.take().expect("piped");
        let err = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
        for line in BufReader::new(child.stdout.take().expect("piped"))
            .lines()
            .map_while(Result::ok)
        {
            ctx.progress.inc(0);
            ctx.log(line);
        }
        let status = child.wait()?;
        let err_lines = err.join().unwrap_or_default();
        let tail = err_lines
            .iter()
            .rev()
            .take(15)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        for l in err_lines {
            ctx.log(l);
        }
        if !status.success() {
            bail!(
                "`{}` exited with {status}{}",
                p.run.join(" "),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(":\n{tail}")
                }
            );
        }

        for t in &p.outputs {
            let src = staged(t);
            if !src.is_file() {
                bail!(
                    "`{}` exited successfully but did not write table `{t}` to {}",
                    p.run.join(" "),
                    src.display()
                );
            }
            let schema = match p.schemas.get(t) {
                Some(f) => Some(TableSchema::load(&ctx.resolve(f))?),
                None => None,
            };
            let rows = adopt(&src, &ctx.output_path(t), schema.as_ref(), &ctx.meta.for_table(t))
                .with_context(|| format!("output table `{t}`"))?;
            ctx.count(&format!("rows_{t}"), rows);
        }
        std::fs::remove_dir_all(&staging)?;
        Ok(())
    }
}

fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn expand(
    arg: &str,
    outputs: &[String],
    ctx: &Context,
    staged: &dyn Fn(&str) -> std::path::PathBuf,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let token = &rest[open + 1..open + close];
        let value = if let Some(t) = token.strip_prefix("in:") {
            match t.split_once('.') {
                Some((stage, table)) => ctx
                    .inputs
                    .iter()
                    .find(|i| i.stage == stage && i.table == table)
                    .map(|i| i.path.clone())
                    .with_context(|| format!("`{{{token}}}`: no input table `{t}`"))?,
                None => ctx.input(t)?.to_path_buf(),
            }
            .to_string_lossy()
            .into_owned()
        } else if let Some(t) = token.strip_prefix("out:") {
            if !outputs.iter().any(|o| o == t) {
                bail!("`{{{token}}}`: `{t}` is not in params.outputs");
            }
            staged(t).to_string_lossy().into_owned()
        } else if token == "out_dir" {
            ctx.out_dir.to_string_lossy().into_owned()
        } else if token == "root" {
            ctx.root.to_string_lossy().into_owned()
        } else {
            // Not ours (e.g. a Python format string): keep it as written.
            rest[open..=open + close].to_string()
        };
        out.push_str(&rest[..open]);
        out.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
