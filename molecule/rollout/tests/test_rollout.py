"""Real rollouts on the local fleet, in order: promote under load, a canary
that the judge fails, a failure in a later batch, an interrupted run resumed,
then the status and rollback playbooks. Each test checks the fleet's real
state afterwards (release links in the containers, HAProxy's runtime state)."""
import json
import os
import signal
import time

import pytest

from conftest import (APPS, BALANCERS, CapacityWatch, assert_capacity, build_release, docker, haproxy_command,
                      haproxy_state, mixed_load, path_exists, read_report, record, releases_on, run_playbook,
                      version_of)

# Short analysis and wide batches keep the scenario within minutes; the flow
# is the same as with the defaults.
FAST = ["-e", '{"canary_analysis_interval": 4, "canary_analysis_count": 2, "canary_max_unavailable": 2,'
              ' "canary_steps": [1, "50%", "100%"], "canary_drain_timeout": 10}']


def assert_fleet_serving(version_by_host):
    for host, version in version_by_host.items():
        assert version_of(host) == version, "%s runs %s, expected %s" % (host, version_of(host), version)
        assert docker("exec", host, "systemctl", "is-active", "demoapp", check=False).stdout.strip() == "active"
    for lb in BALANCERS:
        state = haproxy_state(lb)
        for host in APPS:
            s = state[host]
            assert s["admin_state"] == "ready", "%s: %s is %s" % (lb, host, s)
            assert s["status"] == "UP", "%s: %s is %s" % (lb, host, s)
            assert s["weight"] == s["initial_weight"], "%s: %s weight not restored: %s" % (lb, host, s)


def test_fleet_starts_on_v1():
    assert {h: version_of(h) for h in APPS} == {h: "v1" for h in APPS}


def test_rollout_promotes_v2_under_load(report_dir):
    artifact = build_release("v2")
    watch = CapacityWatch()
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v2", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/promote" % report_dir, *FAST)
    summary = load.stop()
    capacity = watch.stop()
    report = read_report(report_dir / "promote")
    canary = report["steps"][0]
    record("promote", playbook_seconds=res.seconds, report_seconds=report["seconds"], load=summary,
           canary_batch_seconds=canary["seconds"], seconds_to_verdict=canary["judge"]["seconds_to_verdict"],
           batches=[s["seconds"] for s in report["steps"]])
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted"
    assert report["version"] == "v2" and report["previous_version"] == "v1"
    assert report["hosts"] == {h: "v2" for h in APPS}
    # Pre-flight staged the release on every host, in the call that read the releases.
    assert report["staged"] == sorted(APPS) and report["staged_removed"] == []
    # The plan follows the zones (spread) and the steps: 1, 3, 6 hosts.
    assert [len(b) for b in report["plan"]] == [1, 2, 2, 1]
    assert report["steps"][0]["canary"] is True
    # Steps keep their batches: the last step (3 hosts, at most 2 at a time)
    # is two batches; all batches in order are the plan.
    assert [len(s["batches"]) for s in report["steps"]] == [1, 1, 2]
    assert [b["hosts"] for s in report["steps"] for b in s["batches"]] == report["plan"]
    assert report["steps"][0]["judge"]["verdict"] == "pass"
    assert all(step["outcome"] == "ok" for step in report["steps"])
    assert_fleet_serving({h: "v2" for h in APPS})
    assert summary["requests"] > 100 and summary["slow"]["requests"] > 5, summary
    assert summary["failed"] == 0, summary
    # FAST allows 2 servers out at once.
    assert_capacity(capacity, allowed=2)
    assert summary["versions"].get("v2", 0) > 0 and summary["versions"].get("v1", 0) > 0


def test_canary_failing_judge_is_rolled_back(report_dir):
    artifact = build_release("v3", "--error-rate", "0.5")
    watch = CapacityWatch()
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v3", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/canary-fail" % report_dir, *FAST)
    summary = load.stop()
    assert_capacity(watch.stop(), allowed=2)
    assert res.returncode != 0
    report = read_report(report_dir / "canary-fail")
    # Only the canary's own injected 500s: no request cut by HAProxy (502/503)
    # while the canary was drained, rolled back and restarted.
    assert set(summary["statuses"]) <= {"200", "500"}, summary
    record("canary-fail", playbook_seconds=res.seconds, load=summary, canary_batch_seconds=report["steps"][0]["seconds"],
           judge=report["steps"][0]["judge"].get("verdict"), reason=report["reason"])
    assert report["decision"] == "rolled_back"
    assert "judged fail" in report["reason"]
    assert len(report["steps"]) == 1 and report["steps"][0]["canary"]
    canary = report["steps"][0]["hosts"]
    assert report["rolled_back"] == canary
    judge = report["steps"][0]["judge"]
    assert judge["verdict"] == "fail"
    assert judge["metrics"]["probe_error_ratio"]["classification"] == "high"
    # Only the canary was touched: it keeps v3's directory for inspection,
    # nobody else ever received v3.
    for host in APPS:
        assert ("v3" in releases_on(host)) == (host in canary), host
    assert_fleet_serving({h: "v2" for h in APPS})


def test_failure_in_a_later_batch_rolls_back_every_touched_host(report_dir):
    # Spread over zones a/b/c the plan is [app1], [app3, app5], [app2, app4],
    # [app6]: the release crashes on app2 only, so batch 3 fails.
    artifact = build_release("v4", "--crash-on-hosts", "app2")
    watch = CapacityWatch()
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v4", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/late-fail" % report_dir, *FAST)
    summary = load.stop()
    # The rollback of five hosts keeps to canary_max_unavailable too; no
    # request is lost (app2's crash is caught before it is readied).
    assert_capacity(watch.stop(), allowed=2)
    assert summary["failed"] == 0 and summary["slow"]["requests"] > 5, summary
    assert res.returncode != 0
    report = read_report(report_dir / "late-fail")
    assert report["decision"] == "rolled_back"
    assert [s["outcome"] for s in report["steps"]] == ["ok", "ok", "failed"]
    # Caught by the release role within seconds, in the service's own words.
    assert "app2" in report["reason"] and "did not stay up" in report["reason"]
    assert "crash_on_hosts names this host" in report["reason"]
    touched = sorted(h for s in report["steps"] for b in s["batches"] for h in b["hosts"])
    assert sorted(report["rolled_back"]) == touched == ["app1", "app2", "app3", "app4", "app5"]
    assert "v4" not in releases_on("app6")
    assert_fleet_serving({h: "v2" for h in APPS})


def test_a_probe_host_that_is_no_balancer_health_checks_each_batch_itself(report_dir):
    # canary_probe_from an app host: a switched batch's health check is a
    # task of its own there (roles/rollout/tasks/health.yml), not part of
    # the balancers' ready. This release fails its health check only.
    artifact = build_release("v8h", "--healthz-fail")
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v8h", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/probe-from-app" % report_dir, "-e", "canary_probe_from=app6",
                       "-e", "canary_health_deadline=6", *FAST)
    summary = load.stop()
    assert summary["failed"] == 0, summary  # never readied: HAProxy sent it nothing
    assert res.returncode != 0
    assert "Batch | health check from the probe host" in res.stdout
    report = read_report(report_dir / "probe-from-app")
    assert report["decision"] == "rolled_back"
    assert "unhealthy after" in report["reason"] and "probed from" not in report["reason"], report["reason"]
    batch = report["steps"][0]["batches"][0]
    assert batch["outcome"] == "failed" and batch["health"]["unhealthy"] and "probed_from" not in batch["health"]
    assert report["rolled_back"] == report["steps"][0]["hosts"] == ["app1"]
    assert_fleet_serving({h: "v2" for h in APPS})


def test_without_prestaging_each_switch_installs_the_release(report_dir):
    # canary_prestage=false: pre-flight only reads the releases, and every
    # switch ships and unpacks the artifact itself (release's install marker
    # is written once that host's batch has begun). With a shared logs
    # directory owned by the service's user (demoapp runs as nobody).
    artifact = build_release("v3p")
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v3p", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/no-prestage" % report_dir, "-e", "canary_prestage=false",
                       "-e", '{"canary_shared_paths": ["logs"], "canary_release_owner": "nobody",'
                             ' "canary_release_group": "nogroup"}', *FAST)
    summary = load.stop()
    assert res.returncode == 0, res.stdout[-3000:]
    assert summary["failed"] == 0, summary
    report = read_report(report_dir / "no-prestage")
    assert report["decision"] == "promoted" and report["settings"]["prestage"] is False
    assert report["staged"] == []
    started = dict((h, b["started"]) for s in report["steps"] for b in s["batches"] for h in b["hosts"])
    assert sorted(started) == sorted(APPS)
    for host in APPS:
        marker = json.loads(docker("exec", host, "cat", "/opt/demoapp/releases/v3p/.grayrelease-release").stdout)
        assert marker["installed"] >= started[host], (host, marker, started[host])
        # canary_release_owner/group: the release's files and the shared directory are the service's,
        # and the service's user can write its logs through the release's link.
        owners = docker("exec", host, "stat", "-c", "%U:%G %n", "/opt/demoapp/releases/v3p/app.py",
                        "/opt/demoapp/shared/logs").stdout.split("\n")
        assert [line.split()[0] for line in owners if line] == ["nobody:nogroup"] * 2, (host, owners)
        assert docker("exec", host, "readlink", "/opt/demoapp/current/logs").stdout.strip() == "/opt/demoapp/shared/logs"
        wrote = docker("exec", host, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "touch",
                       "/opt/demoapp/current/logs/written-by-the-service", check=False)
        assert wrote.returncode == 0, (host, wrote.stderr)
    assert_fleet_serving({h: "v3p" for h in APPS})
    # Back to v2 (every host's previous release) for the scenario's next tests.
    res = run_playbook("rollback", "-e", "canary_max_unavailable=3")
    assert res.returncode == 0, res.stdout[-3000:]
    assert_fleet_serving({h: "v2" for h in APPS})


def test_interrupted_rollout_resumes(report_dir):
    artifact = build_release("v5")
    proc = run_playbook("rollout", "-e", "canary_version=v5", "-e", "canary_artifact=%s" % artifact,
                        "-e", "canary_report_dir=%s/interrupted" % report_dir, *FAST, background=True)
    # Kill the controller once the second batch is on its way: some hosts
    # are on v5, some may be drained.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(version_of(h) == "v5" for h in APPS) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the rollout finished before it could be interrupted"
    import os
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = [h for h in APPS if version_of(h) == "v5"]
    res = run_playbook("rollout", "-e", "canary_version=v5", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/resumed" % report_dir, *FAST)
    assert res.returncode == 0, res.stdout[-3000:]
    report = read_report(report_dir / "resumed")
    assert report["decision"] == "promoted"
    assert set(report["done_before"]) <= set(done_before) and report["done_before"]
    assert not set(report["done_before"]) & {h for b in report["plan"] for h in b}
    assert_fleet_serving({h: "v5" for h in APPS})


def test_check_mode_prints_the_plan_and_changes_nothing():
    artifact = build_release("v6")
    before = {h: (version_of(h), releases_on(h)) for h in APPS}
    res = run_playbook("rollout", "--check", "-e", "canary_version=v6", "-e", "canary_artifact=%s" % artifact, *FAST)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "Rolling demoapp from v5 to v6 on 6 hosts" in res.stdout
    assert "step 1, batch 1: app1" in res.stdout
    assert {h: (version_of(h), releases_on(h)) for h in APPS} == before
    assert_fleet_serving({h: "v5" for h in APPS})
    assert not path_exists("lb1", "/var/lib/grayrelease-canary/demoapp.lock")


def test_status_playbook_reports_versions_and_balancer_state():
    res = run_playbook("status")
    assert res.returncode == 0
    for host in APPS:
        assert "%s: version v5" % host in res.stdout


def test_rollback_playbook_returns_the_fleet_to_the_previous_release():
    res = run_playbook("rollback", "-e", "canary_max_unavailable=3")
    assert res.returncode == 0, res.stdout[-3000:]
    assert_fleet_serving({h: "v2" for h in APPS})


# Pre-flight checks every input before it takes the lock and names every bad
# value at once (the engine's settings; one by one in test_engine.py), so one
# run carries several: each run is ~20 s of the machine's CPU on this fleet.
@pytest.mark.parametrize("bad,needles", [
    # Bad names, plan and judge input together; a canary_server that smuggles in a runtime API
    # command, and a canary_backend that would move the lock file out of its directory.
    (["-e", "canary_version=../x", "-e", "canary_artifact=/nonexistent.tar.gz", "-e", "canary_traffic_percent=0",
      "-e", "canary_backend=../../tmp/x", "-e", '{"canary_server": "app1; disable server demoapp/app2"}',
      "-e", "canary_steps=50%,1", "-e", "canary_on_marginal=maybe"],
     ["canary_version='../x'", "/nonexistent.tar.gz", "canary_traffic_percent=0", "canary_backend='../../tmp/x'",
      "canary_server='app1; disable server", "non-decreasing", "canary_on_marginal='maybe'"]),
    # A runtime API command smuggled in through the backend's name (a line break).
    (["-e", "canary_version=v9", "-e", "canary_artifact=/dev/null",
      "-e", '{"canary_backend": "demoapp\\nshutdown sessions server demoapp/app1"}'], ["canary_backend="]),
    (["-e", "canary_artifact=/dev/null"], ["canary_version is not set"]),
], ids=["named-together", "backend-newline", "no-version"])
def test_bad_input_fails_clearly_and_changes_nothing(report_dir, bad, needles):
    before = {h: (version_of(h), releases_on(h)) for h in APPS}
    res = run_playbook("rollout", "-e", "canary_report_dir=%s/bad" % report_dir, *bad)
    assert res.returncode != 0
    missing = [needle for needle in needles if needle not in res.stdout]
    assert not missing, (missing, res.stdout[-3000:])
    assert read_report(report_dir / "bad")["decision"] == "failed"
    assert {h: (version_of(h), releases_on(h)) for h in APPS} == before
    assert_fleet_serving({h: before[h][0] for h in APPS})


def test_manual_gate_stops_after_each_step_and_resumes(report_dir):
    # The fleet is on v2 again (rollback playbook above).
    artifact = build_release("v7")
    gate = ["-e", "canary_version=v7", "-e", "canary_artifact=%s" % artifact, "-e", "canary_pause=manual"]
    res = run_playbook("rollout", *gate, "-e", "canary_report_dir=%s/gate1" % report_dir, *FAST)
    assert res.returncode != 0  # not promoted (yet): pipelines must not read it as done
    report = read_report(report_dir / "gate1")
    assert report["decision"] == "paused"
    assert "run the same command again" in report["reason"]
    assert report["rolled_back"] == []
    assert [s["hosts"] for s in report["steps"]] == [["app1"]]
    assert_fleet_serving(dict({h: "v2" for h in APPS}, app1="v7"))
    assert not path_exists("lb1", "/var/lib/grayrelease-canary/demoapp.lock")

    res = run_playbook("rollout", *gate, "-e", "canary_report_dir=%s/gate2" % report_dir, *FAST)
    report = read_report(report_dir / "gate2")
    assert report["decision"] == "paused" and report["done_before"] == ["app1"]
    # Pending hosts are spread over zones afresh: app2 (a), app3 (b) next.
    assert [s["hosts"] for s in report["steps"]] == [["app2", "app3"]]
    assert_fleet_serving(dict({h: "v2" for h in APPS}, app1="v7", app2="v7", app3="v7"))

    res = run_playbook("rollout", "-e", "canary_version=v7", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/gate3" % report_dir, *FAST)
    assert res.returncode == 0, res.stdout[-3000:]
    assert read_report(report_dir / "gate3")["decision"] == "promoted"
    assert_fleet_serving({h: "v7" for h in APPS})


def leave_drained_by_a_run(lb, host):
    """What an interrupted run leaves: the server drained, and its claim on the
    balancer (haproxy_server writes it before it drains), so the next run repairs it."""
    haproxy_command(lb, "set server demoapp/%s state drain" % host)
    claim = {"demoapp": {host: {"admin_state": "drain", "weight": haproxy_state(lb)[host]["weight"],
                                "owner": "an interrupted run", "at": 0}}}
    docker("exec", lb, "python3", "-c",
           "import json, os, sys; os.makedirs('/var/lib/grayrelease-canary', 0o700, exist_ok=True); "
           "open('/var/lib/grayrelease-canary/demoapp.claims.json', 'w').write(sys.argv[1])", json.dumps(claim))


def test_operator_maintenance_is_left_alone_and_bad_input_touches_nothing(report_dir):
    # An operator puts app6 in maintenance (it counts against the cap); an
    # interrupted run left app5 drained, and its claim says so.
    artifact = build_release("v9")
    app6_version = version_of("app6")
    for lb in BALANCERS:
        haproxy_command(lb, "set server demoapp/app6 state maint")
        leave_drained_by_a_run(lb, "app5")
    try:
        # Bad input: refused before anything is touched, the leftovers included.
        res = run_playbook("rollout", "-e", "canary_version=v9", "-e", "canary_artifact=%s" % artifact,
                           "-e", "canary_report_dir=%s/maint-bad" % report_dir, *(FAST + ["-e", "canary_steps=1,50%,30%"]))
        assert res.returncode != 0
        report = read_report(report_dir / "maint-bad")
        assert report["decision"] == "failed" and "non-decreasing" in report["reason"], report["reason"]
        for lb in BALANCERS:
            state = haproxy_state(lb)
            assert state["app6"]["admin_state"] == "maint" and state["app5"]["admin_state"] == "drain", state

        # Survey strings as -e key=value gives them; app6 stays out of the plan.
        res = run_playbook("rollout", "-e", "canary_version=v9", "-e", "canary_artifact=%s" % artifact,
                           "-e", "canary_steps=1,100%", "-e", "canary_max_unavailable=2",
                           "-e", "canary_analysis_interval=4", "-e", "canary_analysis_count=2",
                           "-e", "canary_report_dir=%s/maint" % report_dir)
        assert res.returncode == 0, res.stdout[-3000:]
        report = read_report(report_dir / "maint")
        assert report["decision"] == "promoted"
        assert report["maintenance"] == ["app6"] and "app5" in report["repaired"]
        assert report["operator_held"] == {"app6": "maint on lb1, maint on lb2"}, report["operator_held"]
        assert report["capacity"]["out_before"] == {"app6": "maint on lb1, maint on lb2"}
        assert "app6" not in [h for batch in report["plan"] for h in batch]
        assert version_of("app6") == app6_version and "v9" not in releases_on("app6")
        for lb in BALANCERS:
            state = haproxy_state(lb)
            assert state["app6"]["admin_state"] == "maint", state["app6"]
            for host in APPS[:5]:
                assert state[host]["admin_state"] == "ready" and state[host]["weight"] == state[host]["initial_weight"]
    finally:
        for lb in BALANCERS:
            haproxy_command(lb, "set server demoapp/app6 state ready")
            haproxy_command(lb, "set server demoapp/app5 state ready")


def unsafe_archive(directory, name, member, link_to=None):
    """A .tar.gz holding app.py plus one member that must never be unpacked."""
    import io
    import tarfile
    path = directory / ("%s.tar.gz" % name)
    with tarfile.open(str(path), "w:gz") as tar:
        body = b"print('hello')\n"
        info = tarfile.TarInfo("v10/app.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        info = tarfile.TarInfo(member)
        if link_to:
            info.type, info.linkname = tarfile.SYMTYPE, link_to
            tar.addfile(info)
        else:
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_corrupt_unsafe_or_mismatching_artifact_is_refused_before_any_host_is_touched(report_dir, tmp_path):
    good = build_release("v10")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar archive")
    before = {h: (version_of(h), releases_on(h)) for h in APPS}
    for name, args, needle in [
            ("junk", ["-e", "canary_artifact=%s" % junk], "not a readable tar archive"),
            ("checksum", ["-e", "canary_artifact=%s" % good, "-e", "canary_artifact_checksum=" + "0" * 64],
             "checksum mismatch"),
            ("dotdot", ["-e", "canary_artifact=%s" % unsafe_archive(tmp_path, "dotdot", "../evil")],
             "has a '..' component"),
            ("absolute", ["-e", "canary_artifact=%s" % unsafe_archive(tmp_path, "absolute", "/etc/evil")],
             "has an absolute path"),
            ("symlink", ["-e", "canary_artifact=%s" % unsafe_archive(tmp_path, "symlink", "v10/link", "/etc/passwd")],
             "outside the release")]:
        res = run_playbook("rollout", "-e", "canary_version=v10", "-e", "canary_report_dir=%s/%s" % (report_dir, name),
                           *args)
        assert res.returncode != 0
        assert needle in res.stdout
        report = read_report(report_dir / name)
        assert report["decision"] == "failed" and needle in report["reason"] and report["plan"] == []
        assert {h: (version_of(h), releases_on(h)) for h in APPS} == before
        assert not path_exists("lb1", "/var/lib/grayrelease-canary/demoapp.lock")


def hook_file(name):
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "files", name)


HOOK_LOG = "/var/tmp/grayrelease-hooks.log"
HOOK_POINTS = ("before-drain", "before-switch", "after-switch", "after-ready")
# The release the hooks' run rolls out to every host (the hook tests after it start from it).
HOOKED = "v9-hooks"


def test_every_hook_runs_on_each_host_in_order(report_dir):
    """The four hooks of a batch, each noting itself and the release current points at,
    on every host: before the drain and before the switch on the old release, after the
    switch and after the ready on the new one, in that order, once each."""
    # app6 was left on its version under maintenance above (app1-5 are on v9): bring it along
    # first, as the resume of that run (a fleet on two versions takes no other new version).
    res = run_playbook("rollout", "-e", "canary_version=v9", "-e", "canary_artifact=%s" % build_release("v9"),
                       "-e", "canary_report_dir=%s/hook-prep" % report_dir, *FAST)
    assert res.returncode == 0, res.stdout[-3000:]
    old = {h: version_of(h) for h in APPS}
    assert set(old.values()) == {"v9"}
    for host in APPS:
        docker("exec", host, "rm", "-f", HOOK_LOG)
    hooks = []
    for point in HOOK_POINTS:
        hooks += ["-e", "canary_%s_tasks=%s" % (point.replace("-", "_"), hook_file("hook_%s.yml" % point.replace("-", "_")))]
    # Every host moves, and runs every hook once.
    res = run_playbook("rollout", "-e", "canary_version=%s" % HOOKED, "-e", "canary_artifact=%s" % build_release(HOOKED),
                       "-e", "canary_report_dir=%s/hooks" % report_dir, *(hooks + FAST))
    assert res.returncode == 0, res.stdout[-3000:]
    assert {h: version_of(h) for h in APPS} == dict((h, HOOKED) for h in APPS)
    for host in APPS:
        lines = docker("exec", host, "cat", HOOK_LOG).stdout.split("\n")
        assert lines == ["before-drain %s" % old[host], "before-switch %s" % old[host], "after-switch %s" % HOOKED,
                         "after-ready %s" % HOOKED, ""], (host, lines)
    report = read_report(report_dir / "hooks")
    timings = [b["timings"] for step in report["steps"] for b in step["batches"]]
    assert timings and all("before_drain" in t and "after_ready" in t for t in timings), timings


def test_a_failing_switch_hook_rolls_back_and_keeps_the_host_in_the_run(report_dir):
    hook = hook_file("failing_hook.yml")
    before = {h: version_of(h) for h in APPS}
    assert set(before.values()) == {HOOKED}
    artifact = build_release("v11")
    res = run_playbook("rollout", "-e", "canary_version=v11", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_before_switch_tasks=%s" % hook, "-e", "canary_report_dir=%s/hook" % report_dir, *FAST)
    assert res.returncode != 0
    report = read_report(report_dir / "hook")
    assert report["decision"] == "rolled_back", report["reason"]
    assert "hook says no on app1" in report["reason"] and report["lost"] == {}
    assert_fleet_serving(before)


def test_a_failing_after_ready_hook_rolls_the_canary_back(report_dir):
    """The canary serves v12 when the after-ready hook fails on it: the run halts
    and puts it back on the release before, and the reason names the hook."""
    before = {h: version_of(h) for h in APPS}
    assert set(before.values()) == {HOOKED}
    res = run_playbook("rollout", "-e", "canary_version=v12", "-e", "canary_artifact=%s" % build_release("v12"),
                       "-e", "canary_after_ready_tasks=%s" % hook_file("failing_hook.yml"),
                       "-e", "canary_report_dir=%s/after-ready" % report_dir, *FAST)
    assert res.returncode != 0
    report = read_report(report_dir / "after-ready")
    assert report["decision"] == "rolled_back", report["reason"]
    assert "after-ready hook on app1: Refuse to switch this host: hook says no on app1" in report["reason"], report["reason"]
    assert report["lost"] == {}
    assert [s["step"] for s in report["steps"]] == [1] and "analysis" not in report["steps"][0]["batches"][0]["timings"]
    assert_fleet_serving(before)
