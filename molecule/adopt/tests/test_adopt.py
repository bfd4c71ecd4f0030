"""A fleet without a release layout, in order: the rollout's pre-flight
refuses it; grayrelease.canary.adopt brings it onto its first release under
load (one drained restart per host, no failed request); a second adopt run
changes nothing; then a normal rollout promotes v2; then the rollback
playbook, refused while a rollout holds the lock, takes it over on request,
puts v1 back and releases the lock. Every check reads the containers' real
state (links, the unit's process, HAProxy's runtime state, the lock file)."""
import json
import os
import sys
import time

import pytest

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.abspath(os.path.join(SCENARIO, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import Load, build_release, docker, haproxy_state, path_exists, run_timed, version_of  # noqa: E402

INVENTORY = os.path.join(SCENARIO, "inventory", "hosts.yml")
FIGURES = os.path.join(REPO, ".build", "adopt-figures.jsonl")
APPS = ["adp-app1", "adp-app2"]
BALANCER = "adp-lb1"
LOCK_DIR = "/var/lib/grayrelease-canary"
LOCK = LOCK_DIR + "/demoapp.lock"
ROLLOUT_OWNER = "bob@ctl-9 pid 4242 run 0badc0de"
FAST = ["-e", '{"canary_analysis_interval": 4, "canary_analysis_count": 2, "canary_steps": [1, "100%"],'
              ' "canary_drain_timeout": 10}']
ADOPT = ["-e", "adopt_version=v1", "-e", "adopt_artifact=%s" % os.path.join(REPO, "dist", "demoapp-v1.tar.gz"),
         "-e", "adopt_service_tasks=%s" % os.path.join(SCENARIO, "files", "service-from-current.yml"),
         "-e", "adopt_repo=%s" % REPO]


def run_playbook(name, *extra, timeout=300):
    return run_timed(["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.%s" % name] + list(extra), timeout)


def record(case, **figures):
    """One JSON line per case in .build/adopt-figures.jsonl: the numbers behind the asserts."""
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "a") as handle:
        handle.write(json.dumps(dict(figures, case=case, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                                sort_keys=True) + "\n")


def main_process(host):
    """(MainPID, its command line) of the demo app's unit."""
    pid = docker("exec", host, "systemctl", "show", "-p", "MainPID", "--value", "demoapp").stdout.strip()
    cmdline = docker("exec", host, "cat", "/proc/%s/cmdline" % pid, check=False).stdout.replace("\0", " ").strip()
    return pid, cmdline


def recap(stdout, host):
    """The PLAY RECAP counters of one host."""
    for line in stdout.splitlines():
        if line.startswith(host + " "):
            return dict((k, int(v)) for k, v in (f.split("=") for f in line.split()[2:]))
    raise AssertionError("no recap line for %s" % host)


def assert_serving():
    state = haproxy_state(BALANCER)
    for host in APPS:
        assert state[host]["admin_state"] == "ready", state[host]
        assert state[host]["status"] == "UP", state[host]
        assert state[host]["weight"] == state[host]["initial_weight"], state[host]


@pytest.fixture(scope="module")
def before():
    build_release("v1")
    return dict((h, main_process(h)) for h in APPS)


def test_fleet_runs_outside_any_layout(before):
    for host in APPS:
        assert version_of(host) is None
        assert "/srv/demoapp-legacy/app.py" in before[host][1], before[host]
    assert_serving()


def test_rollout_preflight_refuses_the_fleet(tmp_path):
    res = run_playbook("rollout", "-e", "canary_version=v2", "-e", "canary_artifact=%s" % build_release("v2"),
                       "-e", "canary_report_dir=%s" % tmp_path, *FAST)
    record("preflight-refuses", playbook_seconds=res.seconds, rc=res.returncode)
    assert res.returncode != 0
    with open(os.path.join(str(tmp_path), "report.json")) as handle:
        report = json.load(handle)
    assert report["decision"] != "promoted"
    assert "no current release on adp-app1, adp-app2" in json.dumps(report), report.get("reason")
    assert all(version_of(h) is None for h in APPS)
    # Its pre-staging wrote nothing to hosts off the release layout (release require_current).
    for host in APPS:
        assert not path_exists(host, "/opt/demoapp/releases"), host


def test_adopt_under_load_one_drained_restart_per_host(before):
    load = Load(BALANCER, rate=30, duration=240, name="adopt-load")
    res = run_playbook("adopt", *ADOPT)
    summary = load.stop()
    record("adopt", playbook_seconds=res.seconds, rc=res.returncode, requests=summary["requests"],
           failed=summary["failed"], versions=summary.get("versions"), latency_ms=summary.get("latency_ms"))
    assert res.returncode == 0, res.stdout[-3000:]
    assert summary["requests"] > 100 and summary["failed"] == 0, summary
    for host in APPS:
        assert version_of(host) == "v1"
        assert docker("exec", host, "test", "-f", "/opt/demoapp/releases/v1/app.py").returncode == 0
        # Nothing of the adoption is left behind: no packed install, no pending move.
        leftovers = docker("exec", host, "sh", "-c", "ls -A /opt/demoapp | grep '^.adopt' || true").stdout.split()
        assert leftovers == [], (host, leftovers)
        pid, cmdline = main_process(host)
        assert pid != before[host][0], "%s was not restarted" % host
        assert "/opt/demoapp/current/app.py" in cmdline, cmdline
        # One drain and one ready per host, one restart.
        assert recap(res.stdout, host)["failed"] == 0
    assert res.stdout.count("TASK [Adopt | restart the service on its first release]") == len(APPS)
    assert_serving()


def test_adopt_again_changes_nothing():
    pids = dict((h, main_process(h)[0]) for h in APPS)
    res = run_playbook("adopt", *ADOPT)
    record("adopt-again", playbook_seconds=res.seconds, rc=res.returncode,
           changed=dict((h, recap(res.stdout, h)["changed"]) for h in APPS if res.returncode == 0))
    assert res.returncode == 0, res.stdout[-3000:]
    for host in APPS:
        assert recap(res.stdout, host)["changed"] == 0, res.stdout[-2000:]
        assert main_process(host)[0] == pids[host]
    assert_serving()


def test_rollout_promotes_after_adoption(tmp_path):
    load = Load(BALANCER, rate=30, duration=240, name="rollout-load")
    res = run_playbook("rollout", "-e", "canary_version=v2", "-e", "canary_artifact=%s" % build_release("v2"),
                       "-e", "canary_report_dir=%s" % tmp_path, *FAST)
    summary = load.stop()
    record("rollout", playbook_seconds=res.seconds, rc=res.returncode, requests=summary["requests"],
           failed=summary["failed"], versions=summary.get("versions"))
    assert res.returncode == 0, res.stdout[-3000:]
    with open(os.path.join(str(tmp_path), "report.json")) as handle:
        report = json.load(handle)
    assert report["decision"] == "promoted"
    assert report["previous_version"] == "v1"
    assert report["hosts"] == {h: "v2" for h in APPS}
    assert summary["failed"] == 0, summary
    for host in APPS:
        assert version_of(host) == "v2"
        assert docker("exec", host, "readlink", "/opt/demoapp/previous").stdout.strip().endswith("releases/v1")
    assert_serving()


def test_lock_directory_is_roots_alone():
    """Made by the rollouts above: 0700 root, its guard 0600; no lock left."""
    modes = docker("exec", BALANCER, "stat", "-c", "%a %U %n", LOCK_DIR, LOCK_DIR + "/.demoapp.lock.guard").stdout.split("\n")
    assert modes[0] == "700 root %s" % LOCK_DIR and modes[1].startswith("600 root "), modes
    assert not path_exists(BALANCER, LOCK)


def plant_rollout_lock():
    """The lock as a live rollout from another controller holds it (the balancer's clock); returns its text."""
    docker("exec", BALANCER, "python3", "-c",
           "import json, sys, time; open(sys.argv[1], 'w').write(json.dumps({'owner': sys.argv[2], "
           "'acquired': int(time.time()) - 30, 'ttl': 600, 'host': 'adp-lb1', 'pid': 977, 'controller': 'ctl-9', "
           "'controller_pid': 4242, 'version': 'v3'}))", LOCK, ROLLOUT_OWNER)
    return docker("exec", BALANCER, "cat", LOCK).stdout


def test_rollback_is_refused_while_a_rollout_holds_the_lock():
    held = plant_rollout_lock()
    res = run_playbook("rollback")
    record("rollback-refused", playbook_seconds=res.seconds, rc=res.returncode)
    assert res.returncode != 0
    assert "is held by owner %r" % ROLLOUT_OWNER in res.stdout and "rolling version v3" in res.stdout, res.stdout[-3000:]
    assert "-e canary_lock_takeover=true" in res.stdout
    assert "TASK [Rollback | drain the host on every balancer]" not in res.stdout
    for host in APPS:
        assert version_of(host) == "v2"
    assert docker("exec", BALANCER, "cat", LOCK).stdout == held
    assert_serving()


def test_rollback_takes_over_on_request_rolls_back_under_load_and_releases_the_lock():
    assert path_exists(BALANCER, LOCK)  # the rollout's, still held
    load = Load(BALANCER, rate=30, duration=240, name="rollback-load")
    res = run_playbook("rollback", "-e", "canary_lock_takeover=true")
    summary = load.stop()
    record("rollback", playbook_seconds=res.seconds, rc=res.returncode, requests=summary["requests"],
           failed=summary["failed"], versions=summary.get("versions"))
    assert res.returncode == 0, res.stdout[-3000:]
    assert "took over the live lock %s: owner %r" % (LOCK, ROLLOUT_OWNER) in res.stdout, res.stdout[-3000:]
    for host in APPS:
        assert version_of(host) == "v1"
    assert not path_exists(BALANCER, LOCK)
    assert summary["requests"] > 50 and summary["failed"] == 0, summary
    assert_serving()
