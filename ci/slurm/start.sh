#!/usr/bin/env bash
# Start a one-node SLURM (munged + slurmctld + slurmd) on this machine, for tests and for
# trying the HPC route without a cluster. Needs root and Debian's slurm-wlm + munge:
#   apt-get install -y slurm-wlm munge
# Usage: ci/slurm/start.sh [STATE_DIR]      (default /tmp/mcpvs-slurm)
# Then:  export SLURM_CONF=STATE_DIR/slurm.conf; sinfo; ...; ci/slurm/stop.sh STATE_DIR
# Everything (config, key, spool, logs, sockets) lives under STATE_DIR, so a system SLURM or
# munge, if any, is left alone; ports come from MCPVS_SLURM_PORT (default 16817, +1 for slurmd).
set -euo pipefail

STATE=${1:-/tmp/mcpvs-slurm}
PORT=${MCPVS_SLURM_PORT:-16817}
CPUS=${MCPVS_SLURM_CPUS:-2}
HOST=$(hostname -s)

for exe in munged slurmctld slurmd sinfo sbatch; do
    command -v "$exe" >/dev/null || { echo "start.sh: $exe not found (apt-get install -y slurm-wlm munge)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (slurmd runs jobs as their users)" >&2; exit 2; }

mkdir -p "$STATE"/{munge,spool/ctld,spool/d,log}
chmod 700 "$STATE/munge"

# RealMemory: what this machine has, less 1 GiB for the daemons, in MiB
MEM=$(awk '/MemTotal/ {printf "%d", $2/1024 - 1024}' /proc/meminfo)

cat > "$STATE/slurm.conf" <<CONF
ClusterName=mcpvs-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
MpiDefault=none
SwitchType=switch/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

# a fresh key for this test cluster only
if [ ! -s "$STATE/munge/munge.key" ]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE/munge/munge.key"
fi

export SLURM_CONF="$STATE/slurm.conf"
munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$HOST"

# wait until the node is idle (the controller and the node daemon talk)
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    if [ "$state" = idle ]; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 1
done
echo "start.sh: node did not become idle (state: ${state:-none}); logs in $STATE/log" >&2
tail -n 20 "$STATE"/log/*.log >&2 || true
exit 1
