"""Benchmark: what running stages on Slurm costs, on the single-node cluster of
`make slurm-up`.

1. Overhead per stage: a chain of N small `command` stages (each writes a 3-row Parquet
   table with tests/fixtures/emit.py) run locally and with `--executor slurm`; the
   difference of the wall times over N is what submitting and tracking one job adds.
2. Controller load: 20 independent stages of 3 s each, all submitted at once (two run
   at a time on the 2-CPU node); pipe's run summary says how many controller queries
   it sent (`slurm: … controller queries`), reported per minute, beside what polling
   each job on its own (one query per job per round) would have sent.

3. Shards: collect and convert of a synthetic hospital (`--shard-studies`, 256-px
   DICOMs converted to 128 px) unsharded on this machine, then with `shards: 4` on
   Slurm (each stage one array job of 4 tasks, two running at a time on the 2-CPU
   node): the stages' wall times and what merging the shards took.

usage: python benches/slurm.py --pipe PATH/TO/pipe [--chain 10] [--wide 20] [--poll-ms 2000]
       [--shard-studies 2000]
Needs SLURM_CONF (default /tmp/pipe-slurm/etc/slurm.conf, written by `make slurm-up`).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--pipe", required=True)
ap.add_argument("--chain", type=int, default=10)
ap.add_argument("--wide", type=int, default=20)
ap.add_argument("--seconds", type=int, default=3, help="how long each wide stage works")
ap.add_argument("--poll-ms", type=int, default=2000)
ap.add_argument("--shard-studies", type=int, default=2000)
a = ap.parse_args()

os.environ.setdefault("SLURM_CONF", "/tmp/pipe-slurm/etc/slurm.conf")
os.environ["PIPE_SLURM_POLL_MS"] = str(a.poll_ms)
if subprocess.run(["sinfo"], capture_output=True).returncode != 0:
    sys.exit("no Slurm cluster answers: start one with `make slurm-up`")

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
work = tempfile.mkdtemp(prefix="pipe-bench-slurm-", dir="/tmp")
os.makedirs(os.path.join(work, "scripts"))
os.makedirs(os.path.join(work, "pipelines"))
shutil.copy(os.path.join(repo, "tests/fixtures/emit.py"), os.path.join(work, "scripts/emit.py"))


def pipeline(name, cache, stages):
    lines = [f"name: {name}", "root: ..", f"cache: {cache}", "stages:"] + stages
    with open(os.path.join(work, "pipelines", f"{name}.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def run(name, *extra):
    t = time.monotonic()
    r = subprocess.run([a.pipe, "run", f"pipelines/{name}.yaml", "--quiet", *extra], cwd=work, capture_output=True, text=True)
    wall = time.monotonic() - t
    if r.returncode != 0:
        sys.exit(f"pipe run {name} failed:\n{r.stdout}\n{r.stderr}")
    m = re.search(r"slurm: (\d+) job\(s\) submitted, (\d+) controller queries", r.stdout)
    return wall, (int(m.group(1)), int(m.group(2))) if m else None


def stage_seconds(name, *extra):
    """Run, and give each stage's `ran in` seconds from the summary."""
    r = subprocess.run([a.pipe, "run", f"pipelines/{name}.yaml", *extra], cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pipe run {name} failed:\n{r.stdout}\n{r.stderr}")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"✓ (\S+)\s+ran in ([\d.]+)s", r.stdout)}


def chain(cache):
    stages = []
    for s in range(a.chain):
        stages += [f"  s{s}:", "    kind: command"]
        inp = ""
        if s:
            stages.append(f"    inputs: [s{s - 1}]")
            inp = ', --input, "{in:out}"'
        stages += ["    params:", f'      run: [python3, scripts/emit.py, "{{out:out}}", --value, "{s}"{inp}]', "      outputs: [out]"]
    return stages


pipeline("chain_local", "cache_local", chain("cache_local"))
pipeline("chain_slurm", "cache_slurm", chain("cache_slurm"))
local, _ = run("chain_local")
slurm, (jobs, queries) = run("chain_slurm", "--executor", "slurm")
per_stage = (slurm - local) / a.chain
print(f"chain of {a.chain} stages: local {local:.2f} s, on Slurm {slurm:.2f} s -> {per_stage:.2f} s added per stage "
      f"({jobs} jobs, {queries} queries, poll every {a.poll_ms} ms)")

wide = []
for s in range(a.wide):
    wide += [f"  w{s}:", "    kind: command", "    resources: { cpu: 1 }", "    params:",
             f'      run: [sh, -c, "sleep {a.seconds}; python3 scripts/emit.py {{out:out}} --value {s}"]', "      outputs: [out]"]
pipeline("wide", "cache_wide", wide)
wall, (jobs, queries) = run("wide", "--executor", "slurm")
rounds = wall * 1000 / a.poll_ms
naive = jobs * rounds
print(f"{a.wide} concurrent jobs of {a.seconds} s: {wall:.1f} s, {queries} controller queries "
      f"= {queries / (wall / 60):.1f} per minute; polling each job alone: about {naive:.0f} "
      f"= {naive / (wall / 60):.0f} per minute")
hosp = os.path.join(work, "hosp")
subprocess.run([a.pipe, "synth", "--out", hosp, "--studies", str(a.shard_studies), "--seed", "11", "--size", "256"],
               check=True, capture_output=True)
with open(os.path.join(repo, "pipelines/phutho.yaml")) as f:
    phutho = f.read().replace("root: ..", f"root: {repo}").replace("name: phutho", "name: phutho\ncache: cache_unused")
with open(os.path.join(work, "pipelines/phutho.yaml"), "w") as f:
    f.write(phutho)
for name, shards in [("unsharded", 1), ("sharded", 4)]:
    with open(os.path.join(work, "pipelines", f"{name}.yaml"), "w") as f:
        f.write(f"name: {name}\nextend: phutho.yaml\ncache: {work}/cache_{name}\nstages:\n"
                f"  collect:\n    shards: {shards}\n    params: {{ pacs: {hosp}/pacs, his: {hosp}/his }}\n"
                f"  match:\n    params: {{ resolutions: {hosp}/truth/resolutions.csv }}\n"
                f"  convert:\n    shards: {shards}\n    params: {{ size: 128 }}\n")
local = stage_seconds("unsharded", "--until", "convert")
sharded = stage_seconds("sharded", "--until", "convert", "--executor", "slurm")
merged = []
for stage, table in [("collect", "collect.dicoms"), ("convert", "convert.images")]:
    log = subprocess.run([a.pipe, "path", "pipelines/sharded.yaml", table], cwd=work, capture_output=True, text=True).stdout.strip()
    text = open(os.path.join(os.path.dirname(log), "log.txt")).read() if log else ""
    m = re.search(r"4 shards merged in ([\d.]+) ms", text)
    merged.append(f"{stage} {m.group(1) if m else '?'} ms")
files = sum(len(fs) for _, _, fs in os.walk(os.path.join(hosp, "pacs")))
print(f"shards, {files} DICOM files of {a.shard_studies} studies: collect {local.get('collect', 0):.2f} s here, "
      f"{sharded.get('collect', 0):.2f} s as 4 shards on Slurm; convert {local.get('convert', 0):.2f} s here, "
      f"{sharded.get('convert', 0):.2f} s as 4 shards on Slurm; merging: {', '.join(merged)}")
shutil.rmtree(work, ignore_errors=True)
