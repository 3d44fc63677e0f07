#!/usr/bin/env bash
# Submit one job for each end state to the cluster started by up.sh and
# print what squeue, sacct and scontrol say about them (used to fill in
# README.md). Takes about 1.5 minutes (the TIMEOUT job needs --time=1 plus up
# to 30 s of slurmctld's time-limit check).
set -uo pipefail
D=${PIPE_SLURM_DIR:-/tmp/pipe-slurm}
export SLURM_CONF=${SLURM_CONF:-$D/etc/slurm.conf}
cd "$D/jobs"
sub() { sbatch --parsable -o "$D/jobs/%x-%j.out" "$@"; }

# other people's jobs would change the picture: wait (up to 10 min) for an empty queue
for _ in $(seq 600); do [ -z "$(squeue --noheader -o %A)" ] && break; sleep 1; done
t0=$(date +%s)
timeout_j=$(sub -J timeout --mem=100M --time=1 --wrap 'sleep 300')
# the fast way to a TIMEOUT: an admin lowers the limit of a running job to 0;
# slurmctld's time-limit check (every 30 s) then ends it
fast_j=$(sub -J timeout-fast --mem=100M --time=1 --wrap 'sleep 300')
sleep 1
for _ in $(seq 100); do [ "$(squeue --noheader -j "$fast_j" -o %T)" = RUNNING ] && break; sleep 0.2; done
scontrol update JobId="$fast_j" TimeLimit=0
fast_t0=$(date +%s)
ok_j=$(sub -J completed --mem=100M --wrap 'echo ok')
fail_j=$(sub -J failed --mem=100M --wrap 'echo failing; exit 3')
oom_j=$(sub -J oom --mem=50M --wrap "perl -e '\$x = \"x\" x (300*1024*1024); sleep 30'")
cancel_j=$(sub -J cancelled --mem=100M --wrap 'sleep 300')
# wait until the cancel job runs, show what a running job looks like, cancel it
for _ in $(seq 300); do
  [ "$(squeue --noheader -j "$cancel_j" -o %T)" = RUNNING ] && break; sleep 0.2
done
echo "## while running:"
echo "\$ squeue --noheader -o '%i %T %r'"; squeue --noheader -o '%i %T %r'
echo "\$ sacct --parsable2 --noheader -j $cancel_j --format=JobID,State,ExitCode,Reason   (running)"
sacct --parsable2 --noheader -j "$cancel_j" --format=JobID,State,ExitCode,Reason 2>&1
scancel "$cancel_j"
sub -J hold-gpus --mem=100M --gres=gpu:2 --wrap 'sleep 2' >/dev/null
pend_j=$(sub -J pending-cancelled --mem=100M --gres=gpu:2 --wrap 'sleep 300')
sleep 1
echo "\$ squeue --noheader -o '%i %T %r'   (some pending)"; squeue --noheader -o '%i %T %r'
echo "\$ sacct --parsable2 --noheader -j $pend_j --format=JobID,State,ExitCode,Reason   (pending)"
sacct --parsable2 --noheader -j "$pend_j" --format=JobID,State,ExitCode,Reason 2>&1
scancel "$pend_j"

# wait (up to 5 min) until job $1 is in an end state; sets st
wait_end() {
  for _ in $(seq 300); do
    st=$(scontrol show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$st" in TIMEOUT|COMPLETED|FAILED|CANCELLED) return ;; esac
    sleep 1
  done
}
wait_end "$fast_j"
echo "## timeout-fast job $fast_j reached $st $(( $(date +%s) - fast_t0 ))s after 'scontrol update JobId=$fast_j TimeLimit=0'"
wait_end "$timeout_j"
echo "## TIMEOUT job $timeout_j reached $st $(( $(date +%s) - t0 ))s after submission (--time=1)"
sleep 3
for j in $ok_j $fail_j $cancel_j $pend_j $oom_j $timeout_j $fast_j; do
  name=$(scontrol show job "$j" | sed -n 's/.*JobName=\([^ ]*\).*/\1/p')
  echo "## $name (job $j)"
  echo "\$ squeue --noheader -o '%i %T %r'           -> $(squeue --noheader -o '%i %T %r' | grep "^$j " || echo '(not listed)')"
  echo "\$ squeue --noheader -o '%i %T %r' -j $j     -> $(squeue --noheader -o '%i %T %r' -j "$j" 2>&1)"
  echo "\$ squeue --noheader -o '%i %T %r' -j $j -t all -> $(squeue --noheader -o '%i %T %r' -j "$j" -t all 2>&1)"
  echo "\$ sacct --parsable2 --noheader -j $j --format=JobID,State,ExitCode,Reason"
  sacct --parsable2 --noheader -j "$j" --format=JobID,State,ExitCode,Reason 2>&1; echo "(exit $?)"
  echo "\$ scontrol show job $j | grep -E 'JobState|ExitCode'"
  scontrol show job "$j" | grep -E 'JobState|ExitCode' | sed 's/^ */  /'
done
echo "## oom job stdout/stderr:"; cat "$D/jobs/oom-$oom_j.out"
echo "## plain squeue now (finished jobs are not listed):"; squeue --noheader -o '%i %T %r'
echo "## unknown job id:"; squeue --noheader -j 999999 -o '%i %T %r'; echo "(exit $?)"
sacct --parsable2 --noheader -j 999999 --format=JobID,State,ExitCode,Reason; echo "(sacct exit $?)"
