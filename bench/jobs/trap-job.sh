#!/usr/bin/env bash
# Benchmark job: records when it started and when its TERM trap fired, to "$BENCH_RECORD", using bash's
# $EPOCHREALTIME (wall clock, microseconds, no fork), then exits 0. The foreground `sleep & wait` lets the
# trap run the moment the signal arrives. With JOB_IGNORE_TERM=1 it notes the TERM and keeps running, so
# only the keeper's SIGKILL ends it (the fence-margin worst case).
#
# BENCH_DEATH_WATCH=1: a watcher in its own session (so the keeper's signals to the job's group miss it)
# reads a pipe whose only writers are the job's group members (this shell and the sleeps it starts). It
# reads EOF when the last of them has exited, SIGKILL included, and records that moment as "dead".
# (The job's cgroup, with cgroup containment, or its process group.)
rec="${BENCH_RECORD:?BENCH_RECORD must name the record file}"
# With cgroup containment the watcher also leaves the job's cgroup (BENCH_WATCH_CGROUP: a cgroup it may
# join, e.g. the cgroup2 root as root), or the keeper's cgroup.kill would take it along.
if [ "${BENCH_DEATH_WATCH:-0}" = 1 ]; then
  exec {deathfd}> >(exec setsid bash -c '[ -z "$2" ] || echo $$ > "$2/cgroup.procs"; while read -r _; do :; done; echo "dead $0 $EPOCHREALTIME" >> "$1"' "$LEASE_KEEPER_WORK_ID" "$rec" "${BENCH_WATCH_CGROUP:-}")
fi
if [ "${JOB_IGNORE_TERM:-0}" = 1 ]; then
  trap 'echo "term $LEASE_KEEPER_WORK_ID $EPOCHREALTIME ignored" >> "$rec"' TERM
else
  trap 'echo "term $LEASE_KEEPER_WORK_ID $EPOCHREALTIME" >> "$rec"; exit 0' TERM
fi
echo "start $LEASE_KEEPER_WORK_ID $EPOCHREALTIME $$" >> "$rec"
while :; do
  sleep 3600 &
  wait $!
done
