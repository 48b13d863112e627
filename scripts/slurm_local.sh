#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to run the `slurm` launcher preset for real
# without a cluster: munge, slurmctld and slurmd from the distribution's packages (Debian/Ubuntu),
# on localhost, with this machine's CPUs and memory, no cgroups and no accounting.
#
#   bash scripts/slurm_local.sh          # start (installs slurmctld, slurmd, slurm-client, munge if missing)
#   bash scripts/slurm_local.sh status   # the daemons' pids and sinfo
#   bash scripts/slurm_local.sh stop     # stop slurmd, slurmctld, munged (by their pid files)
#
# Then: continual -m hydra/launcher=slurm hydra.launcher.partition=local hydra.launcher.gpus_per_node=0 \
#         hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=1 strategy=naive,er seed=0,1
# (docs/scaling.md, "Slurm on one machine"). Needs root: it writes /etc/slurm/slurm.conf (refusing to
# replace one it did not write) and starts the daemons. Logs: /var/log/slurm/.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by continual's scripts/slurm_local.sh"
PARTITION=local
RUN=/run/slurm
SPOOL=/var/spool/slurm
LOGS=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid

die() { echo "slurm_local: $*" >&2; exit 1; }

install_if_missing() {
  local missing=()
  for cmd in munged slurmctld slurmd sbatch; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install Slurm and munge yourself"
  echo "slurm_local: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not replacing it (move it away to use this script)"
  fi
  # the node's real CPUs, sockets, cores and memory, as slurmd sees them (it drains a node
  # whose configuration claims more); NodeAddr pins it to the loopback interface
  local node
  node=$(slurmd -C | head -n 1)
  mkdir -p "$(dirname "$CONF")"
  cat > "$CONF" <<EOF
$MARK on $(date -u +%FT%TZ): one node, localhost only.
ClusterName=continual-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# no cgroups: processes tracked through /proc, no task binding, no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# jobs share the node by cores and memory (several small jobs at once)
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
# a requeued job may start again after this many seconds (default 120)
AuthInfo=cred_expire=30
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  [ "$(id -u)" -eq 0 ] || die "run as root (it writes $CONF and starts daemons)"
  install_if_missing
  write_conf
  mkdir -p "$RUN" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" /run/munge
  chown munge:munge /run/munge
  if ! running "$MUNGE_PID"; then
    [ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- munged
  fi
  running "$RUN/slurmctld.pid" || slurmctld
  running "$RUN/slurmd.pid" || slurmd
  local node state
  node=$(hostname -s)
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case "$state" in
      idle*|mixed*|allocated*) echo "slurm_local: up: node $node $state, partition $PARTITION"; sinfo; return ;;
      drain*|down*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "node $node did not come up (state: ${state:-none}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop() {
  local f
  for f in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$MUNGE_PID"; do
    if running "$f"; then
      kill "$(cat "$f")"
      for _ in $(seq 30); do running "$f" || break; sleep 0.5; done
      echo "slurm_local: stopped $(basename "$f" .pid)"
    fi
  done
}

status() {
  local f
  for f in "$MUNGE_PID" "$RUN/slurmctld.pid" "$RUN/slurmd.pid"; do
    if running "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "$(basename "$f" .pid): stopped"; fi
  done
  running "$RUN/slurmctld.pid" && sinfo
  return 0
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
