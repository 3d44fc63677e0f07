//! The architecture's layering, checked: the engine depends on nothing of the chest
//! X-ray domain (DICOM, images, plots) and nothing links LibTorch but the worker.

use std::process::Command;

/// Normal (non-dev) dependencies of a workspace package, one crate name per line.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

const DOMAIN: &[&str] = &[
    "dicom-core",
    "dicom-object",
    "dicom-pixeldata",
    "dicom-encoding",
    "png",
    "jpeg-encoder",
    "jpeg-decoder",
    "image",
    "plotters",
    "ab_glyph",
    "quick-xml",
    "pipe-cxr",
    "pipe-synth",
];
const TORCH: &[&str] = &["tch", "torch-sys"];

#[test]
fn the_engine_has_no_dicom_image_plotting_or_torch_dependency() {
    let deps = dependencies("pipe-core");
    assert!(deps.iter().any(|d| d == "parquet"), "{deps:?}");
    let bad: Vec<&String> = deps
        .iter()
        .filter(|d| DOMAIN.contains(&d.as_str()) || TORCH.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "pipe-core depends on {bad:?}");
}

#[test]
fn only_the_worker_links_libtorch() {
    for package in ["pipe", "pipe-core", "pipe-cxr", "pipe-synth"] {
        let deps = dependencies(package);
        let bad: Vec<&String> = deps.iter().filter(|d| TORCH.contains(&d.as_str())).collect();
        assert!(bad.is_empty(), "{package} depends on {bad:?}");
    }
    assert!(dependencies("pipe-torch").iter().any(|d| d == "tch"));
}
