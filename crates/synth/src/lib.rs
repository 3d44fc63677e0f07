//! The synthetic hospital (`pipe synth`): a deterministic PACS export (DICOM) and HIS
//! export (XML) with the hard cases of the Phu Tho paper, and the ground truth of what
//! every stage must make of them. See [`generate`] for the layout on disk and
//! [`hospital`] for the cases and their rates.

pub mod chexpert;
pub mod dicom;
pub mod generate;
pub mod his;
pub mod hospital;
pub mod image;
pub mod j2k;
pub mod jpeg_lossless;
pub mod phrases;
pub mod reports;
pub mod rle;
pub mod vindr;
