"""Benchmarks of label and convert against Python implementations (issues 4, 13):

  label    vs  the same rules in Python (benches/pylabel.py: the lexicon looked up by
               word n-grams in a dict, unicodedata folding, clauses, negation / suspicion /
               change-over-time scopes, abbreviations, misspellings, cardiothoracic ratio)
               on 100k reports
  convert  vs  pydicom + numpy + Pillow (modality LUT, window, MONOCHROME1, resize, PNG)

usage: python benches/dataset.py --pipe PATH/TO/release/pipe [--reports 100000] [--studies 300] [--size 1024] [--out-size 768]
"""
import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--reports", type=int, default=100000)
ap.add_argument("--studies", type=int, default=300)
ap.add_argument("--size", type=int, default=1024)
ap.add_argument("--out-size", type=int, default=768)
ap.add_argument("--work", default=None)
a = ap.parse_args()
pipe = os.path.abspath(a.pipe)
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
work = a.work or tempfile.mkdtemp(prefix="pipe-bench-dataset-")
os.makedirs(os.path.join(work, "pipelines"), exist_ok=True)
print(f"work dir: {work}")
# Generated data is kept between runs (--work); results never are.
import shutil

for c in ["cache", "pipelines/cache"]:
    shutil.rmtree(os.path.join(work, c), ignore_errors=True)
for c in os.listdir(work):
    if c.startswith("cache_mem"):
        shutil.rmtree(os.path.join(work, c), ignore_errors=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def stage_seconds(pipeline, target):
    entry = os.path.dirname(sh([pipe, "path", pipeline, target], cwd=work).stdout.strip())
    return json.load(open(os.path.join(entry, "manifest.json")))["wall_seconds"]


# ------------------------------------------------------------------ label
h = os.path.join(work, "hosp")
if not os.path.isdir(h):
    sh([pipe, "synth", "--out", h, "--studies", "20000", "--seed", "5", "--size", "16"])
truth = pq.read_table(os.path.join(h, "truth/reports.parquet")).to_pandas()
base = truth[truth.chest & (truth.description != "")].description.tolist()
# Distinct descriptions (the stage labels each distinct text once; so would a careful
# Python script): a cardiothoracic ratio varies per report.
descs = [f"{base[i % len(base)]}\n- Chỉ số tim ngực 0,{3000 + (i * 7919) % 7000:04d}." for i in range(a.reports)]
pairs = pa.table({
    "sop_instance_uid": [f"1.2.{i}" for i in range(a.reports)],
    "report_id": [f"R{i}" for i in range(a.reports)],
    "patient_id": [f"P{i}" for i in range(a.reports)],
    "description": descs,
})
pq.write_table(pairs, os.path.join(work, "pairs.parquet"))
with open(os.path.join(work, "copy.py"), "w") as f:
    f.write("import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2])\n")
lp = os.path.join(work, "pipelines", "label.yaml")
with open(lp, "w") as f:
    f.write(f"""name: label_bench
root: {repo}
cache: {work}/cache
stages:
  pairs:
    kind: command
    params: {{ run: [python3, {work}/copy.py, {work}/pairs.parquet, "{{out:pairs}}"], outputs: [pairs], files: [{work}/pairs.parquet] }}
  label:
    kind: label
    inputs: [pairs.pairs]
""")
sh([pipe, "run", lp, "-q"], cwd=work)
pipe_s = stage_seconds(lp, "label.labels")
ours = pq.read_table(sh([pipe, "path", lp, "label.labels"], cwd=work).stdout.strip()).to_pandas()

# The same rules in plain Python (benches/pylabel.py).
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pylabel

python_labeller = pylabel.Labeller(repo)


def label(text):
    l = python_labeller.label(text)
    return None if l is None else [x != "0" for x in l]


t = time.perf_counter()
py = [label(d) for d in descs]
py_s = time.perf_counter() - t
ours_by_id = {r: [ours[c].iloc[i] for c in ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"]] for i, r in enumerate(ours.report_id)}
agree = sum(1 for i, l in enumerate(py) if (l is None and f"R{i}" not in ours_by_id) or (l is not None and ours_by_id.get(f"R{i}") == l))
print(f"label {a.reports} distinct reports")
print(f"  pipe label stage  {pipe_s:7.2f} s ({a.reports / pipe_s:9.0f} reports/s)")
print(f"  python same rules {py_s:7.2f} s ({a.reports / py_s:9.0f} reports/s)   x{py_s / pipe_s:.1f}   (agreement {agree}/{a.reports})")

# ------------------------------------------------------------------ convert
hc = os.path.join(work, "hosp_big")
if not os.path.isdir(hc):
    sh([pipe, "synth", "--out", hc, "--studies", str(a.studies), "--seed", "5", "--size", str(a.size)])
cp = os.path.join(work, "pipelines", "convert.yaml")
with open(cp, "w") as f:
    f.write(f"""name: convert_bench
extend: {repo}/pipelines/phutho.yaml
root: {repo}
cache: {work}/cache
stages:
  collect:
    params: {{ pacs: {hc}/pacs, his: {hc}/his }}
  convert:
    params: {{ size: {a.out_size} }}
""")
sh([pipe, "run", cp, "-q", "--until", "match"], cwd=work)
sh([pipe, "run", cp, "-q", "--until", "convert"], cwd=work)
conv_s = stage_seconds(cp, "convert.images")
images = pq.read_table(sh([pipe, "path", cp, "convert.images"], cwd=work).stdout.strip()).to_pandas()

import pydicom
from pyconvert import to_png

paths = [os.path.join(repo, p) if not os.path.isabs(p) else p for p in images.dicom_path]
out_dir = os.path.join(work, "py_png")
os.makedirs(out_dir, exist_ok=True)
done = 0
t = time.perf_counter()
for i, p in enumerate(paths):
    ds = pydicom.dcmread(p)
    if ds.file_meta.TransferSyntaxUID not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
        continue
    to_png(ds, a.out_size, os.path.join(out_dir, f"{i}.png"))
    done += 1
py_c = time.perf_counter() - t
print(f"convert {a.size}px DICOM → {a.out_size}px PNG")
print(f"  pipe convert      {conv_s:7.2f} s for {len(images)} images ({len(images) / conv_s:6.1f} images/s, 2 threads)")
print(f"  pydicom + Pillow  {py_c:7.2f} s for {done} uncompressed images ({done / py_c:6.1f} images/s, 1 process)   x{(len(images) / conv_s) / (done / py_c):.1f}")
