"""Benchmarks of the data stages against the Python tools a user would otherwise use,
side by side in one run (issue 3). Every time is the best of 3 on both sides.

  collect header scan  vs  pydicom.dcmread(stop_before_pixels=True) over the same files
                           (the whole stage, and its PACS part alone, from its log)
  parse                vs  xml.etree.ElementTree and lxml on the same XML (and Python
                           only reading the files, the floor under any parser)
  match                vs  pandas merge + filter, 100k images x 100k reports: read +
                           join (+ pipe's writing), and the join alone (from match's log)
  collect peak memory  at two archive sizes, fresh and incremental (flat = independent
                           of the archive size)

usage: python benches/hospital.py --pipe PATH/TO/release/pipe [--files 20000] [--match-rows 100000] [--memory-studies 20000,100000]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--files", type=int, default=20000, help="DICOM files for the header scan")
ap.add_argument("--match-rows", type=int, default=100000)
ap.add_argument("--memory-studies", default="20000,100000")
ap.add_argument("--work", default=None, help="keep data here (default: a temp dir)")
a = ap.parse_args()
pipe = os.path.abspath(a.pipe)
work = a.work or tempfile.mkdtemp(prefix="pipe-bench-hospital-")
os.makedirs(os.path.join(work, "pipelines"), exist_ok=True)
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def hospital(name, studies):
    d = os.path.join(work, name)
    if not os.path.isdir(d):
        sh([pipe, "synth", "--out", d, "--studies", str(studies), "--seed", "3", "--size", "64"])
    return d


REPEAT = 3


def run_stage(pipeline_text, name, stage):
    """First run on a fresh cache (whole `pipe run` wall time), then the stage alone,
    rebuilt from scratch (`--force`), REPEAT times: returns (first wall, best stage
    seconds, the stage's logs of all runs)."""
    path = os.path.join(work, "pipelines", f"{name}.yaml")
    with open(path, "w") as f:
        f.write(pipeline_text)
    t = time.perf_counter()
    sh([pipe, "run", path, "-q", "--until", stage], cwd=work)
    wall = time.perf_counter() - t
    table = stage + (".dicoms" if stage == "collect" else ".reports" if stage == "parse" else ".pairs")
    best, logs = None, []
    for _ in range(REPEAT):
        sh([pipe, "run", path, "-q", "--only", stage, "--force", stage], cwd=work)
        entry = os.path.dirname(sh([pipe, "path", path, table], cwd=work).stdout.strip())
        seconds = json.load(open(os.path.join(entry, "manifest.json")))["wall_seconds"]
        best = seconds if best is None else min(best, seconds)
        logs.append(open(os.path.join(entry, "log.txt")).read())
    return wall, best, logs


def best_phase(logs, pattern):
    """The best (smallest) time a phase took over the runs' logs, in ms."""
    return min(sum(float(x) for x in re.search(pattern, log).groups()) for log in logs)


def best_of(f):
    """Best wall time of REPEAT calls of f (the first also warms imports and caches)."""
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def row(label, pipe_s, py_s, n, unit):
    print(f"  {label:<34} pipe {pipe_s:8.3f} s ({n / pipe_s:9.0f} {unit}/s)   python {py_s:8.3f} s ({n / py_s:9.0f} {unit}/s)   x{py_s / pipe_s:6.1f}")


print(f"work dir: {work}")
# Generated data is kept between runs (--work); results never are.
import shutil

for c in ["cache", "pipelines/cache"]:
    shutil.rmtree(os.path.join(work, c), ignore_errors=True)
for c in os.listdir(work):
    if c.startswith("cache_mem"):
        shutil.rmtree(os.path.join(work, c), ignore_errors=True)
# ---------------------------------------------------------------- collect vs pydicom
studies = int(a.files / 1.05)
h = hospital("h_scan", studies)
files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(h, "pacs")) for f in fs]
services = os.path.join(repo, "stages/parse/chest_services.txt")
text = f"""name: scan
stages:
  collect:
    kind: collect
    params: {{ pacs: {h}/pacs, his: {h}/his }}
  parse:
    kind: parse
    inputs: [collect.his_files]
    params: {{ services: {services} }}
"""
# Warm the page cache first so both sides read from memory (this machine's disk is
# slow and noisy); pipe's time includes BLAKE3 of every file, pydicom's does not.
for f in files:
    with open(f, "rb") as fh:
        fh.read()
wall, stage_s, collect_logs = run_stage(text, "scan", "collect")
# The PACS part of the stage (listing, headers, dicoms/rejects tables), from its log; the
# stage also lists the HIS tree and, after it, the engine re-scans both trees.
pacs_ms = best_phase(collect_logs, r"PACS: \d+ files listed in ([0-9.]+) ms.*read in ([0-9.]+) ms, tables written in ([0-9.]+) ms")
import pydicom


def pydicom_scan():
    for f in files:
        try:
            pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            pass


py = best_of(pydicom_scan)
print(f"header scan of {len(files)} DICOM files (64 px images; page cache warm; best of {REPEAT})")
row("collect, first pipe run (+BLAKE3)", wall, py, len(files), "files")
row("collect stage, from scratch", stage_s, py, len(files), "files")
row("collect: the PACS header scan alone", pacs_ms / 1e3, py, len(files), "files")

# ---------------------------------------------------------------- parse vs ElementTree
xmls = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(h, "his")) for f in fs]
_, parse_s, parse_logs = run_stage(text, "scan", "parse")


def parse_python(parser):
    out = []
    for f in xmls:
        try:
            root = parser(f)
        except Exception:
            continue
        head = {c.tag: (c.text or "") for c in root if c.tag != "REPORTS"}
        for r in root.iter("REPORT"):
            rec = {c.tag: (c.text or "") for c in r}
            rec.update(head)
            rec["t"] = datetime.strptime(rec.get("REPORT_TIME", "01/01/2000 00:00:00"), "%d/%m/%Y %H:%M:%S")
            out.append(rec)
    return out


et = best_of(lambda: parse_python(lambda f: ET.parse(f).getroot()))


def read_only():
    for f in xmls:
        with open(f, "rb") as fh:
            fh.read()


print(f"parse of {len(xmls)} HIS session files (best of {REPEAT}; pipe's logs: {' | '.join(l.strip() for l in parse_logs)})")
print(f"  (Python only reading the same files, no parsing: {best_of(read_only):.3f} s)")
row("parse vs xml.etree", parse_s, et, len(xmls), "files")
try:
    from lxml import etree as LX

    row("parse vs lxml", parse_s, best_of(lambda: parse_python(lambda f: LX.parse(f).getroot())), len(xmls), "files")
except ImportError:
    print("  lxml not installed (pip install lxml) — skipped")

# ---------------------------------------------------------------- match vs pandas
n = a.match_rows
rng = np.random.default_rng(0)
patients = np.array([f"BN{i:08d}" for i in rng.integers(0, n, n)])
t0 = np.datetime64("2020-11-01T00:00:00", "us")
study = t0 + (rng.integers(0, 150 * 24 * 3600, n) * 1_000_000).astype("timedelta64[us]")
rep_patients = patients[rng.permutation(n)]
rep_time = t0 + (rng.integers(0, 150 * 24 * 3600, n) * 1_000_000).astype("timedelta64[us]")
# Most reports sit a few hours after an image of their patient.
same = rng.random(n) < 0.9
rep_patients[same] = patients[same]
rep_time[same] = study[same] + (rng.integers(1800, 6 * 3600, same.sum()) * 1_000_000).astype("timedelta64[us]")
check_in = rep_time - np.timedelta64(8, "h")
check_out = rep_time + np.timedelta64(48, "h")
kept = pa.table({"sop_instance_uid": [f"1.2.{i}" for i in range(n)], "path": [f"pacs/{i}.dcm" for i in range(n)], "patient_id": patients, "study_time": pa.array(study, pa.timestamp("us"))})
reports = pa.table({
    "report_id": [f"S{i}/0" for i in range(n)], "session_id": [f"S{i}" for i in range(n)], "patient_id": rep_patients,
    "check_in": pa.array(check_in, pa.timestamp("us")), "check_out": pa.array(check_out, pa.timestamp("us")),
    "report_time": pa.array(rep_time, pa.timestamp("us")), "description": ["- Lồng ngực cân đối."] * n, "conclusion": pa.array([None] * n, pa.string()),
})
pq.write_table(kept, os.path.join(work, "kept.parquet"))
pq.write_table(reports, os.path.join(work, "reports.parquet"))
copy = os.path.join(work, "copy_table.py")
with open(copy, "w") as f:
    f.write("import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2])\n")
text = f"""name: m
stages:
  images:
    kind: command
    params: {{ run: [python3, {copy}, {work}/kept.parquet, "{{out:kept}}"], outputs: [kept], files: [{work}/kept.parquet] }}
  his:
    kind: command
    params: {{ run: [python3, {copy}, {work}/reports.parquet, "{{out:reports}}"], outputs: [reports], files: [{work}/reports.parquet] }}
  match:
    kind: match
    inputs: [images.kept, his.reports]
    params: {{ resolutions: {repo}/stages/match/resolutions.csv }}
"""
_, match_s, match_logs = run_stage(text, "m", "match")
core_ms = best_phase(match_logs, r"matched in ([0-9.]+) ms")
kept_path, reports_path = os.path.join(work, "kept.parquet"), os.path.join(work, "reports.parquet")
frames = {}


def pandas_read():
    frames["k"] = pd.read_parquet(kept_path)
    frames["r"] = pd.read_parquet(reports_path)


def pandas_join():
    k, r = frames["k"], frames["r"]
    m = k.merge(r, on="patient_id")
    m = m[((m.report_time - m.study_time).abs() <= pd.Timedelta(hours=24)) & (m.check_in <= m.study_time) & (m.study_time <= m.check_out)]
    frames["m"] = m
    m.groupby("sop_instance_uid").report_id.count()


read_s, join_s = best_of(pandas_read), best_of(pandas_join)
print(f"match {n} images x {n} reports ({len(frames['m'])} candidate pairs; best of {REPEAT}; pipe's logs: {' | '.join(l.strip() for l in match_logs)})")
print("  pipe also resolves duplicates, explains every unmatched row and writes four zstd Parquet tables; pandas writes nothing")
row("match, read + join (+ write for pipe)", match_s, read_s + join_s, n, "images")
row("match, the join alone (in memory)", core_ms / 1e3, join_s, n, "images")

# ---------------------------------------------------------------- collect memory
print("collect peak memory (max RSS of the pipe process): a fresh cache, then one new file (incremental)")
for s in [int(x) for x in a.memory_studies.split(",")]:
    h = hospital(f"h_mem_{s}", s)
    p = os.path.join(work, "pipelines", f"mem{s}.yaml")
    with open(p, "w") as f:
        f.write(f"name: mem{s}\ncache: {work}/cache_mem{s}\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: {h}/pacs, his: {h}/his }}\n")
    nfiles = sum(len(fs) for _, _, fs in os.walk(os.path.join(h, "pacs")))
    extra = os.path.join(h, "pacs", "zz_bench_new.dcm")
    for what in ["fresh cache", "one new file", "one new file"]:
        if what != "fresh cache":
            with open(extra, "w") as f:
                f.write(str(time.time()))
        out = subprocess.run(["/usr/bin/time", "-f", "%M %e", pipe, "run", p, "-q"], cwd=work, capture_output=True, text=True)
        rss_kb, secs = out.stderr.strip().splitlines()[-1].split()
        print(f"  {nfiles:>7} files, {what:<12}: {int(rss_kb) / 1024:7.1f} MiB max RSS, {float(secs):6.1f} s")
    os.remove(extra)
