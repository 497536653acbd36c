#!/usr/bin/env bash
# Test fixture: stop what slurm_up.sh STATE_DIR started. Safe to run twice or after a failed start.
# Usage (root): slurm_down.sh STATE_DIR
# It ends only processes that live in the fixture's network namespace (slurmctld, slurmd, every
# slurmstepd and job they spawned, and clients run there through nsenter), found by the
# namespace's inode and killed by pid, and munged only if slurm_up.sh started it.
set -uo pipefail

D=${1:?usage: slurm_down.sh STATE_DIR}
NS=$(cat "$D/netns" 2>/dev/null || true)
CONF=/etc/slurm/slurm.conf

netns_pids() {
  local inode pid
  inode=$(stat -L -c %i "/run/netns/$NS" 2>/dev/null) || return 0
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "net:[$inode]" ] && echo "$pid"
  done
}

if [ -n "$NS" ] && [ -e "/run/netns/$NS" ]; then
  # Cancel jobs first so slurmd tears their steps down itself.
  nsenter --net="/run/netns/$NS" timeout 10 scancel --user=root >/dev/null 2>&1 || true
  for sig in TERM KILL; do
    pids=$(netns_pids)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    for _ in $(seq 1 50); do [ -z "$(netns_pids)" ] && break; sleep 0.1; done
  done
  left=$(netns_pids)
  [ -n "$left" ] && echo "slurm_down.sh: still alive in netns $NS: $left" >&2
  ip netns del "$NS" 2>/dev/null || true
fi

if [ -s "$D/munged.pid" ]; then
  kill "$(cat "$D/munged.pid")" 2>/dev/null || true
  rm -f "$D/munged.pid"
fi

# Remove the config only if this fixture instance wrote it.
if [ -e "$CONF" ] && [ "$(head -n1 "$CONF")" = "# latentbench test fixture, state dir: $D" ]; then
  rm -f "$CONF"
fi
echo "slurm down (state $D)"
exit 0
