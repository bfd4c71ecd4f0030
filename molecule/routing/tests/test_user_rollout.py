"""The rollout role under canary_routing on real HAProxy (routing scenario).

Runs after test_routing.py (file order): the fleet is first put back where a
user's fleet would be before a run (every host on v1 in the stable backend,
everyone routed to stable), then the real grayrelease.canary.rollout playbook
rolls it while a crowd of users, each keeping its cookie, sends one request
per round, round after round. Each user's versions, in round order, show what
the run did to them.
"""
import json
import os
import threading
import time

import pytest

from conftest import BALANCER, INVENTORY, SPEC, Users, docker, record, routing
from fleet_test import build_release, haproxy_state, run_timed, version_of

APPS = ["rte-app1", "rte-app2", "rte-app3"]
KEYED, BETA, STAFF, VIP = 1000, 10, 40, 10
# Step N moves the hosts of canary_steps[N] (1, 2, 3 of 3) to the canary backend, then routes
# the users of steps[N]; the share of users never exceeds the share of hosts (33%, 66%, 100%).
ROLLOUT_ROUTING = dict(SPEC, steps=[{"groups": ["staff", "beta", "office"], "users": "10%"}, {"users": "50%"}, "100%"])
MAX_ROUNDS, MAX_SECONDS = 400, 420


@pytest.fixture(scope="module")
def people():
    users = [{"id": "u%05d" % i, "cookie": "u%05d" % i} for i in range(KEYED)]
    users += [{"id": "beta-%d" % i, "cookie": "beta-%d" % i} for i in range(1, BETA + 1)]
    users += [{"id": "vip-%d" % i, "cookie": "vip-%d" % i} for i in range(1, VIP + 1)]
    users += [{"id": "staff-%d" % i, "cookie": "staff-%d" % i, "headers": {"X-Canary": "1"}} for i in range(STAFF)]
    return Users("rollout-crowd", users)


def ansible(module, args):
    res = run_timed(["ansible", "-i", INVENTORY, BALANCER, "-m", module, "-a", json.dumps(args)], 120,
                    stdout_tail=800, stderr_tail=800)
    assert res.returncode == 0, res.stdout[-800:]


def reset_fleet():
    """Every host on v1 serving in the stable backend, nobody in the canary backend, everyone on stable."""
    for app in APPS:
        docker("exec", app, "sh", "-c", "ln -sfn releases/v1 /opt/demoapp/current.new && "
               "mv -T /opt/demoapp/current.new /opt/demoapp/current && systemctl restart demoapp", timeout=60)
    for app in APPS:
        deadline = time.monotonic() + 30
        while docker("exec", app, "python3", "-c", "import urllib.request;"
                     "urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)", check=False).returncode:
            assert time.monotonic() < deadline, "%s did not come back on v1" % app
            time.sleep(0.5)
    ansible("grayrelease.canary.haproxy_server", {"backend": "demoapp", "servers": APPS, "state": "ready",
                                                  "health_timeout": 30})
    ansible("grayrelease.canary.haproxy_route", {"routing": SPEC, "state": "stable"})
    ansible("grayrelease.canary.haproxy_server", {"backend": "demoapp_canary", "servers": APPS, "state": "maint",
                                                  "wait": False})
    assert [version_of(a) for a in APPS] == ["v1"] * 3


class Rounds(object):
    """Rounds of one request per user, back to back, in a thread, until stopped (bounded)."""

    def __init__(self, people, path="/version"):
        self.people, self.path, self.rounds, self.stop_event = people, path, [], threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop_event.is_set() and len(self.rounds) < MAX_ROUNDS and time.monotonic() < deadline:
            summary = self.people.round(requests=1, duration=60, path=self.path)
            self.rounds.append(summary)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=90)


def one(seen, what):
    values = list(seen[what])
    return values[0] if len(values) == 1 else None


def histories(rounds):
    """user -> [(version, route, failed)] in round order."""
    out = {}
    for summary in rounds:
        for user_id, seen in summary["users"].items():
            out.setdefault(user_id, []).append((one(seen, "v"), one(seen, "r"), seen["failed"]))
    return out


def rollout(version, artifact, routing_spec, report_dir, **extra):
    settings = {"canary_version": version, "canary_artifact": artifact, "canary_routing": routing_spec,
                "canary_steps": [1, 2, 3], "canary_max_unavailable": 1, "canary_analysis_interval": 5,
                "canary_analysis_count": 3, "canary_drain_timeout": 20, "canary_report_dir": report_dir}
    settings.update(extra)
    res = run_timed(["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.rollout", "-e", json.dumps(settings)],
                    900)
    with open(os.path.join(report_dir, "report.json"), encoding="utf-8") as handle:
        return res, json.load(handle)


def backends_at_rest():
    stable, canary = haproxy_state(BALANCER, "demoapp"), haproxy_state(BALANCER, "demoapp_canary")
    return ({s: i["admin_state"] for s, i in stable.items()}, {s: i["admin_state"] for s, i in canary.items()})


def test_promoted_under_user_routing_moves_users_only_forward(people, tmp_path):
    build_release("v1")
    artifact = build_release("v2")
    reset_fleet()
    people.round(requests=1)  # keyless users would get a cookie here; every user has its key from now on
    started = time.monotonic()
    with Rounds(people) as rounds:
        res, report = rollout("v2", artifact, ROLLOUT_ROUTING, str(tmp_path))
        time.sleep(2)
    seconds = round(time.monotonic() - started, 1)
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted", report.get("reason")
    after = people.round(requests=1)
    history = histories(rounds.rounds + [after])
    failed = sum(s["failed"] for s in rounds.rounds)
    assert failed == 0, "failed requests during a promoted run: %d" % failed
    backwards, vip_on_canary_early, beta_back, shares = [], [], [], []
    for user_id, seen in history.items():
        versions = [v for v, _r, _f in seen if v]
        first_new = versions.index("v2") if "v2" in versions else len(versions)
        # Once on the new version, never back: no user flips between versions during the run.
        if "v1" in versions[first_new:]:
            backwards.append((user_id, versions))
        for version, way, _failed in seen:
            if user_id.startswith("vip-") and way and way.startswith("canary/") and way != "canary/all":
                vip_on_canary_early.append((user_id, way))
        if user_id.startswith("beta-"):
            ways = [w for _v, w, _f in seen if w]
            first_canary = next((i for i, w in enumerate(ways) if w.startswith("canary/")), len(ways))
            if any(w.startswith("stable/bucket") or w.startswith("stable/share") for w in ways[first_canary:]):
                beta_back.append((user_id, ways))
    assert not backwards, "%d users went back to v1: %s" % (len(backwards), backwards[:3])
    assert not vip_on_canary_early, vip_on_canary_early[:3]
    assert not beta_back, beta_back[:3]
    # The share by bucket: in the rounds where every keyed user's route is what its bucket predicts at
    # 10% or at 50%, the users on the canary are within 2 points of the share.
    keyed = ["u%05d" % i for i in range(KEYED)]
    for percent in (10.0, 50.0):
        expected = dict((u, "canary/bucket" if routing.routes_to_canary(u, percent) else "stable/bucket")
                        for u in keyed)
        matching = [s for s in rounds.rounds if all(one(s["users"][u], "r") == expected[u] for u in keyed)]
        assert matching, "no round routed the users by bucket at %s%%" % percent
        on_canary = sum(one(matching[0]["users"][u], "v") == "v2" for u in keyed) * 100.0 / len(keyed)
        assert abs(on_canary - percent) <= 2, (percent, on_canary)
        shares.append({"percent": percent, "users_on_canary": round(on_canary, 2), "rounds": len(matching)})
    # The end: everyone on v2 through the stable backend; the canary backend empty.
    assert all(one(seen, "v") == "v2" and one(seen, "r") == "stable/all" for seen in after["users"].values())
    stable, canary = backends_at_rest()
    assert set(stable[a] for a in APPS) == {"ready"} and set(canary[a] for a in APPS) == {"maint"}
    assert [version_of(a) for a in APPS] == ["v2"] * 3
    record("user_rollout_promoted", seconds=seconds, rounds=len(rounds.rounds), users=len(history),
           requests=sum(s["requests"] for s in rounds.rounds), failed=failed, went_back=len(backwards), shares=shares)


def test_a_5xx_canary_under_user_routing_is_judged_on_its_users_and_rolled_back(people, tmp_path):
    artifact = build_release("v3", "--error-rate", "0.5")
    started = time.monotonic()
    # "/" is the path the release's injected errors answer.
    with Rounds(people, path="/") as rounds:
        res, report = rollout("v3", artifact, dict(ROLLOUT_ROUTING, steps=[{"users": "20%"}, {"users": "50%"},
                                                                           "100%"]), str(tmp_path),
                              canary_haproxy_log="/var/log/haproxy.log")
        time.sleep(2)
    seconds = round(time.monotonic() - started, 1)
    assert res.returncode != 0
    assert report["decision"] == "rolled_back", report.get("reason")
    assert "judged fail" in report["reason"], report["reason"]
    # Judged on the users picked by bucket (the request log's routes), the opt-in groups reported apart.
    step = report["steps"][0]
    routes = step["traffic_by_route"]
    # The report's measured share: every route's requests, the canary backend's part of them.
    share = step["canary_share"]
    assert share["of"] == sum(r["requests"] for r in routes.values()) > 0, (share, routes)
    assert share["requests"] == sum(r["requests"] for n, r in routes.items() if n.startswith("canary/")), share
    judged = step["judge"]["metrics"]["http_5xx_ratio"]
    bucket = routes["canary/bucket"]["requests"] + routes.get("canary/share", {}).get("requests", 0)
    assert judged["canary_count"] == bucket > 0, (judged, routes)
    assert judged["baseline_count"] == routes["stable/bucket"]["requests"], (judged, routes)
    opt_in = sum(r["requests"] for name, r in routes.items() if name.startswith("canary/optin:"))
    assert opt_in > 0 and judged["failed"], routes
    after = people.round(requests=1, path="/")
    # Every failed request was one the canary served: none of the users routed to stable lost one.
    outside = []
    for summary in rounds.rounds:
        for user_id, seen in summary["users"].items():
            ways = list(seen.get("fr") or {}) or ["(no response)"]
            if seen["failed"] and not all(way.startswith("canary/") for way in ways):
                outside.append((user_id, dict(seen)))
    assert not outside, "%d failed requests outside the canary's users: %s" % (len(outside), outside[:3])
    # Rolled back: everyone on v2 again (the fleet's version before), through the stable backend.
    assert all(one(seen, "v") == "v2" and one(seen, "r") == "stable/all" for seen in after["users"].values())
    stable, canary = backends_at_rest()
    assert set(stable[a] for a in APPS) == {"ready"} and set(canary[a] for a in APPS) == {"maint"}
    assert [version_of(a) for a in APPS] == ["v2"] * 3
    canary_failed = sum(s["failed"] for s in rounds.rounds)
    record("user_rollout_5xx_canary", seconds=seconds, rounds=len(rounds.rounds), canary_failed=canary_failed,
           failed_outside=len(outside), judged_canary=judged["canary_count"], opt_in_apart=opt_in,
           routes=dict((k, v["requests"]) for k, v in routes.items()), reason=report["reason"][:300])
