#!/usr/bin/env bash
# Test fixture, never for production: a single-node SLURM (Debian slurm-wlm 22.05, munge)
# whose daemons listen only inside a private network namespace that has nothing but loopback.
# Usage (root): slurm_up.sh STATE_DIR NETNS
# Then run every SLURM client (snakemake included) as: nsenter --net=/run/netns/NETNS <cmd>
# and stop everything with: slurm_down.sh STATE_DIR
# Why each step is the way it is: /work/shared/notes/infrastructure.md, section 3.
set -euo pipefail

D=${1:?usage: slurm_up.sh STATE_DIR NETNS}
NS=${2:?usage: slurm_up.sh STATE_DIR NETNS}
CONF=/etc/slurm/slurm.conf
MARK="# latentbench test fixture, state dir: $D"

[ "$(id -u)" -eq 0 ] || { echo "slurm_up.sh: must run as root" >&2; exit 2; }
for tool in slurmctld slurmd munged sinfo nsenter ip; do
  command -v "$tool" >/dev/null || { echo "slurm_up.sh: $tool not found" >&2; exit 2; }
done
# srun inside a job only finds the config at the default path (the jobstep drops SLURM_CONF),
# so the fixture must own /etc/slurm/slurm.conf: never overwrite a real site's config.
if [ -e "$CONF" ]; then
  first=$(head -n1 "$CONF")
  case "$first" in
    "# latentbench test fixture, state dir: "*)
      # another fixture's config: overwrite it only if that fixture is gone (e.g. killed run)
      other=${first#"# latentbench test fixture, state dir: "}
      if [ -s "$other/netns" ] && [ -e "/run/netns/$(cat "$other/netns")" ]; then
        echo "slurm_up.sh: another test fixture is running (state $other)" >&2; exit 4
      fi ;;
    *) echo "slurm_up.sh: $CONF exists and is not a test fixture's; refusing to overwrite it" >&2; exit 3 ;;
  esac
fi

mkdir -p "$D"/{state,spool,log} /run/munge /etc/slurm
echo "$NS" > "$D/netns"
chown munge:munge /run/munge
# The Debian postinst creates the key; create one only if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create 2>/dev/null || create-munge-key -f
  chown munge:munge /etc/munge/munge.key
fi
# munged serves a unix socket (no network); start it only if none runs, and remember that we did.
munged_alive() {
  local pid
  pid=$(cat /run/munge/munged.pid 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}
if ! munged_alive; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cat /run/munge/munged.pid > "$D/munged.pid"
fi

HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | awk -F'[ =]' '/NodeName/{for(i=1;i<=NF;i++){if($i=="CPUs")c=$(i+1);if($i=="RealMemory")m=$(i+1)}} END{print c, int(m*0.8)}')
cat > "$CONF" <<CONF_EOF
$MARK
ClusterName=latentbenchtest
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroup plugins: no cgroup.conf needed, nothing touched under /sys/fs/cgroup
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: sacct is unusable here, so the test tells the plugin to poll squeue
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# squeue keeps finished jobs this long; the plugin wants >= 120 s to trust squeue
MinJobAge=300
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF_EOF

# Only loopback in the namespace. The second loopback address satisfies glibc's
# AI_ADDRCONFIG (which ignores 127.0.0.1); without it slurmctld cannot resolve its host.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 127.0.0.2/8 dev lo
# nsenter, not `ip netns exec` (that remounts /sys and slurmd then finds no cgroup fs).
nsenter --net="/run/netns/$NS" slurmctld
nsenter --net="/run/netns/$NS" slurmd
for _ in $(seq 1 30); do
  if nsenter --net="/run/netns/$NS" timeout 5 sinfo -h -o %t 2>/dev/null | grep -q idle; then
    echo "slurm up (netns $NS, state $D)"; exit 0
  fi
  sleep 1
done
echo "slurm did not come up" >&2
tail -n 20 "$D"/log/*.log >&2 || true
exit 1
