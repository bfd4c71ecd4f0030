#!/bin/sh
# Runs inside the fresh debootstrap root (chroot) before it is imported.
# Goal: systemd as PID 1 in a container boots straight to multi-user without
# units that need a real console, hardware or kernel features a container lacks.
set -eu

# No console in a container: gettys would respawn forever.
for unit in getty.target console-getty.service getty@tty1.service \
            serial-getty@.service getty-static.service; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done
# Hardware and kernel-facing units that only fail or wait inside a container.
for unit in systemd-udevd.service systemd-udevd-control.socket \
            systemd-udevd-kernel.socket systemd-udev-trigger.service \
            systemd-udev-settle.service systemd-modules-load.service \
            sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
            sys-fs-fuse-connections.mount systemd-remount-fs.service \
            systemd-firstboot.service systemd-timesyncd.service \
            apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            e2scrub_reap.service fstrim.timer; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done

# An empty machine-id lets systemd generate a fresh one per container.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# HAProxy stays installed but off: the fleet setup enables it on balancers only.
rm -f /etc/systemd/system/multi-user.target.wants/haproxy.service
# Prometheus likewise: only the judge scenario's metrics host runs it.
rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service

# nginx and sshd likewise: the scenarios that use them start them.
rm -f /etc/systemd/system/multi-user.target.wants/nginx.service \
      /etc/systemd/system/multi-user.target.wants/ssh.service \
      /etc/systemd/system/sshd.service
# Podman's timers and its auto-update would act on their own in a test fleet.
rm -f /etc/systemd/system/timers.target.wants/podman-*.timer \
      /etc/systemd/system/default.target.wants/podman-*.service

# Keep the image lean: no package lists, caches, docs or foreign locales.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
       /usr/share/doc/* /usr/share/man/* /usr/share/info/* /var/log/*.log
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
