//! Seeded mutations of real files — pydicom's test DICOMs and the synthetic hospital's
//! HIS XML — through collect, parse and convert, with the address space capped: a run
//! completes, accounts for every file, prints no panic, and never allocates what a
//! file cannot hold (a length taken from a damaged header would pass the cap). The
//! seed is fixed, so a failure reproduces; `PIPE_MUTANT_SEED` tries others.

mod common;
use common::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One damaged copy of `bytes`: flipped bytes in the header, a length set to 0xFFFFFFFF,
/// a cut, or a repeated chunk.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let head = b.len().min(4096);
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(head);
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = (rng.below(head.saturating_sub(4)) / 2) * 2;
            b[i..i + 4].copy_from_slice(&[0xFF; 4]);
        }
        2 => b.truncate(rng.below(b.len())),
        _ => {
            let (a, n) = (rng.below(head), 1 + rng.below(64));
            let chunk = b[a..(a + n).min(b.len())].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
    }
    b
}

#[test]
fn mutated_dicom_and_xml_files_are_rows_not_crashes() {
    let p = Project::new();
    let seed: u64 = std::env::var("PIPE_MUTANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261130);
    let mut rng = Rng(seed | 1);
    std::fs::create_dir_all(p.path("pacs")).unwrap();
    std::fs::create_dir_all(p.path("his")).unwrap();
    // DICOM: every public file small enough to copy many times, mutated three ways.
    let listing = std::process::Command::new(python())
        .arg(fixture("reference_decode.py"))
        .arg("--list")
        .output()
        .unwrap();
    let mut dicoms = 0;
    for (i, f) in String::from_utf8(listing.stdout).unwrap().lines().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        if bytes.len() > 600_000 {
            continue;
        }
        for k in 0..3 {
            std::fs::write(p.path(&format!("pacs/{i:03}_{k}.dcm")), mutate(&bytes, &mut rng)).unwrap();
            dicoms += 1;
        }
    }
    // HIS XML from the synthetic hospital, each file mutated once.
    synth(&p.path("hosp"), 40, 32);
    let mut xml = 0;
    for e in walkdir::WalkDir::new(p.path("hosp/his")).into_iter().flatten() {
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            std::fs::write(p.path(&format!("his/{xml:03}.xml")), mutate(&bytes, &mut rng)).unwrap();
            xml += 1;
        }
    }
    assert!(dicoms > 300 && xml >= 40, "{dicoms} DICOM, {xml} XML mutants");
    p.write(
        "pairs_from_dicoms.py",
        &std::fs::read_to_string(fixture("pairs_from_dicoms.py")).unwrap(),
    );
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/parse/chest_services.txt");
    p.write(
        "pipelines/m.yaml",
        &format!(
            "name: m\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: pacs, his: his }}\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: {{ services: {} }}\n  pairs:\n    kind: command\n    inputs: [collect.dicoms]\n    params:\n      run: [python3, pairs_from_dicoms.py, \"{{in:dicoms}}\", \"{{out:pairs}}\"]\n      outputs: [pairs]\n      files: [pairs_from_dicoms.py]\n  convert:\n    kind: convert\n    inputs: [pairs.pairs]\n    params: {{ size: 32 }}\n",
            services.display()
        ),
    );
    // 3 GiB of address space: enough for pipe's threads, far below what trusting a
    // damaged length would ask for (the original allocations were 1.2 and 3.6 GB).
    let mut cmd = p.command(&["run", "pipelines/m.yaml", "-j", "2"]);
    limit_address_space(&mut cmd, 3 << 30);
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "seed {seed}: {text}");
    assert!(
        !text.contains("panicked") && !text.contains("memory allocation"),
        "seed {seed}: {text}"
    );
    let rows = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/m.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
        .num_rows()
    };
    assert_eq!(
        rows("collect.dicoms") + rows("collect.rejects"),
        dicoms + xml - rows("collect.his_files"),
        "seed {seed}"
    );
    assert_eq!(
        rows("convert.images") + rows("convert.rejects"),
        rows("collect.dicoms"),
        "seed {seed}"
    );
    eprintln!(
        "seed {seed}: {dicoms} DICOM mutants: {} kept, {} rejected; convert {} images, {} rejects; {xml} XML mutants: {} sessions, {} parse rejects",
        rows("collect.dicoms"),
        rows("collect.rejects"),
        rows("convert.images"),
        rows("convert.rejects"),
        rows("parse.sessions"),
        rows("parse.rejects")
    );
}
