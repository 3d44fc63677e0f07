#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster (Debian's slurm-wlm 22.05) for
# tests, without systemd. Idempotent: running it again with the same settings
# only checks the cluster; with other settings (e.g. PIPE_SLURM_ACCOUNTING
# flipped) it restarts what has to change.
#
#   scripts/slurm/up.sh                          # accounting on: slurmdbd + MariaDB, sacct works
#   PIPE_SLURM_ACCOUNTING=0 scripts/slurm/up.sh  # accounting off: sacct fails, squeue works
#
# Environment:
#   PIPE_SLURM_DIR         everything lives here (default /tmp/pipe-slurm)
#   PIPE_SLURM_ACCOUNTING  1 (default), 0, or jobcomp (= 0 plus jobcomp/filetxt:
#                          plain sacct still fails, `sacct -c` reads the file)
#   PIPE_SLURM_PORT        first of four TCP ports on 127.0.0.1 (default 6817):
#                          slurmctld, slurmd, slurmdbd, MariaDB
#   PIPE_SLURM_NODE        node name (default `hostname -s`); slurmd runs with -N
#                          and NodeAddr=127.0.0.1, so it need not resolve
#   PIPE_SLURM_GPUS        number of fake GPUs (default 2; 0 = no gres)
#   PIPE_SLURM_MEM_ENFORCE auto (default), cgroup or acct: how --mem is enforced
#   PIPE_SLURM_SMOKE_WAIT  seconds the smoke job may wait behind other jobs (120)
#   PIPE_SLURM_NO_INSTALL  1: never run apt-get, fail if something is missing
#
# Afterwards: export SLURM_CONF=$PIPE_SLURM_DIR/etc/slurm.conf (or source
# $PIPE_SLURM_DIR/env.sh). If /etc/slurm/slurm.conf does not exist, a symlink
# to our slurm.conf is put there too (removed again by down.sh), so plain
# sbatch/squeue/sacct work without SLURM_CONF.
set -euo pipefail

D=${PIPE_SLURM_DIR:-/tmp/pipe-slurm}
ACCT=${PIPE_SLURM_ACCOUNTING:-1}
PORT=${PIPE_SLURM_PORT:-6817}
NGPU=${PIPE_SLURM_GPUS:-2}
CTLD_PORT=$PORT
SLURMD_PORT=$((PORT + 1))
DBD_PORT=$((PORT + 2))
DB_PORT=$((PORT + 3))
case "$ACCT" in 1|0|jobcomp) ;; *) echo "PIPE_SLURM_ACCOUNTING must be 1, 0 or jobcomp" >&2; exit 2 ;; esac

T0=$(date +%s)
log() { echo "[pipe-slurm +$(( $(date +%s) - T0 ))s] $*" >&2; }
die() {
  log "ERROR: $*"
  for f in "$D"/log/*.log "$D"/munge/munged.log "$D"/mysql/error.log; do
    [ -f "$f" ] && { echo "---- tail $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || { echo "up.sh must run as root (it installs packages and runs the daemons as root)" >&2; exit 1; }

mkdir -p "$D"
touch "$D/.pipe-slurm"            # down.sh only deletes a directory with this marker

# ---------------------------------------------------------------- packages
need=()
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/select_cons_tres.so ] || ls /usr/lib/*/slurm-wlm/select_cons_tres.so >/dev/null 2>&1 || need+=(slurm-wlm-basic-plugins)
command -v munged >/dev/null || need+=(munge)
if [ "$ACCT" = 1 ]; then
  command -v slurmdbd >/dev/null || need+=(slurmdbd)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
  command -v mariadb >/dev/null || need+=(mariadb-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "${PIPE_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need[*]}"
  log "installing ${need[*]} (+ slurm-wlm)"
  # Without systemd, the packages' postinst would start munge/slurmctld/
  # slurmd/mariadb through their init scripts with the system config. A
  # policy-rc.d that says 101 stops that; put one there for the install only.
  policy_tmp=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy_tmp=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_ok=1
  apt-get install -y --no-install-recommends slurm-wlm "${need[@]}" >"$D/apt.log" 2>&1 || {
    apt-get update >>"$D/apt.log" 2>&1 &&
      apt-get install -y --no-install-recommends slurm-wlm "${need[@]}" >>"$D/apt.log" 2>&1
  } || apt_ok=0
  [ -n "$policy_tmp" ] && rm -f /usr/sbin/policy-rc.d
  [ "$apt_ok" = 1 ] || { tail -20 "$D/apt.log" >&2; die "apt-get install failed (log: $D/apt.log)"; }
fi

# ---------------------------------------------------------------- layout
mkdir -p "$D"/{etc,state,spool,log,run,dev,jobs,munge}
chmod 755 "$D" "$D"/{etc,state,spool,log,run,dev}
chmod 1777 "$D/jobs"
chmod 711 "$D/munge"              # munged: socket dir must be executable by all, not writable by others

NODE=${PIPE_SLURM_NODE:-$(hostname -s 2>/dev/null || true)}
[ -n "$NODE" ] || NODE=localhost
# slurmctld only runs where SlurmctldHost is this machine's own hostname
CTLD_HOST=$(hostname -s 2>/dev/null || true); [ -n "$CTLD_HOST" ] || CTLD_HOST=localhost
echo "$NODE" > "$D/node"           # down.sh: cgroup dirs are named slurm_<node>
CPUS=$(nproc --all)
MEM_TOTAL=$(free -m | awk '/^Mem:/{print $2}')
# slightly under what the kernel reports, so slurmd never registers with less
# memory than configured (that would drain the node)
REAL_MEM=$(( MEM_TOTAL - (MEM_TOTAL / 20 > 512 ? MEM_TOTAL / 20 : 512) ))
DEF_MEM_PER_CPU=$(( REAL_MEM / CPUS / 4 )); [ "$DEF_MEM_PER_CPU" -gt 1024 ] && DEF_MEM_PER_CPU=1024

# fake GPUs: character devices with NVIDIA's major number
for i in $(seq 0 $((NGPU - 1))); do
  f="$D/dev/nvidia$i"
  if [ ! -c "$f" ]; then rm -f "$f"; mknod -m 666 "$f" c 195 "$i"; fi
done

# ---------------------------------------------------------------- munge
MUNGE_SOCK="$D/munge/munge.socket"
if [ ! -s "$D/munge/munge.key" ]; then
  log "creating munge key"
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$D/munge/munge.key"
  else
    dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 2>/dev/null
  fi
fi
chmod 600 "$D/munge/munge.key"; chown root:root "$D/munge/munge.key"
if alive "$D/munge/munged.pid" && munge -S "$MUNGE_SOCK" -n </dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1; then
  :
else
  log "starting munged"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  # Runs as root with its own key, socket, log, pid and seed file under $D
  # (munged checks: key 0600 owned by the daemon's user, socket dir
  # executable by all and not writable by others). --force: start even if a
  # killed munged left a stale socket/lock behind.
  munged --force --socket="$MUNGE_SOCK" --key-file="$D/munge/munge.key" \
    --log-file="$D/munge/munged.log" --pid-file="$D/munge/munged.pid" \
    --seed-file="$D/munge/munged.seed" --num-threads=2 || die "munged failed to start"
  for _ in $(seq 50); do
    munge -S "$MUNGE_SOCK" -n </dev/null 2>/dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -S "$MUNGE_SOCK" -n </dev/null | unmunge -S "$MUNGE_SOCK" >/dev/null || die "munge does not work"
fi

# ---------------------------------------------------------------- MariaDB + slurmdbd
stop_pid() { # pidfile [seconds]
  local pf=$1 n=${2:-20} pid
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((n * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

DB_SOCK="$D/mysql/mysqld.sock"
if [ "$ACCT" = 1 ]; then
  mkdir -p "$D/mysql"; chmod 700 "$D/mysql"
  if [ ! -d "$D/mysql/data/mysql" ]; then
    log "initialising MariaDB in $D/mysql/data"
    rm -rf "$D/mysql/data"
    mariadb-install-db --no-defaults --datadir="$D/mysql/data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db >"$D/mysql/install.log" 2>&1 ||
      { cat "$D/mysql/install.log" >&2; die "mariadb-install-db failed"; }
  fi
  if ! alive "$D/mysql/mysqld.pid"; then
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid mariadbd --no-defaults --user=root --datadir="$D/mysql/data" \
      --socket="$DB_SOCK" --port="$DB_PORT" --bind-address=127.0.0.1 \
      --pid-file="$D/mysql/mysqld.pid" --log-error="$D/mysql/error.log" \
      --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
      --innodb-lock-wait-timeout=900 --skip-name-resolve \
      </dev/null >/dev/null 2>&1 &
    for _ in $(seq 300); do
      mariadb-admin --no-defaults -S "$DB_SOCK" -uroot ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  mariadb-admin --no-defaults -S "$DB_SOCK" -uroot ping >/dev/null 2>&1 || die "MariaDB did not start"
  mariadb --no-defaults -S "$DB_SOCK" -uroot -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'pipe-slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'pipe-slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "creating the slurm database failed"

  cat > "$D/etc/slurmdbd.conf.new" <<EOF
# generated by scripts/slurm/up.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=pipe-slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf.new"   # slurmdbd refuses a conf readable by others
  if ! cmp -s "$D/etc/slurmdbd.conf.new" "$D/etc/slurmdbd.conf" || ! alive "$D/run/slurmdbd.pid"; then
    stop_pid "$D/run/slurmdbd.pid"
    mv "$D/etc/slurmdbd.conf.new" "$D/etc/slurmdbd.conf"
    log "starting slurmdbd on 127.0.0.1:$DBD_PORT"
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF
    SLURM_CONF="$D/etc/slurm.conf" PIPE_SLURM_DIR="$D" slurmdbd || die "slurmdbd failed to start"
  else
    rm -f "$D/etc/slurmdbd.conf.new"
  fi
else
  stop_pid "$D/run/slurmdbd.pid"
  stop_pid "$D/mysql/mysqld.pid" 60
fi

# ---------------------------------------------------------------- slurm.conf
# memory limit: "cgroup" = task/cgroup on the cgroup v1 memory controller
# (kernel OOM killer, job ends OUT_OF_MEMORY); "acct" = no cgroups,
# jobacct_gather/linux polls RSS every second and SIGKILLs a step over its
# --mem (job ends FAILED, ExitCode 0:9); auto = cgroup where a cgroup v1
# memory hierarchy is mounted and writable, else acct.
MEM_ENFORCE=${PIPE_SLURM_MEM_ENFORCE:-auto}
if [ "$MEM_ENFORCE" = auto ]; then
  MEM_ENFORCE=acct
  if awk '$2 == "/sys/fs/cgroup/memory" && $3 == "cgroup"' /proc/mounts | grep -q . &&
     mkdir "/sys/fs/cgroup/memory/pipe-slurm-probe.$$" 2>/dev/null; then
    rmdir "/sys/fs/cgroup/memory/pipe-slurm-probe.$$"; MEM_ENFORCE=cgroup
  fi
fi
case "$MEM_ENFORCE" in
  cgroup)
    MEM_LINES="TaskPlugin=task/cgroup"
    cat > "$D/etc/cgroup.conf.new" <<EOF
# generated by scripts/slurm/up.sh: memory limits only, cgroup v1
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
EOF
    ;;
  acct)
    MEM_LINES="TaskPlugin=task/none
JobAcctGatherParams=OverMemoryKill"
    cat > "$D/etc/cgroup.conf.new" <<EOF
# generated by scripts/slurm/up.sh: no cgroup plugin in use
EOF
    ;;
  *) die "PIPE_SLURM_MEM_ENFORCE must be auto, cgroup or acct" ;;
esac

if [ "$NGPU" -gt 0 ]; then
  GRES_NODE=" Gres=gpu:$NGPU"
  GRES_CONF="NodeName=$NODE Name=gpu File=$D/dev/nvidia[0-$((NGPU - 1))]"
else
  GRES_NODE= GRES_CONF=
fi
if [ "$ACCT" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# client->slurmdbd connections (sacct, sacctmgr, slurmctld) do not use
# AuthInfo but this, which for munge is the socket to use
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none"
elif [ "$ACCT" = jobcomp ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none"
fi
cat > "$D/etc/slurm.conf.new" <<EOF
# generated by scripts/slurm/up.sh (accounting=$ACCT)
ClusterName=pipe
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/slurmd-%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# no systemd, no cgroup v2 delegation: plain /proc process tracking
ProctrackType=proctrack/linuxproc
$MEM_LINES
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
MaxJobCount=10000
# finished jobs stay visible to squeue/scontrol for 10 minutes
MinJobAge=600
# fast TIMEOUT / scancel: SIGKILL 2 s after SIGTERM, no grace over --time
KillWait=2
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
$ACCT_LINES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM$GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$D/etc/gres.conf.new" <<EOF
# generated by scripts/slurm/up.sh: fake GPUs (mknod c 195 N)
$GRES_CONF
EOF
cat > "$D/env.sh" <<EOF
export SLURM_CONF=$D/etc/slurm.conf
EOF

changed=0
for f in slurm.conf gres.conf cgroup.conf; do
  if cmp -s "$D/etc/$f.new" "$D/etc/$f"; then rm -f "$D/etc/$f.new"; else mv "$D/etc/$f.new" "$D/etc/$f"; changed=1; fi
done
export SLURM_CONF="$D/etc/slurm.conf"
export PIPE_SLURM_DIR="$D"     # marks the daemons (and slurmstepd) for down.sh

if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then
  mkdir -p /etc/slurm
  ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
  echo "$SLURM_CONF" > "$D/etc-symlink"
else
  log "note: /etc/slurm/slurm.conf exists and is not ours; use SLURM_CONF=$SLURM_CONF"
fi

if [ "$ACCT" = 1 ]; then
  # register the cluster (slurmctld would too, but sacct must see it at once)
  deadline=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx pipe && break
    sacctmgr -i add cluster pipe >/dev/null 2>&1 || true
    sleep 0.5
  done
  sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx pipe || die "slurmdbd did not come up / cluster not registered"
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if [ "$changed" = 1 ] || ! alive "$D/run/slurmctld.pid" || ! alive "$D/run/slurmd-$NODE.pid"; then
  stop_pid "$D/run/slurmd-$NODE.pid"
  stop_pid "$D/run/slurmctld.pid"
  log "starting slurmctld on 127.0.0.1:$CTLD_PORT"
  slurmctld -f "$SLURM_CONF" || die "slurmctld failed to start"
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  scontrol ping | grep -q UP || die "slurmctld does not answer"
  log "starting slurmd for node $NODE"
  slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait for the node
state=
for i in $(seq 300); do
  state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|fail*) [ $((i % 10)) = 0 ] && scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$state" in idle|mixed|allocated) ;; *) die "node $NODE is '$state', not idle ($(scontrol show node "$NODE" | grep -o 'Reason=.*'))" ;; esac

# ---------------------------------------------------------------- smoke test
# A node busy with other jobs can keep the smoke job pending: then wait up to
# PIPE_SLURM_SMOKE_WAIT seconds (default 120) and give up with a warning only.
jid=$(sbatch --parsable -J pipe-smoke --mem=16M --time=1 -o "$D/jobs/smoke-%j.out" --wrap 'echo hi') || die "sbatch failed"
jstate=
deadline=$(( $(date +%s) + ${PIPE_SLURM_SMOKE_WAIT:-120} ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  jstate=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case "$jstate" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;; esac
  sleep 0.2
done
smoke="smoke job $jid COMPLETED"
if [ "$jstate" = PENDING ] && [ -n "$(squeue --noheader -t running -o %A)" ]; then
  scancel "$jid"
  smoke="smoke job $jid still pending behind running jobs, cancelled"
  log "WARNING: $smoke ($(squeue --noheader -t running -o '%A %j' | tr '\n' ' '))"
else
  [ "$jstate" = COMPLETED ] || { scancel "$jid" 2>/dev/null; die "smoke job $jid ended '$jstate'"; }
  grep -qx hi "$D/jobs/smoke-$jid.out" || die "smoke job output wrong"
  if [ "$ACCT" = 1 ]; then
    for _ in $(seq 50); do
      sacct -n -X -P -j "$jid" -o State 2>/dev/null | grep -q COMPLETED && break
      sleep 0.2
    done
    sacct -n -X -P -j "$jid" -o State | grep -q COMPLETED || die "sacct does not report smoke job $jid"
  elif [ "$ACCT" = jobcomp ]; then
    sacct -c -n -P -j "$jid" -o State | grep -q COMPLETED || die "sacct -c does not report smoke job $jid"
  fi
fi

echo "$ACCT" > "$D/accounting"
log "cluster 'pipe' up: node $NODE, $CPUS CPUs, ${REAL_MEM}M, gpu:$NGPU, accounting=$ACCT, memory limit by $MEM_ENFORCE ($smoke)"
log "export SLURM_CONF=$SLURM_CONF"
