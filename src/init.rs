//! `pipe init DIR`: a starting project outside the tool's repository.
//!
//! A hospital keeps its pipeline, its edited keyword lists and its cache in a folder of
//! its own (under version control, without the cache). The project is self-contained:
//! the paper's settings are copied in (`pipelines/phutho.yaml`) rather than extended
//! from the tool's repository, so the project's root and cache stay in DIR and an
//! upgrade of pipe never changes a pipeline silently.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};

/// The paper's pipeline and the editable resources it names, as shipped with this pipe.
const FILES: &[(&str, &str)] = &[
    ("pipelines/phutho.yaml", include_str!("../pipelines/phutho.yaml")),
    ("stages/README.md", include_str!("../stages/README.md")),
    (
        "stages/label/abbreviations.txt",
        include_str!("../stages/label/abbreviations.txt"),
    ),
    (
        "stages/label/lexicon.yaml",
        include_str!("../stages/label/lexicon.yaml"),
    ),
    (
        "stages/label/misspellings.txt",
        include_str!("../stages/label/misspellings.txt"),
    ),
    (
        "stages/label/normal_templates.txt",
        include_str!("../stages/label/normal_templates.txt"),
    ),
    (
        "stages/label/overrides.csv",
        include_str!("../stages/label/overrides.csv"),
    ),
    (
        "stages/match/resolutions.csv",
        include_str!("../stages/match/resolutions.csv"),
    ),
    (
        "stages/parse/chest_services.txt",
        include_str!("../stages/parse/chest_services.txt"),
    ),
    (
        "stages/deidentify/basic_profile.csv",
        include_str!("../stages/deidentify/basic_profile.csv"),
    ),
    (
        "stages/map_labels/chexpert_to_phutho.yaml",
        include_str!("../stages/map_labels/chexpert_to_phutho.yaml"),
    ),
    ("stages/qc/verdicts.csv", include_str!("../stages/qc/verdicts.csv")),
    (
        "stages/train/chexpert_hierarchy.yaml",
        include_str!("../stages/train/chexpert_hierarchy.yaml"),
    ),
    (
        "stages/train/phutho_hierarchy.yaml",
        include_str!("../stages/train/phutho_hierarchy.yaml"),
    ),
];

const GITIGNORE: &str = "# pipe's cache: results are rebuilt from the pipeline and the data.\n/cache/\n\
# `pipe review` queues: thumbnails and reports of patients, not for version control.\n/review/\n";

/// Write the project into `dir` (created if missing; refused if it already holds one).
pub fn init(dir: &Path, pacs: &str, his: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let pipeline = dir.join("pipe.yaml");
    if pipeline.exists() {
        bail!(
            "{} already exists: {} is a project already (edit it, or init another folder)",
            pipeline.display(),
            dir.display()
        );
    }
    for (rel, _) in FILES {
        let path = dir.join(rel);
        if path.exists() {
            bail!(
                "{} already exists; pipe init writes only into a folder without pipe's files",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (rel, text) in FILES {
        write_new(&dir.join(rel), text)?;
    }
    write_new(&pipeline, &pipeline_text(&project_name(dir), pacs, his))?;
    let gitignore = dir.join(".gitignore");
    if !gitignore.exists() {
        write_new(&gitignore, GITIGNORE)?;
    }
    writeln!(
        out,
        "project in {dir}:\n  pipe.yaml              your pipeline (extends pipelines/phutho.yaml)\n  pipelines/phutho.yaml  the paper's settings\n  stages/                keyword lists, templates, service names: edit them\n  .gitignore             leaves cache/ out of version control\nnext: point collect at your exports in pipe.yaml (now {pacs} and {his}), then\n  cd {dir} && pipe run",
        dir = dir.display()
    )?;
    Ok(())
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The folder's name as a pipeline name (letters, digits, `_`, `-`, `.`).
fn project_name(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "project".into()
    } else {
        name
    }
}

fn pipeline_text(name: &str, pacs: &str, his: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    format!(
        r#"# This project's pipeline: the Phu Tho paper's stages and settings
# (pipelines/phutho.yaml, copied here by `pipe init`) with this hospital's data.
# Run it with `pipe run` in this folder; `pipe status` says what is stale and why;
# `pipe kinds KIND` lists every param a stage takes.
name: {name}
extend: pipelines/phutho.yaml
stages:
  collect:
    params:
      pacs: {pacs}
      his: {his}

  # The paper trains EfficientNet-B2 at 768 px on a GPU. On a CPU, start small:
  # train:
  #   params: {{architecture: tiny, image_size: 64, batch_size: 32, epochs: 10}}
"#,
        pacs = quote(pacs),
        his = quote(his)
    )
}

#[cfg(test)]
mod tests {
    /// Every file under stages/ travels with `pipe init`, so a project gets all of
    /// them (a new resource file must be added to FILES).
    #[test]
    fn every_resource_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk: Vec<String> = walk(&root.join("stages"))
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.push("pipelines/phutho.yaml".into());
        on_disk.sort();
        let mut embedded: Vec<String> = super::FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
