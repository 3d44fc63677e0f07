//! pipe-core: the engine of `pipe`, a declarative, content-hashed pipeline runner.
//!
//! A YAML file declares stages; each stage is an instance of a *kind* (a Rust type
//! implementing the [`stage::Stage`] contract) that reads Parquet tables from its inputs
//! and writes Parquet tables into a cache entry named by a content hash of everything
//! that can change its result. This crate knows nothing about what the kinds do: the
//! chest X-ray kinds live in `pipe-cxr`, and a binary hands the engine a [`Registry`].
//!
//! Layers, top to bottom (see ARCHITECTURE.md): [`cli`] (the engine's commands) →
//! [`config`] (YAML → validated pipeline) → [`dag`] → [`plan`] + [`scheduler`] →
//! [`cache`] / [`table`] → kinds through the [`stage`] contract, in process or in the
//! torch worker ([`worker`]).
//!
//! Architecture invariant: no DICOM, image, plotting or LibTorch dependency.

pub mod cache;
pub mod child;
pub mod cli;
pub mod command;
pub mod config;
pub mod dag;
pub mod error;
pub mod hash;
pub mod interrupt;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod rng;
pub mod scheduler;
pub mod slurm;
pub mod stage;
pub mod table;
pub mod worker;

pub use registry::Registry;

/// pipe's version, written into manifests and Parquet metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
