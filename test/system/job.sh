#!/bin/bash
# The system tests' job. It runs as the unit's user in the unit's working directory (the state directory
# /var/lib/lease-keeper/<instance>) and records there, per work item, what a test needs to see from outside:
#   <work id>.log     "start <pid> <ms>", "signal <NAME> <ms>" for each signal received, "end <how> <ms>"
#   <work id>.env     its environment
#   <work id>.cgroup  its /proc/self/cgroup
#   <work id>.daemon  with JOB_DAEMON=1: the pid of a `setsid` daemon it leaves behind
# On its first stop signal it drains for JOB_DRAIN_MS (default 3000) and exits 0. One line on stdout, one on stderr.
log="$PWD/$LEASE_KEEPER_WORK_ID.log"
now() { date +%s%3N; }
rec() { echo "$* $(now)" >> "$log"; }
draining=
for s in TERM INT HUP QUIT USR1 USR2; do trap "rec signal $s; draining=1" "$s"; done
env > "$PWD/$LEASE_KEEPER_WORK_ID.env"
cat /proc/self/cgroup > "$PWD/$LEASE_KEEPER_WORK_ID.cgroup"
if [ -n "$JOB_DAEMON" ]; then
  setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
  echo $! > "$PWD/$LEASE_KEEPER_WORK_ID.daemon"
fi
echo "job-stdout $LEASE_KEEPER_WORK_ID"
echo "job-stderr $LEASE_KEEPER_WORK_ID" >&2
rec start $$
until_ms=
while :; do
  if [ -n "$draining" ] && [ -z "$until_ms" ]; then until_ms=$(( $(now) + ${JOB_DRAIN_MS:-3000} )); fi
  if [ -n "$until_ms" ] && [ "$(now)" -ge "$until_ms" ]; then rec end drained; exit 0; fi
  sleep 0.1 & wait $!
done
