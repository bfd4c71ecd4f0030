# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only connection of the scale harness (bench/bench_scale.py): many
simulated app hosts on the controller, each with a release root of its own.

It is ansible.builtin.local (same options, same pipelining) except that every
command it runs for a host runs in a private mount namespace where the
rollout's single canary_root (SCALE_ROOT, an empty directory) is that host's
own directory SCALE_HOSTS_DIR/<ansible_host>, bind-mounted, with SCALE_HOST
set and SCALE_BIN (the stand-in systemctl / journalctl) first on PATH. So the
real grayrelease.canary.release module manages N separate roots under one
canary_root, as it does on N real hosts, and its restarts reach the stand-in
service of the right host. Costs one `unshare -m` + `mount --bind` (about 4 ms)
per command. Needs root (or unprivileged user namespaces) on the controller.
Not part of the collection.
"""

from __future__ import annotations

import os
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import local

DOCUMENTATION = local.DOCUMENTATION.replace("name: local", "name: scale_local", 1).replace(
    "short_description: execute on controller",
    "short_description: one simulated host per release root, on the controller (benchmark only)", 1)


class Connection(local.Connection):
    """ansible.builtin.local with a per-host release root (a bind mount in a private mount namespace)."""

    transport = "scale_local"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        host = self._play_context.remote_addr
        try:
            hosts_dir, root, bindir = (os.environ[k] for k in ("SCALE_HOSTS_DIR", "SCALE_ROOT", "SCALE_BIN"))
        except KeyError as exc:
            raise AnsibleConnectionFailure("scale_local: %s is not set (run it from bench/bench_scale.py)" % exc)
        hostdir = os.path.join(hosts_dir, host)
        if not host or os.sep in host or not os.path.isdir(hostdir):
            raise AnsibleConnectionFailure("scale_local: no simulated host %r (no directory %s)" % (host, hostdir))
        inner = "mount --bind %s %s && export SCALE_HOST=%s PATH=%s:\"$PATH\" && exec /bin/sh -c %s" % (
            shlex.quote(hostdir), shlex.quote(root), shlex.quote(host), shlex.quote(bindir), shlex.quote(cmd))
        return super().exec_command("unshare -m /bin/sh -c %s" % shlex.quote(inner), in_data=in_data,
                                    sudoable=sudoable)
