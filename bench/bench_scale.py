# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scale harness (`make bench-scale`, issue 22 items 3 and 5): the real rollout
playbook on simulated fleets of N app hosts on one machine, with real parts
where they matter.

  * ONE real HAProxy: the fleet image's, in the container `scale-lb1` (systemd,
    started as molecule starts fleet hosts) on the host network, so its
    backend's N servers are the stand-in services on the controller's
    loopback. It is the balancer of the inventory, reached over
    community.docker.docker with pipelining, as the local fleet's are.
    --balancers 2,4 runs each N with 2 and then 4 of them (scale-lb1..4,
    each with all N servers; the load goes through scale-lb1) and prints
    the ratio of their batch times (issue 22: a batch takes as long on 4).
  * N app hosts on a cheap transport: bench/scale/connection_plugins/scale_local.py,
    ansible.builtin.local with a private mount namespace per command in which
    the rollout's canary_root is that host's own directory. The REAL
    grayrelease.canary.release module stages, switches, restarts and prunes N
    separate release roots.
  * A stand-in service per host (bench/scale/standin.py): N loopback ports in
    one asyncio process; a restart really closes the host's port, reads the
    version from the host's `current` release and opens it again. The
    release module's `systemctl` is bench/scale/bin/systemctl, which asks the
    stand-in to restart that host (and `show` its state).
  * The real playbook (grayrelease.canary.rollout) with a realistic plan:
    canary_steps [1, '5%', '25%', '100%'], canary_max_unavailable '10%', every
    step that leaves hosts behind judged over one 5 s interval, under a light
    bounded load (scripts/load.py) through HAProxy.

Reported per N (default 10, 100, 300, 1000; --quick: 10, 100): wall time,
tasks started and executed (bench/callback_plugins/task_counter.py),
per-batch seconds and the coordinator's part of them
(bench/scale/callback_plugins/scale_probe.py), controller peak memory (the
ansible-playbook process and its forks, sampled from /proc: RSS summed, and
PSS, which counts pages the forks share once), the largest fact and the
largest task result. Once (--runner-n, default 100) the same run goes
through ansible-runner, and the largest job event's event_data.res is
measured in its artifacts. At --profile-n (default 1000) ansible-playbook
runs once more under cProfile (the main process: strategy, variable
manager, templating of task args for the queue, callbacks, results) and the
top functions are printed.

The engine under test is a snapshot (git archive) of --engine-ref (default
HEAD) of this repository, so edits in the work tree do not leak into a run.
Every run is bounded (--timeout per N, scaled); N=1000 runs only if an
estimate from the smaller N fits --max-seconds. Figures are printed and
written to --out (default bench/results/scale-before.txt) and
.build/bench-scale.json.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = os.path.join(REPO, "bench", "scale")
LB_PREFIX = "scale-lb"
IMAGE = "grayrelease-fleet:latest"
BACKEND = "scale"
SERVICE = "scale-app"
SOCKET = "/run/haproxy/admin.sock"
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    pass


def log(msg):
    print("[bench-scale %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def run(cmd, timeout=600, check=True, env=None, input_text=None, cwd=None):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, input=input_text,
                         check=False, cwd=cwd)
    if check and res.returncode != 0:
        raise BenchError("%s failed (rc %s):\n%s\n%s" % (" ".join(cmd)[:300], res.returncode, res.stdout[-3000:],
                                                         res.stderr[-3000:]))
    return res


def docker(*args, **kwargs):
    return run(["docker"] + list(args), **kwargs)


# -- environment -----------------------------------------------------------

def base_env(collection_root):
    env = dict(os.environ)
    env["PATH"] = os.path.join(REPO, ".venv", "bin") + os.pathsep + env.get("PATH", "")
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_LIBRARY",
                "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED",
                "ANSIBLE_CONNECTION_PLUGINS", "ANSIBLE_STDOUT_CALLBACK"):
        env.pop(key, None)
    env.update(ANSIBLE_COLLECTIONS_PATH=collection_root, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="true",
               PYTHONPATH=collection_root, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="false", PY_COLORS="0")
    return env


def playbook_env(work, collection_root, n, args, tag):
    env = base_env(collection_root)
    env.update(
        ANSIBLE_FORKS=str(args.forks), ANSIBLE_PIPELINING="true", ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_STRATEGY=args.strategy, ANSIBLE_DEPRECATION_WARNINGS="false",
        # As a fleet of this size is run: one line per task, not one per skipped host.
        ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
        ANSIBLE_REMOTE_TMP=os.path.join(work, "tmp", "remote"), ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp", "local"),
        ANSIBLE_CONNECTION_PLUGINS=os.path.join(SCALE, "connection_plugins"),
        ANSIBLE_CALLBACK_PLUGINS=os.pathsep.join([os.path.join(REPO, "bench", "callback_plugins"),
                                                  os.path.join(SCALE, "callback_plugins")]),
        ANSIBLE_CALLBACKS_ENABLED="task_counter,scale_probe",
        TASK_COUNTER_OUT=os.path.join(work, "out", "%s-tasks.json" % tag),
        SCALE_PROBE_OUT=os.path.join(work, "out", "%s-probe.json" % tag),
        SCALE_HOSTS_DIR=os.path.join(work, "hosts"), SCALE_ROOT=os.path.join(work, "root"),
        SCALE_BIN=os.path.join(SCALE, "bin"), SCALE_CONTROL_PORT=str(args.control_port))
    env.pop("TASK_COUNTER_BATCH_RE", None)
    return env


def snapshot_collection(work, ref):
    root = os.path.join(work, "collections")
    target = os.path.join(root, "ansible_collections", "grayrelease", "canary")
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", REPO, "archive", ref, "galaxy.yml", "meta", "playbooks", "plugins",
                              "roles"], capture_output=True, check=False, timeout=120)
    if archive.returncode != 0:
        raise BenchError("git archive %s failed: %s" % (ref, archive.stderr.decode()[-500:]))
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True, timeout=120)
    commit = run(["git", "-C", REPO, "rev-parse", "--short", ref]).stdout.strip()
    # A ref whose coordinator does not even import is refused here, not 20 minutes later.
    check = subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), "-c",
                            "import ansible_collections.grayrelease.canary.plugins.action.rollout_state"],
                           capture_output=True, text=True, env=base_env(root), check=False, timeout=120)
    if check.returncode != 0:
        raise BenchError("the engine at %s (%s) does not import: %s; pass --engine-ref (SCALE_ENGINE_REF) of a "
                         "commit whose engine is complete" % (ref, commit, check.stderr.strip().splitlines()[-1:]))
    return root, commit


def port_free(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the balancer ------------------------------------------------------------

def lb_name(index):
    return "%s%d" % (LB_PREFIX, index)


def lb_frontend_port(args, index):
    """Balancer 1 listens on --frontend-port, balancer k on 10 (k - 1) above it: all share the host network."""
    return args.frontend_port + 10 * (index - 1)


def lb_remove_all():
    names = docker("ps", "-a", "--format", "{{.Names}}", check=False, timeout=60).stdout.split()
    gone = [name for name in names if re.match(r"^%s\d+$" % LB_PREFIX, name)]
    if gone:
        docker("rm", "-f", *gone, check=False, timeout=120)


def lb_up(index):
    lb = lb_name(index)
    docker("rm", "-f", lb, check=False, timeout=60)
    # As molecule/default/molecule.yml starts fleet hosts (ENVIRONMENT.md), on
    # the host network: HAProxy's servers are the stand-ins on loopback.
    docker("run", "-d", "--name", lb, "--hostname", lb, "--network", "host",
           "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--cgroupns", "host",
           "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
           IMAGE, "/lib/systemd/systemd", timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = docker("exec", lb, "systemctl", "is-system-running", check=False, timeout=30).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    else:
        raise BenchError("%s: systemd did not come up in 90 s" % lb)
    # Nothing the image starts may listen beside HAProxy on the shared network namespace.
    for unit in ("nginx", "ssh", "prometheus"):
        docker("exec", lb, "systemctl", "stop", unit, check=False, timeout=60)
    # A backend of 1000 servers with checks needs more than the default 1024 descriptors.
    docker("exec", "-i", lb, "sh", "-c", "mkdir -p /etc/systemd/system/haproxy.service.d && "
           "cat > /etc/systemd/system/haproxy.service.d/scale.conf && systemctl daemon-reload",
           input_text="[Service]\nLimitNOFILE=65536\n", timeout=60)


HAPROXY_CFG = """# bench/bench_scale.py: the scale harness's balancer, %(n)d servers
global
    log /dev/log local0 notice
    chroot /var/lib/haproxy
    stats socket %(socket)s mode 660 level admin
    stats timeout 30s
    user haproxy
    group haproxy
    maxconn 4000

defaults
    log global
    mode http
    option dontlognull
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe_%(backend)s
    bind 127.0.0.1:%(frontend)d
    default_backend %(backend)s

backend %(backend)s
    balance roundrobin
    option httpchk GET /healthz
    default-server check inter %(inter)s fall 2 rise 2
%(servers)s
"""

LB_STAT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(%r)
s.sendall(b"show stat -1 4 -1\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
rows = data.decode().splitlines()
head = rows[0].lstrip("# ").split(",")
out = {}
for line in rows[1:]:
    if not line.strip():
        continue
    row = dict(zip(head, line.split(",")))
    if row["pxname"] == sys.argv[1]:
        out[row["status"]] = out.get(row["status"], 0) + 1
print(out)
""" % SOCKET


def lb_configure(hosts, args, balancers):
    """Every balancer in use on these hosts, fresh; the ones a run with fewer balancers leaves out stopped."""
    status = {}
    for index in range(1, balancers + 1):
        status[lb_name(index)] = lb_configure_one(lb_name(index), lb_frontend_port(args, index), hosts, args)
    for index in range(balancers + 1, max(args.balancer_counts) + 1):
        # Stopped, not removed: its health checks would load the stand-ins.
        docker("exec", lb_name(index), "systemctl", "stop", "haproxy", check=False, timeout=60)
    return status


def lb_configure_one(lb, frontend, hosts, args):
    servers = "\n".join("    server %s 127.0.0.1:%d" % (name, port) for name, port in hosts)
    cfg = HAPROXY_CFG % {"n": len(hosts), "socket": SOCKET, "backend": BACKEND, "frontend": frontend,
                         "inter": args.check_inter, "servers": servers}
    docker("exec", "-i", lb, "sh", "-c", "cat > /etc/haproxy/haproxy.cfg", input_text=cfg, timeout=30)
    docker("exec", lb, "haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg", timeout=30)
    # A fresh run: no lock or claims of an earlier one, fresh runtime state.
    docker("exec", lb, "rm", "-rf", "/var/lib/grayrelease-canary", timeout=30)
    docker("exec", lb, "systemctl", "reset-failed", "haproxy", check=False, timeout=60)
    docker("exec", lb, "systemctl", "restart", "haproxy", timeout=60)
    deadline = time.monotonic() + 120
    status = {}
    while time.monotonic() < deadline:
        res = docker("exec", lb, "python3", "-c", LB_STAT, BACKEND, check=False, timeout=30)
        if res.returncode == 0:
            status = eval(res.stdout.strip() or "{}", {})  # a dict literal our own snippet printed
            if status.get("UP", 0) == len(hosts):
                return status
        time.sleep(1)
    raise BenchError("HAProxy on %s: not every server UP after 120 s: %s" % (lb, status))


# -- the simulated hosts -------------------------------------------------------

def build_releases(work):
    dist = os.path.join(work, "dist")
    os.makedirs(dist)
    paths = {}
    for version in ("v1", "v2"):
        out = run([os.path.join(REPO, "scripts", "build-release.sh"), version, "--out", dist], timeout=60)
        paths[version] = out.stdout.strip().splitlines()[-1]
        if not os.path.isfile(paths[version]):
            raise BenchError("release archive %s missing" % paths[version])
    return paths


def seed_template(work, collection_root, archive):
    """One host's root on v1, made by the release module itself; every host starts as a copy."""
    template = os.path.join(work, "template")
    env = base_env(collection_root)
    env.update(ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp", "local"),
               ANSIBLE_REMOTE_TMP=os.path.join(work, "tmp", "remote"))
    run(["ansible", "localhost", "-c", "local", "-m", "grayrelease.canary.release", "-a",
         json.dumps({"root": template, "version": "v1", "src": archive, "state": "current"})],
        timeout=120, env=env)
    if os.readlink(os.path.join(template, "current")) != "releases/v1":
        raise BenchError("template root not on v1")
    return template


def make_hosts(work, template, n, port_base):
    hosts_dir = os.path.join(work, "hosts")
    shutil.rmtree(hosts_dir, ignore_errors=True)
    os.makedirs(hosts_dir)
    hosts = [("h%04d" % i, port_base + i) for i in range(1, n + 1)]
    for name, _port in hosts:
        shutil.copytree(template, os.path.join(hosts_dir, name), symlinks=True)
    return hosts


def write_inventory(work, hosts, args, balancers):
    lines = ["all:", "  vars:",
             "    canary_backend: %s" % BACKEND, "    canary_service: %s" % SERVICE,
             "    canary_root: %s" % os.path.join(work, "root"),
             "    canary_haproxy_socket: %s" % SOCKET, "    canary_port: %d" % args.port_base,
             "  children:", "    balancers:", "      vars:",
             "        ansible_connection: community.docker.docker",
             "        ansible_python_interpreter: /usr/bin/python3",
             "        ansible_pipelining: true",
             "      hosts:"]
    lines += ["        %s:" % lb_name(index) for index in range(1, balancers + 1)]
    lines += ["    app:", "      vars:",
              "        ansible_connection: scale_local",
              "        ansible_python_interpreter: /usr/bin/python3",
              "        ansible_pipelining: true",
              "      hosts:"]
    zones = ("zone-a", "zone-b", "zone-c")
    for i, (name, port) in enumerate(hosts):
        lines.append("        %s: {ansible_host: %s, canary_zone: %s, canary_health_url: 'http://127.0.0.1:%d/healthz', "
                     "canary_sample_url: 'http://127.0.0.1:%d/'}" % (name, name, zones[i % 3], port, port))
    path = os.path.join(work, "inventory-%d-%dlb.yml" % (len(hosts), balancers))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class Standin:
    def __init__(self, work, hosts, args):
        self.work = work
        self.args = args
        self.hosts_file = os.path.join(work, "standin-hosts.txt")
        with open(self.hosts_file, "w", encoding="utf-8") as handle:
            handle.write("".join("%s:%d\n" % h for h in hosts))
        self.stop_file = os.path.join(work, "standin.stop")
        self.ready_file = os.path.join(work, "standin.ready")
        self.stats_file = os.path.join(work, "standin-stats.json")
        self.proc = None

    def start(self):
        for path in (self.stop_file, self.ready_file, self.stats_file):
            if os.path.exists(path):
                os.unlink(path)
        self.log = open(os.path.join(self.work, "standin.log"), "a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SCALE, "standin.py"), "--hosts-file", self.hosts_file,
             "--hosts-dir", os.path.join(self.work, "hosts"), "--control-port", str(self.args.control_port),
             "--max-seconds", str(self.args.timeout * 3 + 600), "--stop-file", self.stop_file,
             "--ready-file", self.ready_file, "--stats-out", self.stats_file],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("stand-in services did not start (see %s/standin.log)" % self.work)
            time.sleep(0.2)

    def stats(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.args.control_port, timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self):
        if self.proc is None:
            return
        open(self.stop_file, "w", encoding="utf-8").close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()


class Load:
    """scripts/load.py on the controller against HAProxy's frontend on loopback, bounded."""

    def __init__(self, work, args, tag):
        self.out = os.path.join(work, "out", "%s-load.json" % tag)
        self.stop_file = os.path.join(work, "load.stop")
        self.args = args
        self.proc = None

    def start(self, seconds):
        if self.args.load_rate <= 0:
            return
        if os.path.exists(self.stop_file):
            os.unlink(self.stop_file)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "scripts", "load.py"), "--url",
             "http://127.0.0.1:%d/" % self.args.frontend_port, "--rate", str(self.args.load_rate), "--workers", "2",
             "--duration", str(int(seconds)), "--max-requests", "200000", "--stop-file", self.stop_file,
             "--out", self.out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1)

    def stop(self):
        if self.proc is None:
            return None
        open(self.stop_file, "w", encoding="utf-8").close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        try:
            with open(self.out, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None


# -- memory sampling -------------------------------------------------------------

def _proc_parents():
    """{pid: parent pid} of every process now."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _descendants(root):
    """root and every process below it (Ansible's workers call setsid: a session would miss them)."""
    children = {}
    for pid, parent in _proc_parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _proc_cmd(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _proc_rss_pss(pid, with_pss):
    rss = pss = 0
    try:
        with open("/proc/%d/statm" % pid, "rb") as handle:
            rss = int(handle.read().split()[1]) * PAGE
        if with_pss:
            with open("/proc/%d/smaps_rollup" % pid, "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        pss = int(line.split()[1]) * 1024
                        break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class MemorySampler(threading.Thread):
    """Peak memory of the controller: ansible-playbook and its forks (the processes
    below the one started whose command line is ansible-playbook's), RSS summed and PSS summed;
    apart, the other processes below it (docker exec clients, the simulated
    hosts' module runs: on a real fleet these run on the hosts)."""

    def __init__(self, session, interval=0.5):
        super().__init__(daemon=True)
        self.session = session
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak = {"controller_rss": 0, "controller_pss": 0, "main_rss": 0, "controller_procs": 0,
                     "other_rss": 0, "samples": 0}

    def run(self):
        tick = 0
        while not self.stop_event.is_set():
            tick += 1
            with_pss = tick % 2 == 1
            ctl_rss = ctl_pss = other = procs = main = 0
            for pid in _descendants(self.session):
                cmd = _proc_cmd(pid)
                is_controller = "ansible-playbook" in cmd or "profile_playbook.py" in cmd
                rss, pss = _proc_rss_pss(pid, with_pss and is_controller)
                if is_controller:
                    ctl_rss += rss
                    ctl_pss += pss
                    procs += 1
                    if pid == self.session:
                        main = rss
                else:
                    other += rss
            p = self.peak
            p["samples"] += 1
            p["controller_rss"] = max(p["controller_rss"], ctl_rss)
            if with_pss:
                p["controller_pss"] = max(p["controller_pss"], ctl_pss)
            p["main_rss"] = max(p["main_rss"], main)
            p["controller_procs"] = max(p["controller_procs"], procs)
            p["other_rss"] = max(p["other_rss"], other)
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)
        return self.peak


# -- one run ----------------------------------------------------------------------

def extra_vars(work, artifacts, n, args, tag):
    return dict({
        "canary_version": "v2", "canary_artifact": artifacts["v2"],
        "canary_steps": [1, "5%", "25%", "100%"], "canary_max_unavailable": args.max_unavailable,
        "canary_analysis_count": 1, "canary_analysis_interval": args.analysis_interval,
        "canary_judge_every_step": True,
        # The harness's traffic is a few requests per second: a short window is
        # often inconclusive, which here must not stop the run (a failing
        # verdict still would).
        "canary_on_inconclusive": "promote",
        "canary_report_dir": os.path.join(work, "reports", tag),
    }, **json.loads(args.extra_vars))


def prepare(work, template, n, args, balancers):
    hosts = make_hosts(work, template, n, args.port_base)
    inventory = write_inventory(work, hosts, args, balancers)
    standin = Standin(work, hosts, args)
    standin.start()
    try:
        status = lb_configure(hosts, args, balancers)
    except BaseException:
        standin.stop()
        raise
    log("N=%d: %d hosts on v1, stand-ins up, HAProxy backend %s on %d balancer(s): %s"
        % (n, n, BACKEND, balancers, status))
    return hosts, inventory, standin


def run_playbook(work, collection_root, inventory, artifacts, n, args, tag, timeout, profile=None, runner=False):
    os.makedirs(os.path.join(work, "out"), exist_ok=True)
    env = playbook_env(work, collection_root, n, args, tag)
    ev = os.path.join(work, "out", "%s-extra.json" % tag)
    with open(ev, "w", encoding="utf-8") as handle:
        json.dump(extra_vars(work, artifacts, n, args, tag), handle)
    playbook = "grayrelease.canary.rollout"
    cmd = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i", inventory, playbook, "-e", "@" + ev]
    if profile:
        cmd = [sys.executable, os.path.join(SCALE, "profile_playbook.py")] + cmd[1:]
        env["SCALE_PROFILE_OUT"] = profile
    if runner:
        cmd = [sys.executable, os.path.join(SCALE, "runner_run.py"), "--private-dir", os.path.join(work, "runner-" + tag),
               "--inventory", inventory, "--playbook", os.path.join(collection_root, "ansible_collections", "grayrelease",
                                                                     "canary", "playbooks", "rollout.yml"),
               "--extra-vars", ev, "--out", os.path.join(work, "out", "%s-runner.json" % tag)]
    load = Load(work, args, tag)
    load.start(timeout + 60)
    log_path = os.path.join(work, "out", "%s.log" % tag)
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    timed_out = False
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            if profile:
                # The profile of what it did so far (profile_playbook.py dumps on SIGUSR1).
                os.kill(proc.pid, signal.SIGUSR1)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not os.path.exists(profile):
                    time.sleep(1)
                time.sleep(5)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait(timeout=30)
    wall = round(time.monotonic() - t0, 1)
    memory = sampler.stop()
    load_result = load.stop()
    result = {"n": n, "tag": tag, "rc": rc, "timed_out": timed_out, "wall_seconds": wall, "memory": memory,
              "loadavg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
              "load": None if load_result is None else {
                  k: load_result.get(k) for k in ("requests", "failed", "statuses", "versions", "errors")},
              "log": log_path}
    for key, name in (("tasks", "%s-tasks.json"), ("probe", "%s-probe.json"), ("runner", "%s-runner.json")):
        path = os.path.join(work, "out", name % tag)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                result[key] = json.load(handle)
    report = os.path.join(work, "reports", tag, "report.json")
    if os.path.exists(report):
        with open(report, encoding="utf-8") as handle:
            rep = json.load(handle)
        result["decision"] = rep.get("decision")
        result["plan"] = rep.get("plan")
        result["report_seconds"] = rep.get("seconds")
    return result


def summarize(result, standin_stats):
    """The figures of one run, from the callbacks' files."""
    s = {"n": result["n"], "rc": result["rc"], "timed_out": result["timed_out"], "wall": result["wall_seconds"],
         "loadavg": result["loadavg"],
         "decision": result.get("decision")}
    plan = result.get("plan")
    sizes = [len(b) for b in plan] if isinstance(plan, list) and all(isinstance(b, list) for b in plan) else None
    s["batch_sizes"] = sizes
    tasks = result.get("tasks")
    probe = result.get("probe")
    if tasks:
        s["tasks_started"] = tasks["tasks_started"]
        s["tasks_executed"] = tasks["tasks_executed"]
        s["batches"] = tasks["batches"]
    elif probe:
        # A run stopped at its time limit: what the probe wrote at its last batch start.
        s["tasks_started"] = probe["tasks"]
        s["tasks_executed"] = sum(1 for t in probe["task_list"] if t.get("kind") != "skip")
        s["batches"] = sum(1 for seg in probe["segments"] if seg["segment"].startswith("batch "))
        s["partial"] = probe.get("partial")
    if probe:
        segs = probe["segments"]
        batches = [seg for seg in segs if seg["segment"].startswith("batch ")]
        s["batch_table"] = [dict(seg, size=(sizes[i] if sizes and i < len(sizes) else None))
                            for i, seg in enumerate(batches)]
        pre = [seg for seg in segs if seg["segment"] == "preflight"]
        fin = [seg for seg in segs if seg["segment"] == "finish"]
        s["preflight_seconds"] = pre[0]["seconds"] if pre else None
        s["finish_seconds"] = fin[0]["seconds"] if fin else None
        if batches:
            s["batch_seconds_median"] = statistics.median(b["seconds"] for b in batches)
            s["coordinator_seconds_per_batch_median"] = statistics.median(b["coordinator_seconds"] for b in batches)
            s["skip_seconds_per_batch_median"] = statistics.median(b["skip_seconds"] for b in batches)
            s["tasks_per_batch_median"] = statistics.median(b["tasks"] for b in batches)
            s["canary_batch"] = {
                k: batches[0][k] for k in ("seconds", "coordinator_seconds", "work_seconds", "skip_seconds", "tasks")}
        s["largest_fact"] = probe["largest_fact"]
        s["largest_facts"] = probe["largest_facts"]
        s["largest_result"] = probe["largest_result"]
        s["callback_sizing_seconds"] = probe["sizing_seconds"]
        coord = [t for t in probe["task_list"] if t.get("kind") == "coordinator"]
        s["coordinator_tasks"] = len(coord)
        s["coordinator_seconds_total"] = round(sum(t["seconds"] for t in coord), 2)
        s["skip_seconds_total"] = round(sum(t["seconds"] for t in probe["task_list"] if t.get("kind") == "skip"), 2)
    m = result["memory"]
    s["memory_mb"] = {
        k: round(m[k] / 1048576.0, 1) for k in ("controller_rss", "controller_pss", "main_rss", "other_rss")}
    s["memory_mb"]["controller_procs"] = m["controller_procs"]
    s["load"] = result.get("load")
    if standin_stats:
        s["hosts_after"] = {"versions": standin_stats["versions"], "restarts": standin_stats["restarts"],
                            "up": standin_stats["up"]}
    if result.get("runner"):
        s["runner"] = result["runner"]
    return s


def one_n(work, collection_root, template, artifacts, n, args, timeout, tag=None, profile=None, runner=False,
          balancers=1):
    tag = tag or ("n%d" % n if balancers == 1 else "n%d-%dlb" % (n, balancers))
    hosts, inventory, standin = prepare(work, template, n, args, balancers)
    try:
        log("N=%d: ansible-playbook grayrelease.canary.rollout%s (timeout %d s, forks %d)"
            % (n, " under cProfile" if profile else " through ansible-runner" if runner else "", timeout, args.forks))
        result = run_playbook(work, collection_root, inventory, artifacts, n, args, tag, timeout, profile, runner)
        try:
            stats = standin.stats()
        except OSError:
            stats = None
    finally:
        standin.stop()
    s = summarize(result, stats)
    s["tag"] = tag
    s["balancers"] = balancers
    s["log"] = result["log"]
    log("N=%d: rc %s%s, wall %.1f s, decision %s, hosts after %s" % (
        n, result["rc"], " TIMED OUT" if result["timed_out"] else "", result["wall_seconds"], s.get("decision"),
        (s.get("hosts_after") or {}).get("versions")))
    return s


# -- ansible-runner / profile --------------------------------------------------------

def profile_top(path, count=25):
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    tottime = out.getvalue()
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    return tottime, out.getvalue()


def profile_lines(prof, n, tag):
    if not os.path.exists(prof):
        return ["", "no profile written at N=%d (%s)" % (n, tag)]
    build = os.path.join(REPO, ".build")
    os.makedirs(build, exist_ok=True)
    shutil.copy(prof, os.path.join(build, "bench-scale-profile-n%d.prof" % n))
    tottime, cumulative = profile_top(prof)
    return (["", "== cProfile of ansible-playbook's main process at N=%d (%s; .build/bench-scale-profile-n%d.prof),"
             " by own time" % (n, tag, n)] + tottime.strip().splitlines()[-30:]
            + ["", "== the same, by cumulative time"] + cumulative.strip().splitlines()[-45:])


# -- output ------------------------------------------------------------------------

def mb(value):
    return "%.0f MB" % value


def kb(value):
    return "%.1f KB" % (value / 1024.0)


def render(meta, summaries, extra):
    lines = []
    w = lines.append
    w("bench-scale: the real rollout on simulated fleets (bench/bench_scale.py)")
    w("engine %s (snapshot of %s), ansible-core %s, strategy %s, forks %d, plan %s, max_unavailable %s,"
      % (meta["engine_commit"], meta["engine_ref"], meta["ansible_core"], meta["strategy"], meta["forks"],
         meta["steps"], meta["max_unavailable"]))
    w("analysis 1 x %d s per judged step, load %g req/s through HAProxy, machine %d cores, started %s"
      % (meta["analysis_interval"], meta["load_rate"], os.cpu_count() or 0, meta["started"]))
    w("")
    w("%-6s %-4s %-8s %-9s %-7s %-15s %-8s %-11s %-12s %-12s %-10s %-10s %-11s %-11s" % (
        "N", "lbs", "rc", "decision", "wall s", "tasks st/exec", "batches", "batch s med", "coord s/btch",
        "skip s/btch", "ctl RSS", "ctl PSS", "max fact", "max result"))
    for s in summaries:
        w("%-6d %-4d %-8s %-9s %-7.1f %-15s %-8s %-11s %-12s %-12s %-10s %-10s %-11s %-11s" % (
            s["n"], s.get("balancers", 1), "%s%s" % (s["rc"], "/TO" if s["timed_out"] else ""), s.get("decision") or "-", s["wall"],
            "%s/%s" % (s.get("tasks_started", "-"), s.get("tasks_executed", "-")), s.get("batches", "-"),
            "%.2f" % s["batch_seconds_median"] if "batch_seconds_median" in s else "-",
            "%.2f" % s["coordinator_seconds_per_batch_median"] if "coordinator_seconds_per_batch_median" in s else "-",
            "%.2f" % s["skip_seconds_per_batch_median"] if "skip_seconds_per_batch_median" in s else "-",
            mb(s["memory_mb"]["controller_rss"]), mb(s["memory_mb"]["controller_pss"]),
            kb(s["largest_fact"]["bytes"]) if s.get("largest_fact") else "-",
            kb(s["largest_result"]["bytes"]) if s.get("largest_result") else "-"))
    w("")
    w("coord s/btch: median seconds per batch of the coordinator's tasks (grayrelease.canary.rollout_state, each from")
    w("its start to the next task's start); skip s/btch: tasks every host skipped; ctl RSS: peak of ansible-playbook")
    w("and its forks summed (shared pages counted in every fork), ctl PSS: the same with shared pages counted once.")
    w("lbs: balancers in the balancers group (each a real HAProxy with all N servers).")
    lines.extend(balancer_ratios(summaries))
    for s in summaries:
        w("")
        w("== N=%d (%s)%s; machine load average %s at the start, %s at the end" % (
            s["n"], s["tag"], "" if s["rc"] == 0 else "  log: %s" % s["log"], s["loadavg"][0], s["loadavg"][1]))
        w("  wall %.1f s: pre-flight %s s, batches, finish %s s; %s coordinator tasks took %s s in all, skipped tasks %s s"
          % (s["wall"], s.get("preflight_seconds"), s.get("finish_seconds"), s.get("coordinator_tasks"),
             s.get("coordinator_seconds_total"), s.get("skip_seconds_total")))
        if s.get("batch_table"):
            w("  batch  size  seconds  coordinator  work   skipped  tasks")
            for i, b in enumerate(s["batch_table"], 1):
                w("  %5d  %4s  %7.2f  %11.2f  %6.2f  %7.2f  %5d" % (
                    i, b.get("size") or "?", b["seconds"], b["coordinator_seconds"], b["work_seconds"],
                    b["skip_seconds"], b["tasks"]))
        if s.get("largest_fact"):
            f, r = s["largest_fact"], s["largest_result"]
            w("  largest fact: %s (%d bytes) from '%s' (%s); largest result: %d bytes from '%s' on %s"
              % (f.get("fact"), f["bytes"], f.get("task"), f.get("segment"), r["bytes"], r.get("task"), r.get("host")))
        m = s["memory_mb"]
        w("  controller peak: RSS %s summed over %d processes (main process %s), PSS %s; other processes of the run"
          " (docker exec clients, the simulated hosts' module runs) %s"
          % (mb(m["controller_rss"]), m["controller_procs"], mb(m["main_rss"]), mb(m["controller_pss"]),
             mb(m["other_rss"])))
        if s.get("load"):
            ld = s["load"]
            w("  load: %s requests, failed %s, versions %s" % (ld.get("requests"), ld.get("failed"), ld.get("versions")))
        if s.get("hosts_after"):
            w("  stand-in services after: versions %s, restarts %s, up %s" % (
                s["hosts_after"]["versions"], s["hosts_after"]["restarts"], s["hosts_after"]["up"]))
        if s.get("runner"):
            r = s["runner"]
            w("  ansible-runner: rc %s, %s job events (%s in all), largest event file %s, largest event_data.res %s"
              " ('%s' on %s, event %s); events with res over 100 KB: %s, over 700,000 bytes (AWX drops): %s"
              % (r.get("rc"), r.get("events"), kb(r.get("total_bytes", 0)), kb(r.get("largest_event_bytes", 0)),
                 kb(r.get("largest_res_bytes", 0)), r.get("largest_res_task"), r.get("largest_res_host"),
                 r.get("largest_res_event"), r.get("res_over_100k"), r.get("res_over_700k")))
    for line in extra:
        w(line)
    return "\n".join(lines) + "\n"


def balancer_ratios(summaries):
    """Issue 22's 'time per batch independent of the number of balancers': per N, most balancers against fewest.

    Each side is the median over its rounds of a run's figure (a run's batch
    median, its coordinator seconds per batch, its wall).
    """
    out = []
    plain = [s for s in summaries if s["rc"] == 0 and "batch_seconds_median" in s
             and s["tag"] in ("n%d" % s["n"], "n%d-%dlb" % (s["n"], s.get("balancers", 1)))]
    keys = (("batch_seconds_median", "batch s med"), ("coordinator_seconds_per_batch_median", "coord s/btch"),
            ("wall", "wall s"))
    for n in sorted(set(s["n"] for s in plain)):
        counts = sorted(set(s["balancers"] for s in plain if s["n"] == n))
        if len(counts) < 2:
            continue
        sides = []
        for count in (counts[-1], counts[0]):
            runs = [s for s in plain if s["n"] == n and s["balancers"] == count]
            sides.append((len(runs), dict((key, statistics.median(s[key] for s in runs)) for key, dummy in keys)))
        (n_many, many), (n_few, few) = sides
        out.append("N=%d, %d vs %d balancers (%d and %d rounds): %s" % (
            n, counts[-1], counts[0], n_many, n_few, ", ".join(
                "%s %.2f vs %.2f (ratio %.2f)" % (label, many[key], few[key], many[key] / few[key])
                for key, label in keys)))
    return [""] + out if out else []


def estimate(summaries, n):
    pts = [(s["n"], s["wall"]) for s in summaries if s["rc"] == 0 and not s["timed_out"]]
    if len(pts) < 2:
        return None
    (n1, w1), (n2, w2) = pts[-2], pts[-1]
    slope = (w2 - w1) / float(n2 - n1)
    return w2 + slope * (n - n2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,300,1000", help="comma-separated N")
    ap.add_argument("--quick", action="store_true", help="N = 10, 100 only")
    ap.add_argument("--forks", type=int, default=int(os.environ.get("SCALE_FORKS", "50")))
    ap.add_argument("--strategy", default=os.environ.get("SCALE_STRATEGY", "ansible.builtin.linear"),
                    help="the play's strategy: ansible.builtin.linear (a user's default) or grayrelease.canary.linear")
    ap.add_argument("--max-unavailable", default="10%")
    ap.add_argument("--analysis-interval", type=int, default=5)
    ap.add_argument("--load-rate", type=float, default=20.0, help="req/s through HAProxy during a run, 0 = none")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds, the longest any one playbook run may take")
    ap.add_argument("--max-seconds", type=int, default=1200,
                    help="run the largest N (over 300) only if the estimate from the smaller ones is below this; 0 = always")
    ap.add_argument("--runner-n", type=int, default=100, help="run this N once more through ansible-runner; 0 = no")
    ap.add_argument("--profile-n", type=int, default=1000, help="run this N once more under cProfile; 0 = no")
    ap.add_argument("--engine-ref", default=os.environ.get("SCALE_ENGINE_REF", "HEAD"), help="git ref of this repository whose engine is measured")
    ap.add_argument("--port-base", type=int, default=32100, help="host i listens on port-base + i")
    ap.add_argument("--frontend-port", type=int, default=32000)
    ap.add_argument("--control-port", type=int, default=32001)
    ap.add_argument("--check-inter", default="2s", help="HAProxy's health check interval per server")
    ap.add_argument("--extra-vars", default="{}",
                    help="JSON object of rollout variables over the harness's, e.g. hooks to measure what they cost")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "scale-before.txt"))
    ap.add_argument("--balancers", default="1",
                    help="comma-separated balancer counts, each N run with each (e.g. 2,4: is a batch as fast on 4?)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and the scale-lbK containers")
    args = ap.parse_args(argv)
    try:
        args.balancer_counts = [int(x) for x in args.balancers.split(",") if x.strip()]
    except ValueError:
        args.balancer_counts = []
    if not args.balancer_counts or min(args.balancer_counts) < 1 or max(args.balancer_counts) > 8:
        print("bench-scale: --balancers %r must be counts from 1 to 8, e.g. 2,4" % args.balancers, file=sys.stderr)
        return 2
    sizes = [10, 100] if args.quick else [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.quick:
        args.profile_n = args.profile_n if args.profile_n in sizes else 0
    if os.geteuid() != 0:
        print("bench-scale needs root on the controller (scale_local bind-mounts each host's release root in a"
              " private mount namespace)", file=sys.stderr)
        return 2
    lb_remove_all()   # a kept one of an earlier run holds its frontend port
    frontends = [lb_frontend_port(args, index) for index in range(1, max(args.balancer_counts) + 1)]
    busy = [p for p in frontends + [args.control_port] + [args.port_base + i for i in range(1, max(sizes) + 1)]
            if not port_free(p)]
    if busy:
        print("bench-scale: loopback ports in use: %s (choose --port-base / --frontend-port / --control-port)"
              % busy[:10], file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="scale-", dir="/tmp")
    for sub in ("root", "out", "reports", "tmp/local", "tmp/remote"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    try:
        collection_root, commit = snapshot_collection(work, args.engine_ref)
    except BenchError as exc:
        print("bench-scale: %s" % exc, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        return 2
    core = run([os.path.join(REPO, ".venv", "bin", "python"), "-c",
                "import ansible.release as r; print(r.__version__)"]).stdout.strip()
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "engine_ref": args.engine_ref,
            "engine_commit": commit, "ansible_core": core, "strategy": args.strategy, "forks": args.forks,
            "steps": "[1, 5%, 25%, 100%]",
            "max_unavailable": args.max_unavailable, "analysis_interval": args.analysis_interval,
            "load_rate": args.load_rate, "sizes": sizes, "balancers": args.balancer_counts, "work": work}
    log("work directory %s, engine %s @ %s" % (work, args.engine_ref, commit))
    summaries, extra, errors = [], [], []
    try:
        artifacts = build_releases(work)
        template = seed_template(work, collection_root, artifacts["v1"])
        for index in range(1, max(args.balancer_counts) + 1):
            lb_up(index)
        for n in sizes:
            timeout = min(args.timeout, 600 + 6 * n)
            # Only the largest N of a sweep that measured smaller ones first, and only over 300 hosts.
            if n == max(sizes) and n > 300 and len(sizes) > 1 and args.max_seconds > 0:
                guess = estimate(summaries, n)
                if guess is not None and guess > args.max_seconds:
                    extra.append("N=%d not run: estimated %.0f s from the smaller N, over --max-seconds %d"
                                 % (n, guess, args.max_seconds))
                    log(extra[-1])
                    continue
                if guess is not None:
                    log("N=%d: estimated %.0f s from N=%d and N=%d" % (
                        n, guess, summaries[-2]["n"], summaries[-1]["n"]))
                    meta["estimate_%d" % n] = round(guess)
            # Each N on every balancer count in turn (2,4,2,4 interleaves rounds), the first one profiled.
            for round_, balancers in enumerate(args.balancer_counts):
                prof = os.path.join(work, "out", "profile-n%d.prof" % n) if n == args.profile_n and not round_ else None
                summaries.append(one_n(work, collection_root, template, artifacts, n, args, timeout,
                                       tag="n%d-profiled" % n if prof else None, profile=prof, balancers=balancers))
                if prof:
                    extra += profile_lines(prof, n, summaries[-1]["tag"])
        if args.runner_n:
            r = one_n(work, collection_root, template, artifacts, args.runner_n, args,
                      min(args.timeout, 300 + 4 * args.runner_n), tag="runner-n%d" % args.runner_n, runner=True)
            summaries.append(r)
        if args.profile_n and args.profile_n not in sizes:
            prof = os.path.join(work, "out", "profile-n%d.prof" % args.profile_n)
            p = one_n(work, collection_root, template, artifacts, args.profile_n, args, args.timeout,
                      tag="profile-n%d" % args.profile_n, profile=prof)
            summaries.append(p)
            extra += profile_lines(prof, args.profile_n, p["tag"])
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        errors.append("bench error: %s" % exc)
    finally:
        if not args.keep:
            lb_remove_all()
    text = render(meta, summaries, extra + ["ERROR: %s" % e for e in errors])
    print("")
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(text)
    data = dict(meta, summaries=summaries, errors=errors)
    build = os.path.join(REPO, ".build")
    os.makedirs(build, exist_ok=True)
    with open(os.path.join(build, "bench-scale.json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, default=str)
    with open(os.path.join(work, "bench-scale.json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, default=str)
    log("figures: %s, %s" % (os.path.relpath(args.out, REPO), os.path.join(build, "bench-scale.json")))
    if not args.keep:
        keep = os.path.join(work, "out")
        for path in glob.glob(os.path.join(work, "hosts")) + [os.path.join(work, "template")]:
            shutil.rmtree(path, ignore_errors=True)
        log("kept logs and callback files in %s" % keep)
    return 1 if errors or any(s["rc"] != 0 for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
