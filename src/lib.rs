//! pipe: declarative, content-hashed pipelines from a hospital imaging archive (DICOM,
//! HIS XML) to a labelled chest X-ray dataset and a trained classifier.
//!
//! Layers, top to bottom (see ARCHITECTURE.md): [`cli`] → [`config`] (YAML → validated
//! pipeline) → [`dag`] → [`plan`] + [`scheduler`] → [`cache`] / [`table`] → [`stages`]
//! (the stage kinds, through the [`stage`] contract) and [`worker`] for LibTorch ones.

pub mod cache;
pub mod child;
pub mod cli;
pub mod config;
pub mod dag;
pub mod error;
pub mod hash;
pub mod pixels;
pub mod plan;
pub mod progress;
pub mod scheduler;
pub mod stage;
pub mod stages;
pub mod synth;
pub mod table;
pub mod worker;

/// pipe's version, written into manifests and Parquet metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
