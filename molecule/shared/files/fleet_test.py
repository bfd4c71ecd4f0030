# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the fleet scenarios' tests share: docker exec into the fleet's
containers, their real state (release link, HAProxy runtime state through
haproxy_stat.py), and the environment to run playbooks the way a user does.
Imported by the scenarios' conftest.py files."""
import json
import os
import subprocess
import time

HAPROXY_STAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy_stat.py")


def docker(*args, check=True, input_text=None, timeout=60):
    return subprocess.run(["docker"] + list(args), check=check, capture_output=True, text=True,
                          input=input_text, timeout=timeout)


def pause_container(host, attempts=10):
    """docker pause, retried a bounded number of times. On cgroup v1 runc
    gives up on a freeze that does not settle at once ("unable to freeze":
    a process of the container was mid-fork, as nginx is during a reload, or
    the machine was too busy) and thaws the container again; a moment later
    the freeze works. Seen in CI: `docker pause ngx-lb2` failed right after
    the rollout's drain reloaded nginx there."""
    errors = []
    for dummy in range(attempts):
        res = docker("pause", host, check=False, timeout=30)
        if res.returncode == 0:
            return len(errors)
        errors.append(res.stderr.strip() or "exit %d" % res.returncode)
        time.sleep(0.3)
    raise AssertionError("docker pause %s failed %d times; last: %s" % (host, attempts, errors[-1]))


def path_exists(host, path):
    """Whether `path` exists in the container. A container that is gone or
    paused raises (docker exec fails) instead of passing for "absent", as a
    bare `test -e` exit code would."""
    res = docker("exec", host, "sh", "-c", 'if test -e "$1"; then echo present; else echo absent; fi', "sh", path,
                 timeout=15)
    answer = res.stdout.strip()
    assert answer in ("present", "absent"), (host, path, res.stdout, res.stderr)
    return answer == "present"


def version_of(host):
    """The release the host's current link points at, or None."""
    res = docker("exec", host, "readlink", "/opt/demoapp/current", check=False, timeout=15)
    return os.path.basename(res.stdout.strip()) if res.returncode == 0 else None


def haproxy_state(balancer, backend="demoapp"):
    with open(HAPROXY_STAT, encoding="utf-8") as handle:
        code = handle.read()
    return json.loads(docker("exec", "-i", balancer, "python3", "-", "/run/haproxy/admin.sock", backend,
                             input_text=code, timeout=15).stdout)


def ansible_env():
    env = dict(os.environ)
    # molecule's own ansible.cfg points at its generated inventory; the
    # playbooks in the tests run the way a user runs them, with a real one.
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_LIBRARY",
                "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_CALLBACK_PLUGINS"):
        env.pop(key, None)
    env.update(ANSIBLE_FORKS="10", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_PYTHON_INTERPRETER="auto_silent",
               ANSIBLE_PIPELINING="true")
    # The collection's strategy (skips decided on the controller: a rollout of
    # the 6-host fleet 12% less CPU, docs/user-guide.md). The README's own
    # test and the matrix's scenario (GRAYRELEASE_TEST_STRATEGY) keep
    # ansible.builtin.linear, the default a user gets, on a real fleet.
    env["ANSIBLE_STRATEGY"] = os.environ.get("GRAYRELEASE_TEST_STRATEGY", "grayrelease.canary.linear")
    return env


def run_timed(cmd, timeout, stdout_tail=6000, stderr_tail=3000):
    """Run a playbook command with ansible_env(); print the tail of its output; .seconds is its wall time."""
    t0 = time.monotonic()
    res = subprocess.run(cmd, check=False, env=ansible_env(), capture_output=True, text=True, timeout=timeout)
    res.seconds = round(time.monotonic() - t0, 1)
    print(res.stdout[-stdout_tail:])
    print(res.stderr[-stderr_tail:])
    return res


REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def build_release(version, *flags):
    """dist/demoapp-VERSION.tar.gz built by scripts/build-release.sh (reproducible)."""
    subprocess.run([os.path.join(REPO, "scripts", "build-release.sh"), version, "--out", os.path.join(REPO, "dist")]
                   + list(flags), check=True, capture_output=True, text=True, timeout=120)
    return os.path.join(REPO, "dist", "demoapp-%s.tar.gz" % version)


MONITOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capacity_monitor.py")


class InContainer(object):
    """A bounded stdlib script running detached in a container, with a stop file."""

    def __init__(self, container, script, name, *args, modules=()):
        self.container, self.name = container, name
        self.stop_file, self.out = "/tmp/%s.stop" % name, "/tmp/%s.json" % name
        for path, target in [(script, "%s.py" % name)] + [(m, os.path.basename(m)) for m in modules]:
            with open(path, encoding="utf-8") as handle:
                docker("exec", "-i", container, "sh", "-c", "cat > /tmp/%s" % target, input_text=handle.read())
        docker("exec", container, "rm", "-f", self.out, self.stop_file)
        docker("exec", "-d", container, "python3", "/tmp/%s.py" % name, "--stop-file", self.stop_file,
               "--out", self.out, *args)

    def stop(self, wait=40):
        self.ask_to_stop()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            res = docker("exec", self.container, "cat", self.out, check=False)
            if res.returncode == 0 and res.stdout.strip():
                docker("exec", self.container, "rm", "-f", self.out, self.stop_file)
                return json.loads(res.stdout)
            time.sleep(0.5)
        raise AssertionError("%s in %s did not report within %s s" % (self.name, self.container, wait))

    def ask_to_stop(self):
        docker("exec", self.container, "touch", self.stop_file)


class Load(InContainer):
    """scripts/load.py inside a balancer container against its own HAProxy,
    bounded by ``duration``: fast requests at ``rate``, plus, with
    ``slow_rate``, requests of ``slow_seconds`` that only a real drain saves.
    stop() ends it and returns its summary."""

    def __init__(self, container, rate=30, duration=600, name="load", slow_rate=0, slow_seconds=3):
        args = ["--url", "http://127.0.0.1/", "--rate", str(rate), "--duration", str(duration)]
        if slow_rate:
            args += ["--slow-url", "http://127.0.0.1/slow?seconds=%s" % slow_seconds, "--slow-rate", str(slow_rate),
                     "--slow-seconds", str(slow_seconds)]
        super(Load, self).__init__(container, os.path.join(REPO, "scripts", "load.py"), name, *args)


def capacity_monitor(container, backend="demoapp", duration=300, name="capmon"):
    """Servers out of rotation on one balancer, sampled every 200 ms (capacity_monitor.py).

    Every 200 ms, not 100: two monitors at 100 ms cost 0.09 of a core for as
    long as a test runs (measured on the rollout fleet, 30 s: 2.7 s of CPU),
    and a server over the cap stays out for a drain and a switch, seconds."""
    return InContainer(container, MONITOR, name, "--backend", backend, "--interval", "0.2",
                       "--duration", str(duration), modules=[HAPROXY_STAT])


# What reseed_fleet runs in each container. An app host: current back on v1
# (restarted only if it moved), later releases, `previous` and the rollback
# record gone, the service active and listening. A balancer: every server of
# the backend ready at its initial weight and UP, the rollout lock and the
# runs' server claims gone (stale claims could make the next case's operator
# state look like a run's and be "repaired").
_RESEED_APP = r"""
set -eu
cd "$1"
if [ "$(readlink current)" != releases/v1 ]; then
  ln -sfn releases/v1 current.reseed && mv -T current.reseed current
  systemctl restart "$2"
fi
rm -f previous .rollback.json
for d in releases/*; do [ "$d" = releases/v1 ] || rm -rf -- "$d"; done
systemctl is-active --quiet "$2" || systemctl restart "$2"
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; do
  i=$((i + 1)); [ "$i" -le 300 ] || { echo "$2 not listening on $3 after 30 s" >&2; exit 1; }
  sleep 0.1
done
"""

# Run after haproxy_stat.py's functions (ask, read_backend): see reseed_fleet.
_RESEED_BALANCER = r"""
import os, time
sock_path, backend, lock_dir = sys.argv[1:4]
for name in read_backend(sock_path, backend):
    for line in ("set server %s/%s state ready" % (backend, name), "set weight %s/%s 100%%" % (backend, name)):
        answer = ask(sock_path, line).strip()
        if answer:
            sys.exit("%s: %s" % (line, answer))
# Every server exactly UP ("UP 1/2" is a failed check on its way down) and
# still so 1.5 s later, longer than the fleet's check interval (1 s): a
# check that began while an app host restarted reports only after it.
deadline = time.monotonic() + 30
stable_since = None
while True:
    states = read_backend(sock_path, backend)
    if all(s["status"] == "UP" for s in states.values()):
        stable_since = stable_since or time.monotonic()
        if time.monotonic() - stable_since >= 1.5:
            break
    else:
        stable_since = None
    if time.monotonic() > deadline:
        sys.exit("not every server steadily UP after 30 s: %s" % states)
    time.sleep(0.1)
for suffix in (".lock", ".claims.json"):
    try:
        os.unlink(os.path.join(lock_dir, backend + suffix))
    except FileNotFoundError:
        pass
"""


def reseed_fleet(apps, balancers, root="/opt/demoapp", service="demoapp", port=8080, backend="demoapp",
                 socket_path="/run/haproxy/admin.sock", lock_dir="/var/lib/grayrelease-canary"):
    """Put a fleet back on its baseline between test cases, as an operator
    would by hand: one `docker exec` per container, all at once. Apps first,
    so that the balancers' wait for every server UP sees them serving.
    Returns the wall time in seconds. (It replaced an ansible-playbook run:
    14 module runs at 0.3-0.5 s of CPU each in the containers, plus the
    controller's ~6 s, about 12 s of CPU per case.)"""
    t0 = time.monotonic()

    def run_all(hosts, command, input_text=None):
        """`docker exec` of `command` in every host at once; fails naming each host that failed."""
        procs = [(host, subprocess.Popen(
            ["docker", "exec"] + (["-i"] if input_text else []) + [host] + command,
            stdin=subprocess.PIPE if input_text else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)) for host in hosts]
        failed = []
        for host, proc in procs:
            try:
                out = proc.communicate(input=input_text, timeout=60)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0] + " (killed after 60 s)"
            if proc.returncode != 0:
                failed.append("%s: %s" % (host, out.strip()[-500:]))
        assert not failed, "reseed failed on " + "; ".join(failed)

    run_all(apps, ["bash", "-c", _RESEED_APP, "reseed", root, service, str(port)])
    with open(HAPROXY_STAT, encoding="utf-8") as handle:
        stat_functions = handle.read().split('\nif __name__ == "__main__":')[0]
    run_all(balancers, ["python3", "-", socket_path, backend, lock_dir],
            input_text=stat_functions + "\n" + _RESEED_BALANCER)
    return round(time.monotonic() - t0, 1)
