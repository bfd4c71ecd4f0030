"""Lost hosts in the middle of a rollout under mixed load (faults scenario).

Each case: reseed the fleet (v1, every server ready), start a capacity
monitor in each balancer and mixed load through flt-lb1, start the rollout
v1 -> v2 in the background, `docker pause` one host at a chosen moment, and
check what the engine leaves behind; then unpause it and check that the same
rollout again promotes a clean fleet. Figures go to .build/fault-matrix.jsonl.
"""
import calendar
import re
import time

from conftest import (APPS, BALANCERS, Background, assert_clean_balancers, capacity_monitor, docker,
                      haproxy_state, lock_present, mixed_load, read_report, record, reseed, run_playbook,
                      service_active, version_of, wait_for)

ROLLOUT = "grayrelease.canary.rollout"
SETTINGS = ['{"canary_max_unavailable": 1, "canary_analysis_count": 1, "canary_analysis_interval": 4,'
            ' "canary_drain_timeout": 10, "canary_steps": [1, "50%", "100%"]}']


def rollout_args(artifact, report):
    return ["-e", "canary_version=v2", "-e", "canary_artifact=%s" % artifact,
            "-e", "canary_report_dir=%s" % report, "-e", SETTINGS[0]]


def iso_to_epoch(text):
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def lose_host_mid_rollout(case, victim, moment, artifact, report_dir):
    """Run the rollout, pause `victim` when moment() says so; return the figures."""
    reseed_seconds = reseed()
    assert_clean_balancers()
    monitors = dict((b, capacity_monitor(b)) for b in BALANCERS)
    load = mixed_load()
    time.sleep(2)  # load and monitors running before the first change
    run = Background(ROLLOUT, *rollout_args(artifact, "%s/%s" % (report_dir, case)))
    paused = False
    try:
        wait_for("the moment to pause %s" % victim, moment, timeout=240, interval=0.1)
        docker("pause", victim)
        paused = True
        t_pause, wall_pause = time.monotonic(), time.time()
        print("paused %s after %.1f s of rollout" % (victim, t_pause - run.started))
        rc = run.wait(timeout=300)
        summary = load.stop()
        lb1 = monitors["flt-lb1"].stop() if victim != "flt-lb1" else None
    finally:
        run.stop()
        if paused:
            docker("unpause", victim)
    others = dict((b, m.stop()) for b, m in monitors.items() if b != "flt-lb1")
    report = read_report("%s/%s" % (report_dir, case))
    # Detected: the first task result after the pause that went wrong (the
    # victim UNREACHABLE, or a balancer failing on it, e.g. a drain timeout).
    detected_at, detect_line = run.first_line_after(t_pause, "UNREACHABLE", victim)
    failed_at, failed_line = run.first_line_after(t_pause, "FAILED!")
    if failed_at is not None and (detected_at is None or failed_at < detected_at):
        detected_at, detect_line = failed_at, failed_line
    rollback_started = [iso_to_epoch(r["started"]) for r in report.get("rollback", [])]
    figures = dict(
        victim=victim, rc=rc, decision=report["decision"], reason=report["reason"], lost=report["lost"],
        rolled_back=report["rolled_back"], hosts=report["hosts"], rollback_errors=report["rollback_errors"],
        seconds_to_detect=round(detected_at - t_pause, 1) if detected_at else None,
        seconds_to_rollback_start=round(rollback_started[0] - wall_pause, 1) if rollback_started else None,
        seconds_to_restore=round(run.ended - t_pause, 1), rollout_seconds=round(run.ended - run.started, 1),
        reseed_seconds=reseed_seconds,
        failed_requests=summary["failed"], fast=summary["fast"], slow=summary["slow"],
        capacity_lb1=dict((k, lb1[k]) for k in ("samples", "errors", "max_out", "max_out_servers", "final_out")),
        capacity_lb2=dict((k, others["flt-lb2"][k])
                          for k in ("samples", "errors", "max_out", "max_out_servers", "final_out")),
    )
    print("FIGURES %s: %r" % (case, figures))
    print("detected by: %s" % detect_line)
    return rc, report, summary, lb1, figures


def rerun_promotes(case, artifact, report_dir):
    res = run_playbook(ROLLOUT, *rollout_args(artifact, "%s/%s-again" % (report_dir, case)), timeout=400)
    report = read_report("%s/%s-again" % (report_dir, case))
    assert res.returncode == 0, report["reason"]
    assert report["decision"] == "promoted"
    assert report["hosts"] == dict((h, "v2") for h in APPS)
    assert [version_of(h) for h in APPS] == ["v2"] * len(APPS)
    assert all(service_active(h) for h in APPS)
    assert_clean_balancers()
    assert not lock_present("flt-lb1")
    return res.seconds, report


def hosts_on_v2():
    return [h for h in APPS if version_of(h) == "v2"]


def test_balancer_lost_mid_rollout_under_mixed_load(artifact, report_dir):
    # Pause flt-lb2 once the second batch has switched (a host besides the
    # canary runs v2): no task is running on the balancers then, and the
    # next one there (ready) finds flt-lb2 unreachable.
    rc, report, summary, lb1, figures = lose_host_mid_rollout(
        "balancer-lost", "flt-lb2", lambda: len(hosts_on_v2()) >= 2, artifact, report_dir)
    try:
        assert rc != 0
        assert report["decision"] == "failed", report["reason"]
        assert list(report["lost"]) == ["flt-lb2"], report["lost"]
        # Nothing half-switched: flt-lb1 still reaches every app host, so the
        # rollback put every switched host back on v1.
        versions = dict((h, version_of(h)) for h in APPS)
        assert versions == dict((h, "v1") for h in APPS), versions
        assert all(service_active(h) for h in APPS)
        assert report["hosts"] == versions
        assert len(report["rolled_back"]) >= 2 and report["rollback_errors"] == []
        assert not lock_present("flt-lb1")
        # Through flt-lb1: nothing failed, and never more than
        # canary_max_unavailable servers out of rotation.
        assert summary["failed"] == 0 and summary["fast"]["failed"] == 0 and summary["slow"]["failed"] == 0, summary
        assert summary["slow"]["requests"] > 0
        assert lb1["samples"] > 100 and lb1["max_out"] <= 1, lb1
        assert lb1["final_out"] == [], lb1
    finally:
        record("balancer unreachable mid-rollout under mixed load", **figures)
    figures["rerun_seconds"], again = rerun_promotes("balancer-lost", artifact, report_dir)
    record("balancer unreachable mid-rollout: rerun after unpause", rerun_seconds=figures["rerun_seconds"],
           decision=again["decision"], repaired=again["repaired"])


def test_app_host_lost_mid_batch(artifact, report_dir):
    # Pause flt-app4 while its batch drains it (flt-lb1 shows it draining):
    # the switch that follows finds it unreachable.
    def app4_draining():
        return haproxy_state("flt-lb1")["flt-app4"]["admin_state"] == "drain"

    rc, report, summary, lb1, figures = lose_host_mid_rollout(
        "app-lost", "flt-app4", app4_draining, artifact, report_dir)
    try:
        assert rc != 0
        assert report["decision"] == "failed", report["reason"]
        assert list(report["lost"]) == ["flt-app4"], report["lost"]
        versions = dict((h, version_of(h)) for h in APPS)
        # flt-app4 was paused before its switch: still on v1 after unpause.
        # It cannot serve, and canary_max_unavailable is 1: no serving host is
        # drained to go back. The switched ones stay on v2, serving, and the
        # report says so; the re-run below finishes the job.
        assert versions["flt-app4"] == "v1", versions
        assert all(v in ("v1", "v2") for v in versions.values()), versions
        assert all(service_active(h) for h in APPS)
        assert report["rolled_back"] == [] or report["rolled_back"] == ["flt-app4"], report["rolled_back"]
        assert any("canary_max_unavailable" in e and "flt-app4 cannot serve" in e for e in report["rollback_errors"]), \
            report["rollback_errors"]
        assert not lock_present("flt-lb1")
        # Only requests in flight on the frozen host itself may fail (a slow
        # one that was never answered); nothing new is sent to it.
        # The drain says how many sessions were frozen on it ("flt-app4: N").
        frozen = re.search(r"flt-app4: (\d+)\)", report["reason"])
        assert summary["fast"]["failed"] == 0, summary
        assert summary["slow"]["failed"] <= (int(frozen.group(1)) if frozen else 2), (summary, report["reason"])
        # Never more than canary_max_unavailable out: the lost host itself.
        assert lb1["max_out"] <= 1, lb1
        assert lb1["final_out"] in ([], ["flt-app4"]), lb1
    finally:
        record("app host unreachable mid-batch under mixed load", **figures)
    figures["rerun_seconds"], again = rerun_promotes("app-lost", artifact, report_dir)
    record("app host unreachable mid-batch: rerun after unpause", rerun_seconds=figures["rerun_seconds"],
           decision=again["decision"], repaired=again["repaired"])
