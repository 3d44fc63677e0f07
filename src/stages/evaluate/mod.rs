//! `evaluate`: the stage kind that scores a trained classifier on a part of the dataset
//! will live in this folder; for now it holds the pure-Rust metrics core it will use.

pub mod metrics;
