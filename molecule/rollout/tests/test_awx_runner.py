"""The rollout as AWX runs it, without an AWX server: ansible-runner (the engine
inside every AWX job) with a private data dir laid out the way AWX lays it out
(project/ with the playbooks of awx/project/, inventory/hosts as the script
AWX writes, env/extravars with the survey answers as strings, env/settings,
env/envvars, env/cmdline), on the local fleet.

The workflow of awx/configure.yml is replayed node by node with the variables
AWX would give each node (survey answers, the node's extra_data, the
workflow's extra_vars, the set_stats artifacts of the nodes before it): the
canary node stops at the manual gate with a successful job, the approved path
promotes the rest, the denied path's rollback job returns every host to the
release the canary replaced. Before that, a bad canary and a wrong checksum
fail the job with their reason in set_stats. The artifacts come from an
http.server inside app1: the hosts download them (canary_artifact_remote) or
the controller does.

Runs before test_rollout.py and leaves the fleet on v1, where that file starts.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess

import ansible_runner
import pytest
import yaml

from conftest import APPS, INVENTORY, REPO, build_release, docker, read_report, record, releases_on
from fleet_test import ansible_env, path_exists
from test_rollout import assert_fleet_serving

AWX = os.path.join(REPO, "awx")
with open(os.path.join(AWX, "survey.json"), encoding="utf-8") as _handle:
    SURVEY = json.load(_handle)
STATS_KEYS = {"canary_decision", "canary_version", "canary_previous_version", "canary_reason", "canary_verdict",
              "canary_score", "canary_summary", "canary_report", "canary_report_html", "canary_report_run_dir",
              "canary_report_copy", "canary_report_copy_error"}
# One canary host, then the other five at most three at a time; short analysis.
FAST = {"canary_steps": "1,100%", "canary_max_unavailable": "3", "canary_traffic_percent": "20",
        "canary_analysis_interval": "3", "canary_analysis_count": "2"}
SERVER_DIR = "/srv/grayrelease-artifacts"
# canary_report_upload in the workflow's canary job: the reports kept on a balancer.
KEPT_ON, KEPT_DIR = "lb2", "/var/lib/grayrelease-reports"
SERVER_PORT = 8099


def workflow_definition():
    """The workflow task of awx/configure.yml: its extra_vars and each node's extra_data."""
    with open(os.path.join(AWX, "configure.yml"), encoding="utf-8") as handle:
        play = yaml.safe_load(handle)[0]
    task = next(t for t in play["tasks"] if "awx.awx.workflow_job_template" in t)["awx.awx.workflow_job_template"]
    # configure.yml makes the nodes one by one from this list (see its comment on why).
    nodes = dict((n["identifier"], n) for n in play["vars"]["awx_workflow_nodes"])
    return task["extra_vars"], nodes


def survey_answers(**answers):
    """extra vars as AWX builds them from the survey: each answer or its default, a string, checked like AWX does."""
    out = {}
    for question in SURVEY["spec"]:
        name = question["variable"]
        value = answers.pop(name, question.get("default", ""))
        assert isinstance(value, str), (name, value)
        if question["type"] == "multiplechoice":
            assert value in question["choices"], (name, value)
        elif question["required"] or value:
            assert question["min"] <= len(value) <= question["max"], (name, value)
        out[name] = value
    assert not answers, "not survey questions: %s" % sorted(answers)
    return out


@pytest.fixture(scope="module")
def awx_inventory(tmp_path_factory):
    """inventory/hosts as AWX writes it: an executable that prints the inventory as JSON (with _meta)."""
    res = subprocess.run(["ansible-inventory", "-i", INVENTORY, "--list"], env=ansible_env(), capture_output=True,
                         text=True, check=True, timeout=60)
    listing = json.dumps(json.loads(res.stdout))
    path = tmp_path_factory.mktemp("awx-inventory") / "hosts"
    path.write_text("#!/usr/bin/env python3\nprint(%r)\n" % listing)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture(scope="module")
def artifact_store():
    """The test's artifact server: python3 -m http.server inside app1, on the fleet's network."""
    builds = {"awx1": build_release("awx1"), "awxbad": build_release("awxbad", "--error-rate", "0.5")}
    docker("exec", "app1", "mkdir", "-p", SERVER_DIR)
    for path in builds.values():
        docker("cp", path, "app1:%s/" % SERVER_DIR)
    docker("exec", "-d", "app1", "sh", "-c", "echo $$ > /run/artifact-server.pid; exec python3 -m http.server %d "
           "--bind 0.0.0.0 --directory %s" % (SERVER_PORT, SERVER_DIR))
    address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "app1").stdout.strip()
    docker("exec", "app1", "python3", "-c", "import time, urllib.request\nfor _ in range(50):\n    try:\n"
           "        urllib.request.urlopen('http://127.0.0.1:%d/', timeout=1); break\n"
           "    except OSError: time.sleep(0.1)" % SERVER_PORT)
    store = {
        "for_hosts": "http://app1:%d" % SERVER_PORT,           # the app hosts resolve the container name
        "for_controller": "http://%s:%d" % (address, SERVER_PORT),
        "sha256": dict((v, "sha256:" + hashlib.sha256(open(p, "rb").read()).hexdigest()) for v, p in builds.items()),
    }
    yield store
    docker("exec", "app1", "sh", "-c", "kill $(cat /run/artifact-server.pid); rm -rf %s /run/artifact-server.pid"
           % SERVER_DIR, check=False)


@pytest.fixture(autouse=True)
def user_environment(monkeypatch):
    # ansible-runner starts from os.environ: drop molecule's ansible.cfg and inventory, as ansible_env() does.
    wanted = ansible_env()
    for key in list(os.environ):
        if key not in wanted:
            monkeypatch.delenv(key)
    for key, value in wanted.items():
        monkeypatch.setenv(key, value)


def run_job(tmp_path, name, inventory, extravars, playbook="rollout.yml"):
    """One AWX job: lay out the private data dir, run it through ansible_runner.run, return the runner."""
    pdd = tmp_path / name
    shutil.copytree(os.path.join(AWX, "project"), str(pdd / "project"))
    (pdd / "inventory").mkdir()
    shutil.copy(inventory, str(pdd / "inventory" / "hosts"))
    (pdd / "env").mkdir()
    (pdd / "env" / "extravars").write_text(json.dumps(extravars))
    (pdd / "env" / "settings").write_text(json.dumps({"job_timeout": 600, "idle_timeout": 300}))
    # The execution environment's collection path; what AWX puts on the command line.
    (pdd / "env" / "envvars").write_text(json.dumps({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".build", "collections"),
        "ANSIBLE_FORCE_COLOR": "false", "ANSIBLE_NOCOLOR": "1"}))
    (pdd / "env" / "cmdline").write_text("--forks 20")
    runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True)
    runner.all_events = list(runner.events)
    with open(os.path.join(runner.config.artifact_dir, "stdout"), encoding="utf-8") as handle:
        print(handle.read()[-6000:])
    return runner


def final_stats(runner):
    """The playbook_on_stats event: AWX reads the job's artifacts (set_stats) from it."""
    stats = [e for e in runner.all_events if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1
    return stats[0]["event_data"]


def failed_tasks(runner):
    """(host, task) of every failure that was not ignored; unreachable hosts too."""
    return [(e["event_data"].get("host"), e["event_data"].get("task")) for e in runner.all_events
            if e["event"] == "runner_on_unreachable"
            or (e["event"] == "runner_on_failed" and not e["event_data"].get("ignore_errors"))]


def published(runner, report_parent):
    """set_stats as the next workflow node gets it, checked against report.json."""
    data = final_stats(runner)["artifact_data"]
    assert STATS_KEYS <= set(data), data
    report = read_report(report_parent)
    assert data["canary_report"] == str(report_parent / "report.json")
    assert data["canary_report_html"] == str(report_parent / "report.html")
    assert "<svg" in (report_parent / "report.html").read_text(encoding="utf-8")
    assert (data["canary_decision"], data["canary_version"], data["canary_previous_version"],
            data["canary_reason"]) == (report["decision"], report["version"], report["previous_version"],
                                       report["reason"])
    assert isinstance(data["canary_summary"], list) and data["canary_summary"]
    return data, report


def test_bad_canary_fails_the_job_with_its_reason(tmp_path, awx_inventory, artifact_store, report_dir):
    # The controller downloads the artifact once and ships it (canary_artifact_remote=false).
    extravars = survey_answers(canary_version="awxbad",
                               canary_artifact=artifact_store["for_controller"] + "/demoapp-awxbad.tar.gz",
                               canary_artifact_checksum=artifact_store["sha256"]["awxbad"], **FAST)
    extravars["canary_report_dir"] = str(report_dir / "awx-bad")
    runner = run_job(tmp_path, "bad", awx_inventory, extravars)
    data, report = published(runner, report_dir / "awx-bad")
    record("awx-runner bad canary", status=runner.status, seconds=report["seconds"], reason=report["reason"])
    assert runner.status == "failed" and runner.rc != 0
    assert data["canary_decision"] == "rolled_back" and data["canary_verdict"] == "fail"
    assert "judged fail" in data["canary_reason"]
    assert data["canary_score"] not in ("", None) and float(data["canary_score"]) < 75
    assert any("rolled_back" in line for line in data["canary_summary"]), data["canary_summary"]
    # The job failed on purpose, at the last task only; nothing unreachable.
    assert failed_tasks(runner) == [("localhost", "Finish | the rollout was not promoted")]
    assert final_stats(runner)["failures"] == {"localhost": 1}
    assert_fleet_serving({h: "v1" for h in APPS})


def test_wrong_checksum_on_the_hosts_stops_before_any_switch(tmp_path, awx_inventory, artifact_store, report_dir):
    # A version no test installs: had any host unpacked it, it would show.
    extravars = survey_answers(canary_version="awx2", canary_artifact_remote="true",
                               canary_artifact=artifact_store["for_hosts"] + "/demoapp-awx1.tar.gz",
                               canary_artifact_checksum="sha256:" + "0" * 64, **FAST)
    extravars["canary_report_dir"] = str(report_dir / "awx-badsum")
    before = {h: releases_on(h) for h in APPS}
    runner = run_job(tmp_path, "badsum", awx_inventory, extravars)
    data, report = published(runner, report_dir / "awx-badsum")
    assert runner.status == "failed"
    assert data["canary_decision"] == "failed" and data["canary_verdict"] in ("", None, "None")
    assert "checksum mismatch" in data["canary_reason"] and artifact_store["sha256"]["awx1"][7:] in data["canary_reason"]
    assert report["steps"] == []
    # Nothing switched, nothing left staged or half-downloaded.
    assert {h: releases_on(h) for h in APPS} == before
    assert not any("awx2" in releases for releases in before.values())
    for host in APPS:
        assert docker("exec", host, "ls", "-A", "/opt/demoapp/.staging", check=False).stdout.split() == [], host
    assert_fleet_serving({h: "v1" for h in APPS})


def test_workflow_gate_then_promote(tmp_path, awx_inventory, artifact_store, report_dir):
    workflow_vars, nodes = workflow_definition()
    assert nodes["canary"]["related"]["success_nodes"] == [{"identifier": "approve"}]
    assert nodes["approve"]["unified_job_template"]["type"] == "workflow_approval"
    # Every app host downloads the artifact itself and checks its sum.
    answers = survey_answers(canary_version="awx1", canary_artifact_remote="true",
                             canary_artifact=artifact_store["for_hosts"] + "/demoapp-awx1.tar.gz",
                             canary_artifact_checksum=artifact_store["sha256"]["awx1"], **FAST)

    # Node "canary": the node's extra_data, then the workflow's variables over it, and a
    # variable given at launch (ask_variables_on_launch): the reports kept on lb2.
    extravars = dict(answers, **nodes["canary"]["extra_data"])
    extravars.update(workflow_vars, canary_report_dir=str(report_dir / "awx-canary"),
                     canary_report_upload=KEPT_ON + ":" + KEPT_DIR)
    runner = run_job(tmp_path, "canary", awx_inventory, extravars)
    data, report = published(runner, report_dir / "awx-canary")
    assert runner.status == "successful" and runner.rc == 0
    # The reports outlive the job's execution environment: this run's copy on lb2.
    run = os.path.basename(data["canary_report_run_dir"])
    assert (data["canary_report_copy"], data["canary_report_copy_error"]) == (
        "%s:%s/%s/report.html" % (KEPT_ON, KEPT_DIR, run), "")
    for name in ("report.json", "report.md", "report.html"):
        kept = docker("exec", KEPT_ON, "cat", "%s/%s/%s" % (KEPT_DIR, run, name)).stdout
        assert kept == open(os.path.join(data["canary_report_run_dir"], name), encoding="utf-8").read(), name
    docker("exec", KEPT_ON, "rm", "-rf", KEPT_DIR)
    assert failed_tasks(runner) == [] and final_stats(runner)["failures"] == {}
    assert data["canary_decision"] == "paused" and data["canary_verdict"] == "pass"
    assert float(data["canary_score"]) == 100
    assert (data["canary_version"], data["canary_previous_version"]) == ("awx1", "v1")
    assert [s["hosts"] for s in report["steps"]] == [["app1"]]
    # The gate: the canary serves at full weight on awx1, the rest on v1, the lock released.
    assert_fleet_serving(dict({h: "v1" for h in APPS}, app1="awx1"))
    assert not path_exists("lb1", "/var/lib/grayrelease-canary/demoapp.lock")

    # Approved -> node "promote": the canary job's artifacts reach it as extra vars.
    extravars = dict(answers, **nodes["promote"]["extra_data"])
    extravars.update(workflow_vars)
    extravars.update(data)
    extravars["canary_report_dir"] = str(report_dir / "awx-promote")
    runner = run_job(tmp_path, "promote", awx_inventory, extravars)
    promoted, report = published(runner, report_dir / "awx-promote")
    record("awx-runner workflow", canary_seconds=read_report(report_dir / "awx-canary")["seconds"],
           promote_seconds=report["seconds"])
    assert runner.status == "successful" and failed_tasks(runner) == []
    assert promoted["canary_decision"] == "promoted"
    assert (promoted["canary_version"], promoted["canary_previous_version"]) == ("awx1", "v1")
    assert report["done_before"] == ["app1"] and sorted(report["hosts"]) == APPS
    assert_fleet_serving({h: "awx1" for h in APPS})


def test_deny_path_rollback_job_returns_the_fleet(tmp_path, awx_inventory):
    # What the denied approval's node gets: the workflow's answers and the canary
    # job's artifacts, whose canary_previous_version was v1 (asserted above).
    _workflow_vars, nodes = workflow_definition()
    assert nodes["approve"]["related"]["failure_nodes"] == [{"identifier": "roll-back"}]
    assert nodes["roll-back"]["unified_job_template"]["name"] == "{{ awx_rollback_template }}"
    extravars = dict(survey_answers(canary_version="awx1", canary_artifact="unused", **FAST),
                     canary_previous_version="v1")
    runner = run_job(tmp_path, "rollback", awx_inventory, extravars, playbook="rollback.yml")
    assert runner.status == "successful" and failed_tasks(runner) == []
    assert_fleet_serving({h: "v1" for h in APPS})
