//! Malformed and awkward files in a PACS export: the run completes, every file is one
//! row with a reason, memory stays bounded, no panic text. Its own test binary, so the
//! peak memory of the children it waits for is this test's pipe runs alone.

mod common;
use common::*;

use std::os::unix::ffi::OsStrExt;

/// `base` with `extra` inserted right after the file meta group.
fn with_elements(base: &[u8], extra: &[u8]) -> Vec<u8> {
    let meta_len = u32::from_le_bytes(base[140..144].try_into().unwrap()) as usize;
    let at = 144 + meta_len;
    let mut out = base[..at].to_vec();
    out.extend_from_slice(extra);
    out.extend_from_slice(&base[at..]);
    out
}

const UNDEFINED: [u8; 4] = [0xFF; 4];

fn sq_start(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'S', b'Q', 0, 0]);
    out.extend_from_slice(&UNDEFINED);
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    out.extend_from_slice(&UNDEFINED);
}

fn sq_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
}

#[test]
fn malformed_files_are_rows_with_reasons_in_bounded_memory() {
    let p = Project::new();
    synth(&p.path("hosp"), 12, 64);
    // A valid, uncompressed file of the synthetic hospital to start from.
    let base_path = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .find(|f| {
            let b = std::fs::read(f).unwrap();
            b.windows(19).any(|w| w == b"1.2.840.10008.1.2.1") && !b.windows(21).any(|w| w == b"1.2.840.10008.1.2.1.9")
        })
        .expect("an explicit little endian file");
    let base = std::fs::read(&base_path).unwrap();
    let pacs = p.path("pacs");
    std::fs::create_dir_all(&pacs).unwrap();
    std::fs::create_dir_all(p.path("his")).unwrap();
    let write = |name: &[u8], bytes: &[u8]| {
        std::fs::write(pacs.join(std::ffi::OsStr::from_bytes(name)), bytes).unwrap();
    };
    write(b"valid.dcm", &base);
    // An element whose length runs 4 GB past the end of a 1 KB file.
    let mut e = vec![0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF];
    e.extend_from_slice(&[0u8; 16]);
    write(b"length_past_end.dcm", &with_elements(&base, &e));
    // UN of undefined length whose delimiters never come.
    let mut un = vec![0x09, 0x00, 0x11, 0x10, b'U', b'N', 0, 0];
    un.extend_from_slice(&UNDEFINED);
    un.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    un.extend_from_slice(&UNDEFINED);
    let mut cut = base[..144 + u32::from_le_bytes(base[140..144].try_into().unwrap()) as usize].to_vec();
    cut.extend_from_slice(&un);
    write(b"un_undefined_cut.dcm", &cut);
    // 1,500 nested sequences (pydicom reads them; dicom-rs's recursion overflowed).
    let mut deep = Vec::new();
    for _ in 0..1500 {
        sq_start(&mut deep);
    }
    for _ in 0..1500 {
        sq_end(&mut deep);
    }
    write(b"deep.dcm", &with_elements(&base, &deep));
    // A sequence of 100,000 empty items: valid, and big.
    let mut many = vec![0x09, 0x00, 0x12, 0x10, b'S', b'Q', 0, 0];
    many.extend_from_slice(&UNDEFINED);
    for _ in 0..100_000 {
        many.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    }
    many.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    write(b"many_items.dcm", &with_elements(&base, &many));
    // The same instance again, under a name that is not UTF-8 (Latin-1 "café").
    write(b"caf\xe9.dcm", &base);
    // Cut inside its pixel data.
    write(b"cut.dcm", &base[..base.len() - 100]);
    // What cannot be read at all: a link to nothing, two links to each other, a link
    // back up the tree, a FIFO (opening it would block), and a file whose reads fail
    // with EIO (the kernel's view of this process's memory at address 0).
    let link = |target: &std::path::Path, name: &str| std::os::unix::fs::symlink(target, pacs.join(name)).unwrap();
    link(&pacs.join("gone.dcm"), "dangling.dcm");
    link(&pacs.join("loop_b.dcm"), "loop_a.dcm");
    link(&pacs.join("loop_a.dcm"), "loop_b.dcm");
    link(&pacs, "up");
    let fifo = std::ffi::CString::new(pacs.join("fifo.dcm").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    link(std::path::Path::new("/proc/self/mem"), "eio.dcm");

    p.write(
        "pipelines/m.yaml",
        "name: m\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: pacs, his: his }\n",
    );
    let out = p.command(&["run", "pipelines/m.yaml"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "{text}");

    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/m.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let (dicoms, rejects) = (read("collect.dicoms"), read("collect.rejects"));
    let col = |b: &arrow::array::RecordBatch, c: &str| -> Vec<String> {
        let a = pipe_core::table::str_col(b, c).unwrap();
        (0..b.num_rows()).map(|i| a.value(i).to_string()).collect()
    };
    let reason: std::collections::BTreeMap<String, String> =
        col(&rejects, "path").into_iter().zip(col(&rejects, "reason")).collect();
    let kept = col(&dicoms, "path");
    assert_eq!(kept.len() + reason.len(), 13, "kept {kept:?}, rejected {reason:?}");
    let why = |name: &str| {
        reason
            .get(&format!("pacs/{name}"))
            .cloned()
            .unwrap_or_else(|| format!("kept ({kept:?})"))
    };
    for (name, reason) in [
        ("length_past_end.dcm", "truncated: element (0009,1010)"),
        ("un_undefined_cut.dcm", "truncated"),
        ("deep.dcm", "sequences nested more than 64 deep"),
        ("cut.dcm", "truncated: pixel data"),
        ("dangling.dcm", "cannot read: a symbolic link to "),
        ("loop_a.dcm", "cannot read: a symbolic link to "),
        ("loop_b.dcm", "cannot read: a symbolic link to "),
        (
            "up",
            "cannot read: a symbolic link back to a directory above it (a loop)",
        ),
        ("fifo.dcm", "cannot read: not a regular file or directory: a FIFO"),
        ("eio.dcm", "cannot read: "),
    ] {
        assert!(why(name).starts_with(reason), "{name}: {}", why(name));
    }
    assert!(kept.contains(&"pacs/valid.dcm".to_string()), "{kept:?}");
    assert!(
        kept.contains(&"pacs/many_items.dcm".to_string()),
        "{}",
        why("many_items.dcm")
    );
    // The Latin-1 name is read and kept, its byte shown escaped.
    assert!(kept.contains(&"pacs/caf\\xE9.dcm".to_string()), "{kept:?} {reason:?}");
    assert!(
        why("eio.dcm").ends_with("Input/output error (os error 5)"),
        "{}",
        why("eio.dcm")
    );
    // The copy under the Latin-1 name comes first in walk order: the other names it.
    let duplicate_of: std::collections::BTreeMap<String, Option<String>> = {
        use arrow::array::Array;
        let a = pipe_core::table::str_col(&dicoms, "duplicate_of").unwrap();
        kept.iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), a.is_valid(i).then(|| a.value(i).to_string())))
            .collect()
    };
    assert_eq!(duplicate_of["pacs/valid.dcm"].as_deref(), Some("pacs/caf\\xE9.dcm"));
    assert_eq!(duplicate_of["pacs/caf\\xE9.dcm"], None);
    // `pipe status` walks the same tree to compute keys: it answers too, and the run
    // was sealed (nothing to do again).
    let status = p.pipe(&["status", "pipelines/m.yaml"]).ok();
    assert!(status.stdout.contains("fresh"), "{}", status.stdout);

    // Peak memory of the pipe runs this test waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    eprintln!("peak RSS of pipe: {peak_mib:.1} MiB");
    assert!(peak_mib < 100.0, "pipe peaked at {peak_mib:.0} MiB");
}

/// A HIS file of 60 MB (UTF-16, one session with a chest report among a million other
/// elements) goes through collect and parse in bounded memory: read as a stream, never
/// whole (the whole file, its code units and its text took three times its size).
#[test]
fn a_huge_his_file_is_parsed_as_a_stream() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("pacs")).unwrap();
    std::fs::create_dir_all(p.path("his")).unwrap();
    // Written in pieces: a child's peak RSS counts what this process held when it forked.
    let mut out = std::io::BufWriter::new(std::fs::File::create(p.path("his/huge.xml")).unwrap());
    let mut put = |text: &str| {
        for u in text.encode_utf16() {
            std::io::Write::write_all(&mut out, &u.to_le_bytes()).unwrap();
        }
    };
    put("\u{FEFF}");
    put("<SESSION><SESSION_ID>S1</SESSION_ID><PATIENT_ID>P1</PATIENT_ID>\
         <CHECK_IN_TIME>05/03/2021 08:15:00</CHECK_IN_TIME><CHECK_OUT_TIME>05/03/2021 09:00:00</CHECK_OUT_TIME>\
         <REPORT><SERVICE_ID>CXR</SERVICE_ID><REPORT_TIME>05/03/2021 08:40:00</REPORT_TIME>\
         <DESCRIPTION>Phổi sáng. Tim không to.</DESCRIPTION></REPORT>");
    for _ in 0..1_000_000 {
        put("<NOTE>ghi chú điều dưỡng</NOTE>");
    }
    put("</SESSION>");
    drop(out);
    let size = std::fs::metadata(p.path("his/huge.xml")).unwrap().len();
    assert!(size > 56 << 20, "{size}");
    p.write("services.txt", "CXR chest X-ray\n");
    p.write(
        "pipelines/h.yaml",
        "name: h\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: pacs, his: his }\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: { services: services.txt }\n",
    );
    let out = p.command(&["run", "pipelines/h.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/h.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let reports = read("parse.reports");
    assert_eq!(reports.num_rows(), 1);
    assert_eq!(
        pipe_core::table::str_col(&reports, "description").unwrap().value(0),
        "Phổi sáng. Tim không to."
    );
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    eprintln!("peak RSS of pipe on a 60 MB HIS file: {peak_mib:.1} MiB");
    assert!(peak_mib < 100.0, "pipe peaked at {peak_mib:.0} MiB");
}
