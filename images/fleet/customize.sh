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

# Debian's tmpfiles rule `D /tmp` makes systemd-tmpfiles-setup.service empty
# /tmp at boot (--remove). A container's /tmp starts empty from the image, so
# that wipe only races with `docker exec`: when boot is slow (a loaded machine,
# several fleets starting at once) the first task of a converge runs before
# it, and the wipe deletes the module's AnsiballZ payload
# (/tmp/ansible_*_payload_*/..._payload.zip, FileNotFoundError; the ssh
# scenario failed so, issue 22). The same file name in /etc overrides the
# vendor rule: create /tmp at boot, never empty it.
printf '%s\n' '# grayrelease fleet image: create /tmp, do not empty it at boot' \
  'd /tmp 1777 root root -' > /etc/tmpfiles.d/tmp.conf

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

# A compile cache for Python modules imported from zip files. Ansible runs
# every module from an AnsiballZ zip, and zipimport compiles each source in it
# on every run: on ansible-core 2.19, importing module_utils.basic alone took
# 0.22 s of CPU of a 0.30 s ping here, on every task of every host. The cache
# keeps each compiled module under the running user's ~/.cache, keyed by the
# source's hash and its path in the zip; behaviour is unchanged (a miss or an
# unwritable cache compiles as before). It exists to keep the test suite's CPU
# down (each fault case runs ~45 modules); real hosts run without it.
cat >> /etc/python3.11/sitecustomize.py <<'PY'


def _grayrelease_zip_code_cache():
    import zipimport
    compile_source = getattr(zipimport, "_compile_source", None)
    if compile_source is None:
        return

    def cached(pathname, source):
        import hashlib
        import marshal
        import os
        import pwd
        import sys
        inner = pathname.replace("\\", "/").rsplit(".zip/", 1)[-1]
        key = hashlib.sha256(source + b"\0" + inner.encode("utf-8", "surrogateescape")).hexdigest()
        # The user's own home, not $HOME: under sudo $HOME may be the login user's.
        path = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".cache", "python-zip-code",
                            "%s-%s" % (sys.implementation.cache_tag, key))
        try:
            with open(path, "rb") as handle:
                return marshal.loads(handle.read())
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile_source(pathname, source)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = "%s.%d" % (path, os.getpid())
            with open(tmp, "wb") as handle:
                handle.write(marshal.dumps(code))
            os.replace(tmp, path)
        except OSError:
            pass
        return code

    zipimport._compile_source = cached


_grayrelease_zip_code_cache()
PY
