"""Convert on JPEG 2000 and JPEG-LS chest images (issue 12): pipe's convert (OpenJPEG,
CharLS) against pydicom + pylibjpeg (OpenJPEG) / pyjpegls (CharLS) + numpy + Pillow on
the same files: decode, modality LUT, window, letterbox resize, 8-bit PNG.

The files are the synthetic hospital's uncompressed chest images re-encoded by pydicom
(JPEG 2000 lossless through pylibjpeg-openjpeg, JPEG-LS lossless through pyjpegls), so
neither side decodes files it wrote itself.

usage: python benches/codecs.py --pipe PATH/TO/release/pipe [--studies 80] [--size 1024] [--out-size 768]
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

import pydicom
from pyconvert import to_png
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--studies", type=int, default=80)
ap.add_argument("--size", type=int, default=1024)
ap.add_argument("--out-size", type=int, default=768)
ap.add_argument("--work", default=None)
a = ap.parse_args()
pipe = os.path.abspath(a.pipe)
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
work = a.work or tempfile.mkdtemp(prefix="pipe-bench-codecs-")
print(f"work dir: {work}")
shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


hosp = os.path.join(work, "hosp")
if not os.path.isdir(hosp):
    sh([pipe, "synth", "--out", hosp, "--studies", str(a.studies), "--seed", "5", "--size", str(a.size)])

# Uncompressed greyscale chest images, re-encoded by pydicom.
sources = []
for p in sorted(glob.glob(os.path.join(hosp, "pacs", "**", "*.dcm"), recursive=True)):
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception:  # the synthetic hospital's junk and damaged files
        continue
    if "TransferSyntaxUID" in ds.file_meta and ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") and ds.get("BodyPartExamined") == "CHEST":
        sources.append(p)
codecs = {"jpeg2000": JPEG2000Lossless, "jpeg-ls": JPEGLSLossless}
for name, uid in codecs.items():
    d = os.path.join(work, name)
    if os.path.isdir(d):
        continue
    os.makedirs(d)
    for i, p in enumerate(sources):
        ds = pydicom.dcmread(p)
        try:
            ds.compress(uid)
        except Exception as e:  # a damaged pixel data: not a benchmark image
            print(f"  skipped {p}: {e}")
            continue
        ds.save_as(os.path.join(d, f"{i:05}.dcm"))
os.makedirs(os.path.join(work, "his"), exist_ok=True)
shutil.copy(os.path.join(repo, "tests/fixtures/pairs_from_dicoms.py"), work)


def pipe_convert(name):
    pipeline = os.path.join(work, f"{name}.yaml")
    with open(pipeline, "w") as f:
        f.write(f"""name: {name.replace("-", "")}
stages:
  collect:
    kind: collect
    params: {{ pacs: {name}, his: his }}
  pairs:
    kind: command
    inputs: [collect.dicoms]
    params:
      run: [python3, pairs_from_dicoms.py, "{{in:dicoms}}", "{{out:pairs}}"]
      outputs: [pairs]
  convert:
    kind: convert
    inputs: [pairs.pairs]
    params: {{ size: {a.out_size} }}
""")
    sh([pipe, "run", pipeline, "-q"], cwd=work)
    entry = os.path.dirname(sh([pipe, "path", pipeline, "convert.images"], cwd=work).stdout.strip())
    m = json.load(open(os.path.join(entry, "manifest.json")))
    return m["wall_seconds"], m["tables"]["images"], m["tables"]["rejects"]


def python_convert(name):
    out = os.path.join(work, f"py_{name}")
    os.makedirs(out, exist_ok=True)
    files = sorted(glob.glob(os.path.join(work, name, "*.dcm")))
    t = time.perf_counter()
    for i, p in enumerate(files):
        ds = pydicom.dcmread(p)
        to_png(ds, a.out_size, os.path.join(out, f"{i}.png"))
    return time.perf_counter() - t, len(files)


print(f"{len(sources)} chest images {a.size}px, re-encoded by pydicom; → {a.out_size}px PNG")
for name in codecs:
    ps, n, rejected = pipe_convert(name)
    ys, m = python_convert(name)
    print(
        f"  {name:9} pipe convert {n / ps:6.1f} images/s ({n} in {ps:.2f} s, {rejected} rejected, 2 threads)   "
        f"pydicom + pylibjpeg/pyjpegls + Pillow {m / ys:6.1f} images/s ({m} in {ys:.2f} s, 1 process)   "
        f"x{(n / ps) / (m / ys):.1f} (x{(n / ps) / (m / ys) / 2:.1f} per core)"
    )


# Collect on malformed files (issue 12): each one a few KB that once made collect
# allocate GBs or crash, next to pydicom reading the same headers. Peak RSS of each
# process alone, through a wrapper that waits for it.
def peak_mib(cmd, cwd=None):
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    rc, kb = sh(["python3", "-c", wrapper, *cmd], cwd=cwd).stdout.split()
    return int(rc), int(kb) / 1024


def element(group, elem, vr, value=b"", length=None):
    import struct

    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


bad = os.path.join(work, "malformed")
if not os.path.isdir(bad):
    os.makedirs(bad)
    base = open(sources[0], "rb").read()
    meta_end = 144 + int.from_bytes(base[140:144], "little")
    item, item_end, seq_end = b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0\0\0\0\0", b"\xfe\xff\xdd\xe0\0\0\0\0"
    undefined = 0xFFFFFFFF
    files = {
        "valid.dcm": base,
        "length_past_end.dcm": base[:meta_end] + element(0x0009, 0x1010, b"OB", b"\0" * 16, 0xFFFFFFF0),
        "un_undefined_cut.dcm": base[:meta_end] + element(0x0009, 0x1011, b"UN", length=undefined) + item + b"\xff" * 4,
        "deep.dcm": base[:meta_end]
        + (element(0x0009, 0x1010, b"SQ", length=undefined) + item + b"\xff" * 4) * 1500
        + (item_end + seq_end) * 1500
        + base[meta_end:],
        "many_items.dcm": base[:meta_end]
        + element(0x0009, 0x1012, b"SQ", length=undefined)
        + (item + b"\0" * 4) * 100_000
        + seq_end
        + base[meta_end:],
        "cut.dcm": base[: len(base) - 100],
    }
    for name, b in files.items():
        open(os.path.join(bad, name), "wb").write(b)
with open(os.path.join(work, "malformed.yaml"), "w") as f:
    f.write("name: malformed\nstages:\n  collect:\n    kind: collect\n    params: { pacs: malformed, his: his }\n")
shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
rc, pipe_peak = peak_mib([pipe, "run", "malformed.yaml", "-q"], cwd=work)
reader = (
    "import glob, pydicom, sys\n"
    "for p in sorted(glob.glob(sys.argv[1] + '/*.dcm')):\n"
    "    try: pydicom.dcmread(p, stop_before_pixels=True)\n"
    "    except Exception: pass\n"
)
_, py_peak = peak_mib(["python3", "-c", reader, bad])
n = len(os.listdir(bad))
print(
    f"malformed set ({n} files: lengths past the end, undefined-length UN, 1,500 nested sequences, 100,000 items, a cut)\n"
    f"  pipe collect peak RSS {pipe_peak:.1f} MiB (exit {rc})   pydicom dcmread(stop_before_pixels) peak RSS {py_peak:.1f} MiB"
)
