//! `collect`: walk the PACS and HIS exports, fingerprint every file, read DICOM headers.
//!
//! Paper, "Data collection": DICOM files from PACS and XML session files from HIS. Only
//! headers are read (`read_until(PixelData)`); pixel data is first touched by `filter`
//! (model) or `convert`. Every file ends in `dicoms`, `his_files` or `rejects`.
//!
//! Incremental: the previous result of this stage is the starting point. A file whose
//! path and BLAKE3 are unchanged keeps its row without being opened; hashes of
//! unchanged files come from the stat cache, so a new night of PACS files costs work
//! proportional to the new files (counters `files_read` / `files_reused`).
//!
//! With `shards: N`, each shard reads a contiguous slice of each tree's files in walk
//! order, and the merge gives the rows an unsharded run writes (see [`Slice`]).

use std::path::Path;

use anyhow::Context as _;
use arrow::array::{ArrayRef, RecordBatch};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::cache::fingerprint::FileHash;
use pipe_core::stage::{Context, Reference, Resources, Stage};
use pipe_core::table::{TableBuilder, TableSchema, str_col};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Root of the PACS export (DICOM files, any names, any depth).
    pub pacs: String,
    /// Root of the HIS export (XML session files); none for an archive without
    /// reports (a public dataset's DICOM folder): `his_files` is then empty.
    #[serde(default)]
    pub his: Option<String>,
    /// Threads for reading headers (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

pub struct Collect;

pub fn dicoms_schema() -> TableSchema {
    crate::schema!("collect/dicoms")
}
fn his_schema() -> TableSchema {
    crate::schema!("collect/his_files")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("collect/rejects")
}

impl Stage for Collect {
    type Params = Params;
    const KIND: &'static str = "collect";
    // 2: structural walk before parsing, UN values by dictionary VR; 3: lenient file
    // meta and implicit-under-explicit data sets, ISO 2022 names, `warnings`; 4: the walk
    // measures unknown VRs as UN and looks inside implicit-VR sequences, as the parser does
    const VERSION: u32 = 4;
    const ABOUT: &'static str = "walk PACS and HIS exports, fingerprint files, read DICOM headers";

    fn outputs(_: &Params) -> Vec<String> {
        vec!["dicoms".into(), "his_files".into(), "rejects".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        let mut refs = vec![Reference {
            param: "pacs".into(),
            path: p.pacs.clone(),
        }];
        if let Some(his) = &p.his {
            refs.push(Reference {
                param: "his".into(),
                path: his.clone(),
            });
        }
        refs
    }

    fn resources(p: &Params) -> Resources {
        Resources { cpu: p.threads, gpu: 0 }
    }

    // A shard reads the headers of a contiguous slice of each tree's files in walk
    // order; the merge concatenates the slices and marks `duplicate_of` across them.
    const SHARDABLE: bool = true;

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        dicoms(p, ctx)?;
        his_files(p, ctx)
    }

    fn merge(p: &Params, ctx: &Context, shards: &[std::path::PathBuf]) -> anyhow::Result<()> {
        let mut first_copies = FirstCopies::default();
        pipe_core::stage::merge_shards(ctx, &Self::outputs(p), shards, &mut |table, batch| {
            if table == "dicoms" {
                first_copies.mark(batch)
            } else {
                Ok(batch)
            }
        })?;
        ctx.count("duplicate_instances", first_copies.duplicates);
        Ok(())
    }
}

/// The files of a tree this run handles, as the walk hands them over in chunks: all
/// of them, or a shard's contiguous slice (counted by a first walk, which the stat
/// cache makes a walk of names and stats only).
struct Slice {
    range: std::ops::Range<usize>,
    seen: usize,
}

impl Slice {
    fn of(ctx: &Context, tree: &str) -> anyhow::Result<Option<Slice>> {
        let Some(shard) = ctx.shard else { return Ok(None) };
        let mut files = 0;
        ctx.scan_tree(tree, &mut |chunk, _| {
            files += chunk.len();
            Ok(())
        })?;
        Ok(Some(Slice {
            range: shard.range(files),
            seen: 0,
        }))
    }

    /// The part of the next chunk inside the slice.
    fn take<'a>(this: &mut Option<Slice>, chunk: &'a [FileHash]) -> &'a [FileHash] {
        let Some(s) = this else { return chunk };
        let lo = s.range.start.saturating_sub(s.seen).min(chunk.len());
        let hi = s.range.end.saturating_sub(s.seen).min(chunk.len());
        s.seen += chunk.len();
        &chunk[lo..hi]
    }
}

fn join(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else {
        format!("{}/{rel}", root.trim_end_matches('/'))
    }
}

/// `his_files`: every file of the HIS tree with its hash.
fn his_files(p: &Params, ctx: &Context) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut his_files = ctx.writer("his_files", &his_schema())?;
    let Some(his) = &p.his else {
        his_files.finish()?;
        return Ok(());
    };
    let mut slice = Slice::of(ctx, his)?;
    ctx.scan_tree(his, &mut |chunk, _| {
        let chunk = Slice::take(&mut slice, chunk);
        let mut rows = TableBuilder::new(&his_schema());
        for f in chunk {
            // Unreadable: no content hash (parse rejects it; read again next time).
            let hash = f.unreadable.is_none().then(|| f.hash.to_hex());
            rows.str("path", Some(&join(his, &f.rel)))
                .str("file_hash", hash.as_deref())
                .i64("size", Some(f.size as i64));
        }
        his_files.write(&rows.finish()?)
    })?;
    let files = his_files.finish()?;
    ctx.log(format!(
        "HIS: {files} files listed and written in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

/// `dicoms` and `rejects`: every file of the PACS tree, by its header.
fn dicoms(p: &Params, ctx: &Context) -> anyhow::Result<()> {
    // Rows of the previous result, streamed in step with the listing.
    let mut previous = Previous::open(ctx.previous.as_deref());
    let root = ctx.resolve(&p.pacs);
    let pool = ctx.pool()?;
    let mut dicoms = ctx.writer("dicoms", &dicoms_schema())?;
    let mut rejects = ctx.writer("rejects", &rejects_schema())?;
    let (mut reused, mut read) = (0u64, 0u64);
    let mut first_copies = FirstCopies::default();
    let started = std::time::Instant::now();
    let (mut headers_time, mut write_time) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    // In chunks, in the tree's (sorted) order, as the scan hands them over: memory
    // stays bounded by the chunk, and an incremental run writes exactly the rows a
    // fresh run would, in the same order.
    let mut slice = Slice::of(ctx, &p.pacs)?;
    ctx.scan_tree(&p.pacs, &mut |chunk, expected| {
        let chunk = Slice::take(&mut slice, chunk);
        let expected = slice.as_ref().map_or(expected, |s| s.range.len() as u64);
        ctx.progress.set_total(expected.max(reused + read + chunk.len() as u64));
        let mut sources = Vec::with_capacity(chunk.len());
        let mut fresh: Vec<(String, &FileHash)> = Vec::new();
        for f in chunk {
            let path = join(&p.pacs, &f.rel);
            if f.unreadable.is_some() {
                // Read again next time: nothing known about its content to reuse.
                sources.push(Source::New(fresh.len()));
                fresh.push((path, f));
                continue;
            }
            let found = match previous.dicoms.find(&path, &f.hash) {
                Some(i) => Some(Found::Dicom(i)),
                None => previous.rejects.find(&path, &f.hash).map(Found::Reject),
            };
            match found {
                Some(found) => sources.push(Source::Previous(found)),
                None => {
                    sources.push(Source::New(fresh.len()));
                    fresh.push((path, f));
                }
            }
        }
        reused += (chunk.len() - fresh.len()) as u64;
        read += fresh.len() as u64;
        ctx.progress.inc((chunk.len() - fresh.len()) as u64);
        let t = std::time::Instant::now();
        let headers: Vec<Result<Header, String>> = pool.install(|| {
            fresh
                .par_iter()
                .map(|(_, f)| {
                    let file = if f.rel.is_empty() {
                        root.clone()
                    } else {
                        pipe_core::cache::walk::disk_path(&root, &f.rel)
                    };
                    let h = match &f.unreadable {
                        Some(why) => Err(format!("{IO_ERROR}{why}")),
                        None => read_header(&file, f.size),
                    };
                    // Its hash came from the stat cache or an earlier read, yet it
                    // cannot be read now: the engine must not seal this result.
                    if let Err(why) = &h
                        && f.unreadable.is_none()
                        && why.starts_with(IO_ERROR)
                    {
                        ctx.unreadable(&file, why);
                    }
                    ctx.progress.inc(1);
                    h
                })
                .collect()
        });
        headers_time += t.elapsed();
        let t = std::time::Instant::now();
        let mut new_dicoms = TableBuilder::new(&dicoms_schema());
        let mut new_rejects = TableBuilder::new(&rejects_schema());
        // Where each new row landed: (is a dicom, row in its batch).
        let mut landed = Vec::with_capacity(fresh.len());
        for ((path, f), h) in fresh.iter().zip(&headers) {
            match h {
                Ok(h) => {
                    landed.push((true, new_dicoms.len()));
                    h.push(&mut new_dicoms, path, f);
                }
                Err(reason) => {
                    landed.push((false, new_rejects.len()));
                    // An I/O error says nothing about the content: no hash, so the row
                    // is never reused and the file is read again by the next run.
                    let hash = (!reason.starts_with(IO_ERROR)).then(|| f.hash.to_hex());
                    new_rejects
                        .str("path", Some(path))
                        .str("file_hash", hash.as_deref())
                        .i64("size", Some(f.size as i64))
                        .str("reason", Some(reason));
                }
            }
        }
        // Sources of interleave: the previous batches in the window, then the new rows.
        let (dn, rn) = (previous.dicoms.window.len(), previous.rejects.window.len());
        let (mut d, mut r) = (Vec::new(), Vec::new());
        for s in &sources {
            match s {
                Source::Previous(Found::Dicom(at)) => d.push(*at),
                Source::Previous(Found::Reject(at)) => r.push(*at),
                Source::New(k) => match landed[*k] {
                    (true, row) => d.push((dn, row)),
                    (false, row) => r.push((rn, row)),
                },
            }
        }
        let chunk = interleave(&previous.dicoms.window, &new_dicoms.finish()?, &d)?;
        dicoms.write(&first_copies.mark(chunk)?)?;
        rejects.write(&interleave(&previous.rejects.window, &new_rejects.finish()?, &r)?)?;
        previous.dicoms.release();
        previous.rejects.release();
        write_time += t.elapsed();
        Ok(())
    })?;
    let t = std::time::Instant::now();
    dicoms.finish()?;
    rejects.finish()?;
    write_time += t.elapsed();
    let total = started.elapsed();
    ctx.log(format!(
        "PACS: {} files listed in {:.1} ms (walk, stat, hashes), {read} headers read in {:.1} ms, tables written in {:.1} ms",
        reused + read,
        (total - headers_time - write_time).as_secs_f64() * 1e3,
        headers_time.as_secs_f64() * 1e3,
        write_time.as_secs_f64() * 1e3
    ));
    ctx.count("files_reused", reused);
    ctx.count("files_read", read);
    if ctx.shard.is_none() {
        // Sharded, duplicates across shards are for the merge to count.
        ctx.count("duplicate_instances", first_copies.duplicates);
    }
    Ok(())
}

/// The first path of each SOP Instance UID so far, in walk order. One instance under
/// two paths (a resend, a copy, a link) is a normal fact of an archive: the later
/// copies name the first in `duplicate_of`, and convert decodes one copy of each.
/// Recomputed for reused rows too: the first copy may be new, changed or gone.
#[derive(Default)]
struct FirstCopies {
    /// BLAKE3 of the UID (first 16 bytes) → path: about 100 bytes a file.
    first: std::collections::HashMap<[u8; 16], Box<str>>,
    duplicates: u64,
}

impl FirstCopies {
    fn mark(&mut self, chunk: RecordBatch) -> anyhow::Result<RecordBatch> {
        let (uids, paths) = (str_col(&chunk, "sop_instance_uid")?, str_col(&chunk, "path")?);
        let mut column = arrow::array::StringBuilder::new();
        for i in 0..chunk.num_rows() {
            let key: [u8; 16] = blake3::hash(uids.value(i).as_bytes()).as_bytes()[..16]
                .try_into()
                .expect("16 bytes");
            match self.first.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    self.duplicates += 1;
                    column.append_value(e.get());
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(paths.value(i).into());
                    column.append_null();
                }
            }
        }
        let at = chunk.schema().index_of("duplicate_of")?;
        let mut columns = chunk.columns().to_vec();
        columns[at] = std::sync::Arc::new(column.finish());
        Ok(RecordBatch::try_new(chunk.schema(), columns)?)
    }
}

/// A reusable row: (batch in its table's window, row in that batch).
enum Found {
    Dicom((usize, usize)),
    Reject((usize, usize)),
}

/// The previous result's rows, to reuse those of unchanged files.
///
/// Both tables were written in the tree's sorted order, the order of the new listing,
/// so they are merged with it as they are read: only the batches the current chunk
/// may pick from are in memory, not the whole previous result (nor an index of it).
struct Previous {
    dicoms: PreviousTable,
    rejects: PreviousTable,
}

impl Previous {
    fn open(entry: Option<&Path>) -> Previous {
        let none = || Previous {
            dicoms: PreviousTable::empty(),
            rejects: PreviousTable::empty(),
        };
        let Some(entry) = entry else { return none() };
        let open = |table: &str, schema: &TableSchema| {
            PreviousTable::open(&entry.join(format!("{table}.parquet")), schema).ok()
        };
        // Unreadable, or of another layout (older version): nothing is reused.
        match (open("dicoms", &dicoms_schema()), open("rejects", &rejects_schema())) {
            (Some(dicoms), Some(rejects)) => Previous { dicoms, rejects },
            _ => none(),
        }
    }
}

/// One table of the previous result, read batch by batch behind a cursor.
struct PreviousTable {
    reader: Option<ParquetRecordBatchReader>,
    /// Batches from the cursor's on; rows before the cursor are never looked at again.
    window: Vec<RecordBatch>,
    /// (batch in `window`, row).
    cursor: (usize, usize),
}

impl PreviousTable {
    fn empty() -> PreviousTable {
        PreviousTable {
            reader: None,
            window: Vec::new(),
            cursor: (0, 0),
        }
    }

    fn open(path: &Path, schema: &TableSchema) -> anyhow::Result<PreviousTable> {
        use arrow::array::RecordBatchReader as _;
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
        let first = reader.next().transpose()?;
        schema.check(first.as_ref().unwrap_or(&RecordBatch::new_empty(reader.schema())))?;
        Ok(PreviousTable {
            reader: Some(reader),
            window: first.into_iter().collect(),
            cursor: (0, 0),
        })
    }

    /// The (path, file hash) under the cursor, loading the next batch when needed.
    fn current(&mut self) -> Option<(&str, &str)> {
        while self.cursor.0 >= self.window.len() || self.cursor.1 >= self.window[self.cursor.0].num_rows() {
            if self.cursor.0 < self.window.len() {
                self.cursor = (self.cursor.0 + 1, 0);
                continue;
            }
            // A read error ends reuse: the remaining files are read, not trusted.
            match self.reader.as_mut()?.next() {
                Some(Ok(batch)) => self.window.push(batch),
                _ => {
                    self.reader = None;
                    return None;
                }
            }
        }
        let batch = &self.window[self.cursor.0];
        let (paths, hashes) = (str_col(batch, "path").ok()?, str_col(batch, "file_hash").ok()?);
        Some((paths.value(self.cursor.1), hashes.value(self.cursor.1)))
    }

    /// The row of `path` if its hash is still `hash`. Paths must come in the tree's
    /// order (`Path` order, component by component, as the walk sorts them).
    fn find(&mut self, path: &str, hash: &blake3::Hash) -> Option<(usize, usize)> {
        loop {
            let (p, h) = self.current()?;
            match Path::new(p).cmp(Path::new(path)) {
                std::cmp::Ordering::Less => self.cursor.1 += 1,
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal => {
                    let hit = (p == path && h == hash.to_hex().as_str()).then_some(self.cursor);
                    if hit.is_some() {
                        self.cursor.1 += 1;
                    }
                    return hit;
                }
            }
        }
    }

    /// Drop the batches wholly behind the cursor (after the chunk picked its rows).
    fn release(&mut self) {
        let behind = self.cursor.0.min(self.window.len());
        self.window.drain(..behind);
        self.cursor.0 -= behind;
    }
}

/// Where a row of the output comes from.
enum Source {
    Previous(Found),
    New(usize),
}

/// Rows picked from the previous batches (sources `0..previous.len()`) and the new rows
/// (source `previous.len()`).
fn interleave(previous: &[RecordBatch], new: &RecordBatch, picks: &[(usize, usize)]) -> anyhow::Result<RecordBatch> {
    let cols: Vec<ArrayRef> = (0..new.num_columns())
        .map(|c| {
            let sources: Vec<&dyn arrow::array::Array> =
                previous.iter().chain([new]).map(|b| b.column(c).as_ref()).collect();
            arrow::compute::interleave(&sources, picks)
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(new.schema(), cols)?)
}

/// What collect keeps of a DICOM header.
pub struct Header {
    sop_instance_uid: String,
    sop_class_uid: Option<String>,
    study_instance_uid: Option<String>,
    series_instance_uid: Option<String>,
    patient_id: String,
    patient_name: Option<String>,
    study_time: NaiveDateTime,
    modality: Option<String>,
    body_part: Option<String>,
    view_position: Option<String>,
    photometric: Option<String>,
    rows: Option<i32>,
    cols: Option<i32>,
    bits_allocated: Option<i32>,
    bits_stored: Option<i32>,
    rescale_slope: Option<f64>,
    rescale_intercept: Option<f64>,
    window_center: Option<f64>,
    window_width: Option<f64>,
    transfer_syntax: String,
    /// What was read leniently ("; "-separated), or nothing.
    warnings: Option<String>,
}

impl Header {
    fn push(&self, t: &mut TableBuilder, path: &str, f: &FileHash) {
        // Set for the whole chunk in walk order ([`FirstCopies`]).
        self.push_row(t, path, &f.hash.to_hex(), f.size, None);
    }

    /// A row of `dicoms` (deidentify writes its files' rows with it too).
    pub(crate) fn push_row(&self, t: &mut TableBuilder, path: &str, hash: &str, size: u64, duplicate_of: Option<&str>) {
        t.str("path", Some(path))
            .str("file_hash", Some(hash))
            .i64("size", Some(size as i64))
            .str("sop_instance_uid", Some(&self.sop_instance_uid))
            .str("sop_class_uid", self.sop_class_uid.as_deref())
            .str("study_instance_uid", self.study_instance_uid.as_deref())
            .str("series_instance_uid", self.series_instance_uid.as_deref())
            .str("patient_id", Some(&self.patient_id))
            .str("patient_name", self.patient_name.as_deref())
            .time("study_time", Some(self.study_time))
            .str("modality", self.modality.as_deref())
            .str("body_part", self.body_part.as_deref())
            .str("view_position", self.view_position.as_deref())
            .str("photometric", self.photometric.as_deref())
            .i32("rows", self.rows)
            .i32("cols", self.cols)
            .i32("bits_allocated", self.bits_allocated)
            .i32("bits_stored", self.bits_stored)
            .f64("rescale_slope", self.rescale_slope)
            .f64("rescale_intercept", self.rescale_intercept)
            .f64("window_center", self.window_center)
            .f64("window_width", self.window_width)
            .str("transfer_syntax", Some(&self.transfer_syntax))
            .str("warnings", self.warnings.as_deref())
            .str("duplicate_of", duplicate_of);
    }
}

/// The bytes of a file collect listed and their BLAKE3 (hex), if they are still what
/// collect hashed (`want`): a later stage's result is keyed by collect's table, so
/// anything else is an error of the run (nothing is cached), never a reject.
pub(crate) fn read_as_listed(file: &Path, listed: &str, want: Option<&str>) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(file).with_context(|| {
        format!("cannot read {listed}, which collect listed; the result would not be what its key says, so nothing is cached: run again")
    })?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if let Some(want) = want
        && want != hash
    {
        anyhow::bail!(
            "{listed} is not the file collect read (BLAKE3 {} ≠ {}): it changed after collect; nothing is cached, run again (collect rereads changed files)",
            &hash[..12],
            &want[..want.len().min(12)]
        );
    }
    Ok((bytes, hash))
}

/// Parse DICOM DA + TM into a local date-time (TM may be HH, HHMM, HHMMSS(.frac)).
pub fn dicom_datetime(date: &str, time: Option<&str>) -> Option<NaiveDateTime> {
    let d = NaiveDate::parse_from_str(date.trim(), "%Y%m%d").ok()?;
    let t = time.map(str::trim).unwrap_or("");
    let digits: String = t
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let part = |a: usize| digits.get(a..a + 2).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let time = if digits.is_empty() {
        NaiveTime::MIN
    } else {
        NaiveTime::from_hms_opt(part(0), part(2), part(4).min(59))?
    };
    Some(d.and_time(time))
}

/// Read a file's header; `Err` is the reject reason.
///
/// The file is opened once: its first [`HEAD`] bytes are read into a buffer that serves
/// the marker check, the header parse (continuing into the file when the header is
/// longer) and the pixel data check.
/// How a reject reason for a file that could not be read (not bad content) begins.
pub const IO_ERROR: &str = "cannot read: ";

pub fn read_header(path: &Path, size: u64) -> Result<Header, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{IO_ERROR}{e}"))?;
    let mut head = Vec::with_capacity(HEAD);
    (&mut file)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("{IO_ERROR}{e}"))?;
    match head.get(128..132) {
        Some(b"DICM") => {}
        Some(_) => return Err("not a DICOM file: no `DICM` marker after the 128-byte preamble".into()),
        None => return Err("not a DICOM file: shorter than the 132-byte preamble and marker".into()),
    }
    // Lengths and nesting are checked before the parser trusts them (it would allocate
    // what a length says, and recurse as deep as the sequences go).
    let layout = crate::dicom_scan::scan(&file, size)?;
    {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(head.len() as u64))
            .map_err(|e| format!("{IO_ERROR}{e}"))?;
    }
    let obj = crate::quietly(|| {
        OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .read_preamble(ReadPreamble::Always)
            .from_reader(crate::dicom_scan::Skipping::new(
                std::io::Cursor::new(&head).chain(&file),
                &layout,
            ))
            .map_err(|e| anyhow::anyhow!("cannot read DICOM header: {}", error_chain(&e)))
    })
    .map_err(|e| e.to_string())?;
    // A value written as UN (by an implicit-VR writer or a converter that lost the VR) is
    // the bytes of its dictionary VR, little endian (PS3.5 6.2.2): read it as that.
    let un = |tag| {
        obj.get(tag)
            .filter(|e| e.vr() == dicom_core::VR::UN)
            .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
    };
    let text = |tag| -> Option<String> {
        let s = match un(tag) {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => obj.get(tag).and_then(|e| e.to_str().ok())?.into_owned(),
        };
        Some(s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()).filter(|s| !s.is_empty())
    };
    let int = |tag| match un(tag) {
        Some(b) => match dictionary_vr(tag) {
            Some(dicom_core::VR::US) if b.len() >= 2 => Some(u16::from_le_bytes([b[0], b[1]]) as i32),
            Some(dicom_core::VR::SS) if b.len() >= 2 => Some(i16::from_le_bytes([b[0], b[1]]) as i32),
            _ => text(tag).and_then(|t| t.trim().parse().ok()),
        },
        None => obj.get(tag).and_then(|e| e.to_int::<i32>().ok()),
    };
    let float = |tag| match un(tag) {
        Some(_) => text(tag).and_then(|t| t.split('\\').next()?.trim().parse().ok()),
        None => obj
            .get(tag)
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied()),
    };
    let sop_instance_uid = text(tags::SOP_INSTANCE_UID).ok_or("missing SOPInstanceUID (0008,0018)")?;
    let patient_id = text(tags::PATIENT_ID).ok_or("missing PatientID (0010,0020)")?;
    let date = text(tags::STUDY_DATE).ok_or("missing StudyDate (0008,0020)")?;
    let study_time = dicom_datetime(&date, text(tags::STUDY_TIME).as_deref())
        .ok_or_else(|| format!("unreadable StudyDate/StudyTime {date:?} {:?}", text(tags::STUDY_TIME)))?;
    // As the file says (its meta group may have been repaired for the parser).
    let ts = match &layout.syntax {
        Some(ts) => ts.clone(),
        None => obj.meta().transfer_syntax().trim_end_matches('\0').to_string(),
    };
    // Under ISO 2022 code extensions dicom-rs keeps only the first character set: the
    // name is decoded from its raw bytes instead.
    let sets = layout
        .text(crate::dicom_scan::TEXTS[0])
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let sets: Vec<&str> = sets.trim_end_matches(['\0', ' ']).split('\\').map(str::trim).collect();
    let patient_name = match layout.text(crate::dicom_scan::TEXTS[1]) {
        Some(raw) if crate::charset::needed(&sets) => crate::charset::decode(raw, &sets, true),
        _ => text(tags::PATIENT_NAME),
    }
    // Empty trailing component groups ("Wang^XiaoDong=王^小東=") say nothing; pydicom
    // drops them too.
    .map(|n| n.trim_matches([' ', '\0']).trim_end_matches('=').to_string())
    .filter(|n| !n.is_empty());
    let (rows, cols, bits_allocated) = (int(tags::ROWS), int(tags::COLUMNS), int(tags::BITS_ALLOCATED));
    Ok(Header {
        sop_instance_uid,
        sop_class_uid: text(tags::SOP_CLASS_UID),
        study_instance_uid: text(tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(tags::SERIES_INSTANCE_UID),
        patient_id,
        patient_name,
        study_time,
        modality: text(tags::MODALITY),
        body_part: text(tags::BODY_PART_EXAMINED),
        view_position: text(tags::VIEW_POSITION),
        photometric: text(tags::PHOTOMETRIC_INTERPRETATION),
        rows,
        cols,
        bits_allocated,
        bits_stored: int(tags::BITS_STORED),
        rescale_slope: float(tags::RESCALE_SLOPE),
        rescale_intercept: float(tags::RESCALE_INTERCEPT),
        window_center: float(tags::WINDOW_CENTER),
        window_width: float(tags::WINDOW_WIDTH),
        transfer_syntax: ts,
        warnings: (!layout.warnings.is_empty()).then(|| layout.warnings.join("; ")),
    })
}

/// The VR the standard dictionary gives a tag, when it gives exactly one.
pub(crate) fn dictionary_vr(tag: dicom_core::Tag) -> Option<dicom_core::VR> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    match dicom_dictionary_std::StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(vr) => Some(vr),
        _ => None,
    }
}

/// Bytes read from the start of every file: a chest radiograph's header is a few KiB.
const HEAD: usize = 64 << 10;

/// An error and its sources in one line ("a: b: c").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}
