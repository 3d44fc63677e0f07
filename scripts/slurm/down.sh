#!/usr/bin/env bash
# Stop the cluster started by up.sh: cancel all jobs, stop slurmd, slurmctld,
# slurmdbd, MariaDB and munged (all by their pid files), remove the cgroup
# directories slurm made, the /etc/slurm/slurm.conf symlink and
# $PIPE_SLURM_DIR. Installed packages stay. Idempotent.
#
#   PIPE_SLURM_DIR=...   as for up.sh (default /tmp/pipe-slurm)
#   PIPE_SLURM_KEEP=1    keep $PIPE_SLURM_DIR (logs, job output, database)
set -uo pipefail

D=${PIPE_SLURM_DIR:-/tmp/pipe-slurm}
log() { echo "[pipe-slurm down] $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid() { # name pidfile seconds
  local name=$1 pf=$2 n=${3:-20} pid
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq $((n * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop, SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
  fi
  rm -f "$pf"
}

remove_symlink() {
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$D/etc/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
}

if [ ! -d "$D" ]; then
  remove_symlink
  log "nothing to stop ($D does not exist)"
  exit 0
fi
if [ ! -f "$D/.pipe-slurm" ]; then
  log "$D was not made by up.sh (no .pipe-slurm marker); not touching it"
  exit 1
fi
export SLURM_CONF="$D/etc/slurm.conf"

# 1. jobs
if alive "$D/run/slurmctld.pid"; then
  ids=$(squeue --noheader -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${ids// /}" ]; then
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null
    for _ in $(seq 100); do
      [ -z "$(squeue --noheader -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# 2. daemons, in reverse order of start
for pf in "$D"/run/slurmd-*.pid; do
  [ -e "$pf" ] && stop_pid slurmd "$pf" 20
done
stop_pid slurmctld "$D/run/slurmctld.pid" 20
stop_pid slurmdbd "$D/run/slurmdbd.pid" 20
stop_pid mariadbd "$D/mysql/mysqld.pid" 60
stop_pid munged "$D/munge/munged.pid" 10

# 3. leftovers: slurmstepd (started by our slurmd, so it carries
#    PIPE_SLURM_DIR=$D in its environment) and job processes (SLURM_JOB_ID
#    plus our SLURM_CONF) -- never this script or its ancestors
protect=" $$ "
p=$$
while [ "$p" -gt 1 ] 2>/dev/null; do
  p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break
  protect+="$p "
done
left=
for e in /proc/[0-9]*/environ; do
  pid=${e#/proc/}; pid=${pid%/environ}
  case "$protect" in *" $pid "*) continue ;; esac
  env=$( { tr '\0' '\n' <"$e"; } 2>/dev/null ) || continue
  comm=$(cat "/proc/$pid/comm" 2>/dev/null)
  if { [ "$comm" = slurmstepd ] && grep -qxF "PIPE_SLURM_DIR=$D" <<<"$env"; } ||
     { grep -q '^SLURM_JOB_ID=' <<<"$env" && grep -qxF "SLURM_CONF=$D/etc/slurm.conf" <<<"$env"; }; then
    left+="$pid "
  fi
done
if [ -n "$left" ]; then
  log "killing leftover job processes: $left"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null
  sleep 0.5
fi

# 4. cgroup directories made by task/cgroup (cgroup v1: <controller>/slurm_<node>)
node=$(cat "$D/node" 2>/dev/null)
if [ -n "$node" ]; then
  for cg in /sys/fs/cgroup/*/slurm_"$node" /sys/fs/cgroup/slurm_"$node"; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
fi

# 5. files
remove_symlink
if [ "${PIPE_SLURM_KEEP:-0}" = 1 ]; then
  log "stopped; kept $D"
else
  rm -rf "$D"
  log "stopped; removed $D"
fi
