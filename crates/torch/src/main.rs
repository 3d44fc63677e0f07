//! `pipe-torch`: the worker that runs LibTorch stages for `pipe`.
//!
//! `pipe-torch run JOB.json` runs one stage job (see `pipe_core::worker`);
//! `pipe-torch smoke` creates a tensor and prints what LibTorch sees, to check a set-up.

use std::process::ExitCode;

mod bench;

// Each torch kind keeps its LibTorch code beside its contract, in the stage's folder;
// only this crate compiles it.
mod device;
#[path = "../../cxr/src/evaluate/worker.rs"]
mod evaluate;
#[path = "../../cxr/src/filter/worker.rs"]
mod filter;
#[path = "../../cxr/src/train/losses.rs"]
#[allow(dead_code)]
mod losses;
#[path = "../../cxr/src/train/nets.rs"]
mod nets;
#[path = "../../cxr/src/train/optim.rs"]
mod optim;
#[path = "../../cxr/src/torch_check/worker.rs"]
mod torch_check;
#[path = "../../cxr/src/train/worker.rs"]
mod train;

/// Run a torch kind's job; returns the device actually used.
fn run_torch(kind: &str, params: &serde_json::Value, ctx: &pipe_core::stage::Context) -> anyhow::Result<String> {
    match kind {
        pipe_cxr::torch_check::KIND => torch_check::run(params, ctx),
        pipe_cxr::train::KIND => train::run(params, ctx),
        pipe_cxr::evaluate::KIND => evaluate::run(params, ctx),
        k if k == <pipe_cxr::filter::Filter as pipe_core::stage::Stage>::KIND => filter::run(params, ctx),
        other => anyhow::bail!("kind `{other}` does not run in the torch worker"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 3 => run(&args[2]),
        Some("smoke") => smoke(),
        Some("bench-step") => bench::step(&args[2..]),
        Some("bench-loader") => bench::loader(&args[2..]),
        _ => {
            eprintln!("usage: pipe-torch run JOB.json | pipe-torch smoke");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(job_file: &str) -> anyhow::Result<()> {
    pipe_core::worker::run_job_file(std::path::Path::new(job_file), |job, ctx| {
        run_torch(&job.kind, &job.params, ctx)
    })
}

fn smoke() -> anyhow::Result<()> {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * 2.0;
    let sum = t.sum(tch::Kind::Float).double_value(&[]);
    anyhow::ensure!(
        (sum - 12.0).abs() < 1e-6,
        "tensor arithmetic is wrong: sum {sum}, expected 12"
    );
    println!("tensor {:?} sum {sum}", Vec::<f32>::try_from(&t)?);
    println!(
        "LibTorch: {}",
        option_env!("PIPE_TORCH_LIBTORCH_LIB").unwrap_or("found through LD_LIBRARY_PATH")
    );
    println!(
        "cuda available: {} ({} devices), cudnn: {}",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    Ok(())
}
