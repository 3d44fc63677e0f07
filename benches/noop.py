"""Benchmark: a no-op `pipe run` of a 10-stage pipeline whose stages all reference a
10,000-file tree. Reports the median wall time over repeated runs (and `pipe status`),
after a first run that builds everything and fills the stat cache.

usage: python benches/noop.py --pipe PATH/TO/pipe [--files 10000] [--stages 10] [--repeat 30] [--dvc]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--files", type=int, default=10_000)
ap.add_argument("--stages", type=int, default=10)
ap.add_argument("--repeat", type=int, default=30)
ap.add_argument("--dvc", action="store_true", help="also time `dvc repro` on the same tree, if dvc is installed")
a = ap.parse_args()

work = tempfile.mkdtemp(prefix="pipe-bench-")
tree = os.path.join(work, "archive")
for i in range(a.files):
    d = os.path.join(tree, f"{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:05d}.dcm"), "wb") as f:
        f.write(os.urandom(512))
# Let the racy window pass so the stat cache may remember every file.
time.sleep(2.5)

os.makedirs(os.path.join(work, "pipelines"))
lines = ["name: bench", "root: ..", "stages:"]
for s in range(a.stages):
    lines += [f"  s{s}:", "    kind: command"]
    if s:
        lines.append(f"    inputs: [s{s - 1}]")
    lines += ["    params:", "      run: [\"true\"]", f"      env: {{ STAGE: \"{s}\" }}", "      files: [archive]"]
with open(os.path.join(work, "pipelines", "bench.yaml"), "w") as f:
    f.write("\n".join(lines) + "\n")


def timed(cmd, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


pipe = os.path.abspath(a.pipe)
first = timed([pipe, "run", "pipelines/bench.yaml", "-q"], work)
out = subprocess.run([pipe, "run", "pipelines/bench.yaml", "-q"], cwd=work, capture_output=True, text=True).stdout
assert "nothing to run" in out, out
runs = sorted(timed([pipe, "run", "pipelines/bench.yaml", "-q"], work) for _ in range(a.repeat))
status = sorted(timed([pipe, "status", "pipelines/bench.yaml"], work) for _ in range(a.repeat))
shutil.rmtree(os.path.join(work, "cache", "stat"))
cold = timed([pipe, "run", "pipelines/bench.yaml", "-q"], work)

ms = lambda s: f"{s * 1e3:7.1f} ms"
print(f"no-op run, {a.stages} stages, {a.files}-file tree referenced by every stage ({a.repeat} runs)")
print(f"  pipe run (first, builds all)      {ms(first)}")
print(f"  pipe run (no-op) median           {ms(statistics.median(runs))}   p90 {ms(runs[int(len(runs) * 0.9) - 1])}   min {ms(runs[0])}")
print(f"  pipe status median                {ms(statistics.median(status))}")
print(f"  pipe run (no-op, no stat cache)   {ms(cold)}   (re-hashes all {a.files} files)")

if a.dvc:
    if shutil.which("dvc") is None:
        print("  dvc: not installed (pip install dvc) — skipped")
    else:
        d = os.path.join(work, "dvc")
        os.makedirs(d)
        os.symlink(tree, os.path.join(d, "archive"))
        subprocess.run(["git", "init", "-q"], cwd=d, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=d, check=True)
        stages = []
        for s in range(a.stages):
            deps = ["archive"] + ([f"out{s - 1}"] if s else [])
            stages.append(f"  s{s}:\n    cmd: echo {s} > out{s}\n    deps: [{', '.join(deps)}]\n    outs: [out{s}]")
        with open(os.path.join(d, "dvc.yaml"), "w") as f:
            f.write("stages:\n" + "\n".join(stages) + "\n")
        subprocess.run(["dvc", "repro", "-q"], cwd=d, check=True, stdout=subprocess.DEVNULL)
        dv = sorted(timed(["dvc", "repro", "-q"], d) for _ in range(min(a.repeat, 10)))
        print(f"  dvc repro (no-op) median          {ms(statistics.median(dv))}")
shutil.rmtree(work)
