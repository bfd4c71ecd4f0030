"""Webhook notifications on real rollouts of the local fleet (issue 21, item 4).

A receiver runs in this test as a thread on 127.0.0.1: the rollout's
coordinator runs on this machine (the controller), so the webhook is sent
from here, at the engine's transitions, with no task of its own.

- a receiver that answers: every event arrives once, in the run's order, with
  the report's summary; the Authorization header reaches it and appears
  nowhere in report.json, report.md, report.html or the ansible output (-vvv);
- a receiver that answers 500 (Slack format) to a canary that fails: each
  event tried retries + 1 times, the rollback and the report as without it;
- a receiver that hangs: every event cut at canary_notify_timeout, the run
  promoted; this last run brings the fleet back to v1, where test_rollout.py starts;
- a URL that is not http(s) and an unknown event refuse the run before anything changes.

Runs after test_awx_runner.py (which leaves the fleet on v1) and before test_rollout.py.
"""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import APPS, build_release, read_report, record, run_playbook, version_of

SECRET = "Bearer gr-notify-s3cr3t-7f1c"
TEAM = "team-token-91ab"
FAST = ["-e", '{"canary_analysis_interval": 3, "canary_analysis_count": 2, "canary_max_unavailable": 2,'
              ' "canary_steps": [1, "50%", "100%"], "canary_drain_timeout": 10}']
# The longest a hanging receiver holds a request (the test's own bound).
HANG_CAP = 20.0


class Receiver(object):
    """POSTs received on 127.0.0.1, kept as (seconds since start, path, headers, JSON body).
    mode: 'ok' (200), 'fail' (500), 'hang' (no answer until HANG_CAP or close())."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.got = []
        self.started = time.monotonic()
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_POST(self):  # pylint: disable=invalid-name
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(size, 1 << 20)) if size else b""
                try:
                    doc = json.loads(raw.decode("utf-8"))
                except ValueError:
                    doc = {"unparsed": raw.decode("utf-8", "replace")}
                receiver.got.append({"at": round(time.monotonic() - receiver.started, 3), "path": self.path,
                                     "headers": dict((k.lower(), v) for k, v in self.headers.items()), "body": doc})
                if receiver.mode == "hang":
                    receiver.stop.wait(HANG_CAP)
                    return
                status = 500 if receiver.mode == "fail" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hooks/T0/B0/pathsecret" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def events(self):
        """(event, step index) of each distinct delivery, in the order they arrived."""
        seen = []
        for item in self.got:
            body = item["body"]
            key = (body.get("event"), (body.get("step") or {}).get("index"))
            if key not in seen:
                seen.append(key)
        return seen

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(mode="ok"):
        made.append(Receiver(mode))
        return made[-1]
    yield make
    for item in made:
        item.close()


def notify_vars(url, **over):
    conf = {"canary_notify_url": url, "canary_notify_headers": {"Authorization": SECRET, "X-Team": TEAM}}
    conf.update(over)
    return ["-e", json.dumps(conf)]


def report_texts(directory):
    """Every report file of the run (top level and the run's own copy) as text."""
    texts = {}
    for root, dummy, files in os.walk(str(directory)):
        for name in files:
            if name.startswith("report."):
                with open(os.path.join(root, name), encoding="utf-8") as handle:
                    texts[os.path.join(root, name)] = handle.read()
    return texts


def assert_no_secret(res, directory):
    texts = report_texts(directory)
    assert len(texts) >= 6, sorted(texts)  # report.json, .md, .html at the top and in runs/<run>/
    for where, text in list(texts.items()) + [("ansible stdout", res.stdout), ("ansible stderr", res.stderr)]:
        for secret in (SECRET, "s3cr3t", TEAM, "pathsecret"):
            assert secret not in text, "%s found in %s" % (secret, where)


def test_fleet_is_on_v1():
    assert {h: version_of(h) for h in APPS} == {h: "v1" for h in APPS}


def test_events_arrive_in_order_with_the_summary_and_no_secret_anywhere(receiver, report_dir):
    rx = receiver("ok")
    artifact = build_release("nt2")
    out = report_dir / "notify-promote"
    res = run_playbook("rollout", "-vvv", "-e", "canary_version=nt2", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s" % out, *(FAST + notify_vars(rx.url)))
    report = read_report(out)
    record("notify-promote", playbook_seconds=res.seconds, report_seconds=report["seconds"],
           deliveries=[(d["event"], d["step"], d["attempts"], d["seconds"]) for d in
                       report["notifications"]["deliveries"]],
           received_at=[(g["body"]["event"], g["at"]) for g in rx.got])
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted"
    # Once each, in the order of the run (the receiver's order of arrival).
    assert rx.events() == [("run_started", None), ("step_started", 1), ("step_finished", 1), ("step_started", 2),
                           ("step_finished", 2), ("step_started", 3), ("step_finished", 3), ("finished", None)]
    assert len(rx.got) == 8
    bodies = [g["body"] for g in rx.got]
    run_id = report["run"]["run"]
    for body in bodies:
        assert body["schema"] == "grayrelease.canary/notification/v1"
        assert (body["service"], body["backend"], body["version"]) == ("demoapp", "demoapp", "nt2")
        assert body["previous_version"] == "v1" and body["run_id"] == run_id
        assert body["report"] == str(out / "report.json")
        assert body["report_run"].startswith(str(out / "runs")) and run_id in body["report_run"]
        assert body["text"]
    assert bodies[0]["steps"] == 3 and bodies[0]["hosts"] == 6 and bodies[0]["plan"] == report["plan"]
    canary = bodies[2]
    assert canary["step"]["index"] == 1 and canary["step"]["canary"] is True and canary["step"]["outcome"] == "ok"
    assert canary["step"]["hosts"] == report["steps"][0]["hosts"]
    assert canary["verdict"] == report["steps"][0]["judge"]["verdict"] == "pass"
    assert canary["score"] == report["steps"][0]["judge"]["score"]
    assert [b["step"]["hosts"] for b in bodies if b["event"] == "step_started"] == [s["hosts"] for s in report["steps"]]
    assert bodies[-1]["decision"] == "promoted" and bodies[-1]["hosts"] == {h: "nt2" for h in APPS}
    # The header reached the receiver, and nothing else ever shows it.
    assert all(g["headers"]["authorization"] == SECRET and g["headers"]["x-team"] == TEAM for g in rx.got)
    assert all(g["path"] == "/hooks/T0/B0/pathsecret" for g in rx.got)
    section = report["notifications"]
    assert section["target"] == rx.url.split("/hooks")[0] and section["format"] == "json"
    assert [(d["event"], d["step"]) for d in section["deliveries"]] == rx.events()
    assert all(d["delivered"] and d["attempts"] == 1 and d["status"] == 200 for d in section["deliveries"])
    assert_no_secret(res, out)
    assert {h: version_of(h) for h in APPS} == {h: "nt2" for h in APPS}


def test_a_receiver_answering_500_neither_fails_nor_changes_a_rollback(receiver, report_dir):
    rx = receiver("fail")
    artifact = build_release("nt3", "--error-rate", "0.5")
    out = report_dir / "notify-500"
    res = run_playbook("rollout", "-e", "canary_version=nt3", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s" % out,
                       *(FAST + notify_vars(rx.url, canary_notify_format="slack", canary_notify_retries=2,
                                            canary_notify_timeout=10)))
    report = read_report(out)
    deliveries = report["notifications"]["deliveries"]
    record("notify-500", playbook_seconds=res.seconds, decision=report["decision"],
           deliveries=[(d["event"], d["attempts"], d["status"], d["seconds"]) for d in deliveries])
    # The rollout's own outcome: the failing canary rolled back (exit non-zero for that reason alone).
    assert res.returncode != 0
    assert report["decision"] == "rolled_back" and "judged" in report["reason"]
    assert report["hosts"] == {h: "nt2" for h in APPS}
    # A Slack body names no event: the order is the report's, the receiver's count is retries + 1 per event.
    assert [(d["event"], d["step"]) for d in deliveries] == [
        ("run_started", None), ("step_started", 1), ("step_finished", 1), ("rolling_back", None), ("finished", None)]
    # Slack's body: text and blocks, the words a person reads.
    for got in rx.got:
        assert set(got["body"]) == {"text", "blocks"}
    texts = [g["body"]["text"] for g in rx.got]
    assert any("FAILED, judged fail" in t for t in texts), texts
    assert any("ROLLING BACK" in t for t in texts) and texts[-1].endswith("finished: ROLLED_BACK")
    # retries + 1 attempts each, all recorded as not delivered.
    assert len(rx.got) == 5 * 3
    assert all(not d["delivered"] and d["attempts"] == 3 and d["status"] == 500 for d in deliveries)
    assert all(d["seconds"] < 10 for d in deliveries)
    assert "NOT delivered" in open(str(out / "report.md"), encoding="utf-8").read()
    assert_no_secret(res, out)


def test_a_receiver_that_hangs_costs_each_event_at_most_its_timeout(receiver, report_dir):
    """The last run: back to v1 (releases/v1 is on every host already), for test_rollout.py."""
    rx = receiver("hang")
    artifact = build_release("v1")
    out = report_dir / "notify-hang"
    timeout = 1.5
    res = run_playbook("rollout", "-e", "canary_version=v1", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s" % out,
                       *(FAST + notify_vars(rx.url, canary_notify_timeout=timeout, canary_notify_retries=3,
                                            canary_notify_events="run_started,step_finished,finished")))
    report = read_report(out)
    deliveries = report["notifications"]["deliveries"]
    record("notify-hang", playbook_seconds=res.seconds, report_seconds=report["seconds"],
           deliveries=[(d["event"], d["attempts"], d["seconds"], d["error"]) for d in deliveries])
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted"
    assert [(d["event"], d["step"]) for d in deliveries] == [
        ("run_started", None), ("step_finished", 1), ("step_finished", 2), ("step_finished", 3), ("finished", None)]
    for item in deliveries:
        assert not item["delivered"] and item["status"] is None
        assert item["seconds"] <= timeout + 0.5, item
        assert "no answer" in item["error"] or "no time left" in item["error"], item
    # What the receiver saw: no attempt of an event started later than the timeout after its first.
    assert sum(d["seconds"] for d in deliveries) <= len(deliveries) * (timeout + 0.5)
    assert_no_secret(res, out)
    assert {h: version_of(h) for h in APPS} == {h: "v1" for h in APPS}


@pytest.mark.parametrize("conf, needle", [
    ({"canary_notify_url": "ftp://hooks.example.com/x"}, "canary_notify_url=ftp://hooks.example.com/x"),
    ({"canary_notify_url": "https://hooks.example.com/x", "canary_notify_events": ["finished", "deployed"]},
     "'deployed' is not an event"),
    ({"canary_notify_url": "https://hooks.example.com/x", "canary_notify_format": "teams"},
     "canary_notify_format='teams'"),
])
def test_bad_notification_settings_refuse_the_run_before_anything_changes(report_dir, conf, needle):
    artifact = build_release("nt4")
    out = report_dir / ("notify-bad-%s" % sorted(conf)[-1])
    res = run_playbook("rollout", "-e", "canary_version=nt4", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s" % out, "-e", json.dumps(conf))
    assert res.returncode != 0
    report = read_report(out)
    assert report["decision"] == "failed" and needle in report["reason"], report["reason"]
    assert report["reason"].startswith("bad input, nothing was changed")
    assert report["steps"] == [] and report["staged"] == []
    assert {h: version_of(h) for h in APPS} == {h: "v1" for h in APPS}
