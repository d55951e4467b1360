#!/bin/bash
# The inside half of the system-test sandbox (test/system/sandbox.ts starts it under `unshare`; it is not
# meant to be run by hand). Stage 1 runs as PID 1 of a fresh pid namespace with its own mount, uts, ipc and
# network (loopback only) namespaces: it moves itself into the sandbox's cgroup, then re-executes inside a new
# cgroup namespace rooted there (stage 2), so that the guest's systemd sees that cgroup as /sys/fs/cgroup.
# Stage 2 builds the guest's root: an overlay of / whose writes land in a tmpfs (gone when the namespace ends),
# fresh /proc, /sys (read-only), cgroup2, /dev, /tmp and /run; the bound directories at their own paths; then
# pivots into it and execs the machine's systemd as PID 1.
#   guest-init.sh stage1 CGROUP_DIR WORK_DIR HOSTNAME [BIND_DIR]...
set -euo pipefail

stage=$1 cg=$2 work=$3 host=$4
shift 4

if [ "$stage" = stage1 ]; then
  echo 0 > "$cg/cgroup.procs"
  exec unshare --cgroup "$0" stage2 "$cg" "$work" "$host" "$@"
fi

R=$work/mnt/root
mount --make-rprivate /
mount -t tmpfs -o mode=700,size=2g lk-system "$work/mnt"
mkdir -p "$work/mnt/upper" "$work/mnt/work" "$R"
mount -t overlay lk-system-root -o lowerdir=/,upperdir="$work/mnt/upper",workdir="$work/mnt/work" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger; do
  [ -e "$R/proc/$p" ] || continue
  mount --bind "$R/proc/$p" "$R/proc/$p"; mount -o remount,bind,ro "$R/proc/$p"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o rw,nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=16m lk-system-dev "$R/dev"
for n in null zero full random urandom tty; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev lk-system-tmp "$R/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev lk-system-run "$R/run"
for dir in "$@"; do
  # Read-only at the same path (the checkout, the node binary's prefix). The service user must be able to
  # reach it: ancestors in the overlay (or the fresh /tmp) get o+x there, which the host never sees.
  mkdir -p "$R$dir"
  mount --bind "$dir" "$R$dir"; mount -o remount,bind,ro "$R$dir"
  d=$(dirname "$dir")
  while [ "$d" != / ]; do chmod o+x "$R$d"; d=$(dirname "$d"); done
done
# Units that would reach outside, need hardware, or are not installed here: masked in the overlay only.
E=$R/etc/systemd/system
for u in systemd-timesyncd.service systemd-pstore.service getty@tty1.service getty.target console-getty.service \
         container-getty@.service e2scrub_reap.service postgresql.service timers.target remote-fs.target \
         systemd-journald-audit.socket systemd-modules-load.service kmod-static-nodes.service systemd-sysctl.service \
         systemd-binfmt.service proc-sys-fs-binfmt_misc.automount sys-kernel-config.mount sys-kernel-debug.mount \
         sys-kernel-tracing.mount sys-fs-fuse-connections.mount dev-hugepages.mount systemd-firstboot.service \
         systemd-repart.service systemd-pcrphase.service systemd-pcrphase-sysinit.service \
         systemd-machine-id-commit.service systemd-udevd.service systemd-udevd-control.socket \
         systemd-udevd-kernel.socket systemd-udev-trigger.service systemd-networkd.service systemd-resolved.service \
         dbus.socket dbus.service systemd-logind.service systemd-random-seed.service systemd-hwdb-update.service \
         ldconfig.service cron.service ssh.service; do
  rm -f "$E/$u"; ln -s /dev/null "$E/$u"
done
mkdir -p "$R/etc/systemd/system-generators"
for g in /lib/systemd/system-generators/*; do ln -sf /dev/null "$R/etc/systemd/system-generators/$(basename "$g")"; done
printf '[Unit]\nDescription=lease-keeper system-test target\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n' \
  > "$E/lk-system.target"
echo "$host" > "$R/etc/hostname"
cd "$R"; mkdir -p oldroot; pivot_root . oldroot; cd /
umount -l /oldroot; rmdir /oldroot
# systemd skips this in a container, and LoadCredential= needs it (it mounts the credentials directory).
mount --make-rshared /
exec setpriv --bounding-set -sys_module,-sys_rawio,-sys_time,-audit_control,-audit_read,-audit_write,-wake_alarm,-block_suspend,-syslog,-mac_admin,-mac_override,-sys_pacct,-dac_read_search \
  env -i container=lk-system PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=lk-system.target --show-status=no
