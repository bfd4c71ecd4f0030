"""Gray release by user on real HAProxy (routing scenario).

rte-app1 and rte-app2 serve v1 (backend demoapp), rte-app3 serves v2 (backend
demoapp_canary); HAProxy routes with the rules of
grayrelease.canary.routing_config, and the steps of files/routing.yml are set
with grayrelease.canary.haproxy_route. A crowd of 1,700 users (1,500 with a
user key cookie, 200 keyless clients that HAProxy gives a cookie) keeps its
cookies across the whole run. Tests run in file order and share the crowd.
Figures go to .build/routing-measurements.jsonl and are printed.
"""
import hashlib
import time

import pytest

from conftest import BALANCER, NET_MAP, SPEC, STR_MAP, Users, docker, read, record, route, routing

KEYED, KEYLESS = 1500, 200
# Step index (1-based) -> share of users of files/routing.yml.
STEP_SHARES = {1: 0.0, 2: 1.0, 3: 5.0, 4: 20.0, 5: 50.0, 6: 100.0}


@pytest.fixture(scope="module")
def crowd():
    users = [{"id": "u%05d" % i, "cookie": "u%05d" % i} for i in range(KEYED)]
    users += [{"id": "k%03d" % i, "cookie": None} for i in range(KEYLESS)]
    return Users("crowd", users)


def canary_version(version):
    return version == "v2"


def check_round(summary, percent, mode="step"):
    """Every user saw one version, the version its route names, and (by bucket) the one its key's bucket
    predicts. Returns (users on canary, users who saw both versions)."""
    assert summary["failed"] == 0, summary["errors"]
    both, on_canary, wrong = [], 0, []
    for user_id, seen in summary["users"].items():
        assert seen["failed"] == 0, (user_id, seen)
        versions = set(seen["v"])
        if len(versions) != 1:
            both.append(user_id)
            continue
        version = versions.pop()
        routes = set(seen["r"])
        assert len(routes) == 1, (user_id, seen)
        way = routes.pop()
        assert way.startswith("canary/") == canary_version(version), (user_id, seen)
        if mode == "step":
            predicted = routing.routes_to_canary(seen["key"], percent)
            if way != ("canary/bucket" if predicted else "stable/bucket"):
                wrong.append((user_id, seen["key"], routing.bucket_of(seen["key"]), way))
        else:
            assert way == "%s/all" % mode, (user_id, seen)
        on_canary += canary_version(version)
    assert not both, "%d users saw both versions: %s" % (len(both), both[:5])
    assert not wrong, "%d users routed against their bucket: %s" % (len(wrong), wrong[:5])
    return on_canary, len(both)


def test_start_everyone_on_stable_and_keyless_clients_get_a_key(crowd):
    summary = crowd.round(requests=1)
    on_canary, _both = check_round(summary, 0, mode="stable")
    assert on_canary == 0
    keys = [seen["key"] for seen in summary["users"].values()]
    assert all(keys) and len(set(keys)) == KEYED + KEYLESS


def test_steps_keep_each_user_on_one_version_and_users_only_move_to_the_canary(crowd):
    previous = {}
    rows = []
    for step in sorted(STEP_SHARES):
        percent = STEP_SHARES[step]
        code, result, seconds, out = route("step", step=step)
        assert code == 0, out
        assert result["percent"] == percent and result["step"] == step
        t0 = time.monotonic()
        summary = crowd.round(requests=2)
        round_seconds = time.monotonic() - t0
        on_canary, both = check_round(summary, percent)
        users = len(summary["users"])
        share = 100.0 * on_canary / users
        now = dict((u, set(s["v"]) == {"v2"}) for u, s in summary["users"].items())
        back = [u for u in previous if previous[u] and not now[u]]
        assert not back, "%d users went back from canary to stable: %s" % (len(back), back[:5])
        moved = sum(1 for u in previous if now[u] and not previous[u])
        previous = now
        rows.append(dict(step=step, percent=percent, users=users, requests=summary["requests"], both=both,
                         on_canary=on_canary, share=round(share, 2), moved_to_canary=moved, back_to_stable=0,
                         route_seconds=seconds, round_seconds=round(round_seconds, 1),
                         rps=round(summary["requests"] / max(summary["seconds"], 0.01))))
        assert abs(share - percent) <= 2.0, rows[-1]
    for row in rows:
        print("step %(step)d P=%(percent)s%%: %(users)d users, %(requests)d requests, %(both)d saw both, "
              "%(on_canary)d on canary (%(share)s%%), %(moved_to_canary)d moved to canary, set in "
              "%(route_seconds)s s, round %(round_seconds)s s (%(rps)d req/s)" % row)
    record("steps", rows=rows)


def test_contrast_share_of_requests_by_weights_flips_most_users():
    """Today's mode on the same servers: 20% of requests to the canary by weights (fe_weights, port 81)."""
    users = Users("weights", [{"id": "w%05d" % i, "cookie": "w%05d" % i} for i in range(1000)])
    summary = users.round(requests=5, port=81)
    assert summary["failed"] == 0, summary["errors"]
    both = sum(1 for seen in summary["users"].values() if len(seen["v"]) > 1)
    canary_requests = sum(seen["v"].get("v2", 0) for seen in summary["users"].values())
    print("by weights (20%% of requests): %d of 1000 users saw both versions in 5 requests; %.1f%% of requests "
          "on the canary" % (both, 100.0 * canary_requests / summary["requests"]))
    record("weights", users=1000, requests=summary["requests"], both=both,
           canary_request_share=round(100.0 * canary_requests / summary["requests"], 2))
    assert both > 500


def group_users():
    users = []
    for i in range(1, 11):
        users.append({"id": "beta-%d" % i, "cookie": "beta-%d" % i, "expect": "canary/optin:beta"})
        users.append({"id": "vip-%d" % i, "cookie": "vip-%d" % i, "expect": "stable/optout:vip"})
    for i in range(20):
        users.append({"id": "staff-%d" % i, "cookie": "staff-%d" % i, "headers": {"X-Canary": "1"},
                      "expect": "canary/optin:staff"})
        users.append({"id": "never-%d" % i, "cookie": "never-%d" % i, "headers": {"X-Canary": "never"},
                      "expect": "stable/optout:never"})
        users.append({"id": "office-%d" % i, "cookie": "office-%d" % i, "src": "127.0.0.%d" % (4 + i % 4),
                      "expect": "canary/optin:office"})
        users.append({"id": "lab-%d" % i, "cookie": "lab-%d" % i, "src": "127.0.0.%d" % (8 + i % 4),
                      "expect": "stable/optout:lab"})
    # Opt-out first: an opted-out user with the testers' header, or from the office, stays on stable.
    users.append({"id": "vip-1-staff", "cookie": "vip-1", "headers": {"X-Canary": "1"}, "expect": "stable/optout:vip"})
    users.append({"id": "lab-office", "cookie": "lab-x", "src": "127.0.0.9", "headers": {"X-Canary": "1"},
                  "expect": "stable/optout:lab"})
    users.append({"id": "never-office", "cookie": "n-x", "src": "127.0.0.5", "headers": {"X-Canary": "never"},
                  "expect": "stable/optout:never"})
    return users


@pytest.mark.parametrize("step", [1, 4, 6])
def test_groups_opt_in_from_the_first_step_opt_out_always(step):
    people = group_users()
    code, _result, _seconds, out = route("step", step=step)
    assert code == 0, out
    summary = Users("groups", people).round(requests=3)
    assert summary["failed"] == 0, summary["errors"]
    for person in people:
        seen = summary["users"][person["id"]]
        assert seen["r"] == {person["expect"]: 3}, (step, person, seen)
        assert seen["v"] == {("v2" if person["expect"].startswith("canary/") else "v1"): 3}, (step, person, seen)
    print("step %d: %d group requests, every one where its group says" % (step, summary["requests"]))
    record("groups", step=step, requests=summary["requests"], people=len(people))


def test_reload_mid_step_keeps_every_user_where_they_were(crowd):
    code, _result, _seconds, out = route("step", step=5)
    assert code == 0, out
    pid_before = docker("exec", BALANCER, "systemctl", "show", "-p", "MainPID", "--value", "haproxy").stdout.strip()
    crowd.start(requests=3, pause=0.002)
    time.sleep(3)
    t_reload = time.monotonic()
    docker("exec", BALANCER, "systemctl", "reload", "haproxy", timeout=60)
    reload_seconds = time.monotonic() - t_reload
    summary = crowd.finish()
    on_canary, _both = check_round(summary, 50.0)
    # The reload happened during the round, and the new process read the map files: no change to make.
    workers = docker("exec", BALANCER, "pgrep", "-c", "-f", "haproxy").stdout.strip()
    code, result, _seconds, out = route("step", step=5)
    assert code == 0 and not result["changed"], out
    print("reload under load: %d requests in %.1f s, reload %.1f s (master pid %s, %s haproxy processes after), "
          "%d retried on a closed keep-alive connection, 0 failed, %d users on canary (%.2f%%)"
          % (summary["requests"], summary["seconds"], reload_seconds, pid_before, workers, summary["retried"],
             on_canary, 100.0 * on_canary / len(summary["users"])))
    assert summary["seconds"] > reload_seconds + 3, "the round ended before the reload did"
    record("reload", requests=summary["requests"], seconds=summary["seconds"], retried=summary["retried"],
           on_canary=on_canary)


def test_finish_and_rollback_move_every_user_within_one_request(crowd):
    for state, version in (("canary", "v2"), ("stable", "v1")):
        code, result, seconds, out = route(state)
        assert code == 0 and result["changed"], out
        summary = crowd.round(requests=1)
        check_round(summary, None, mode=state)
        assert all(set(s["v"]) == {version} for s in summary["users"].values())
        people = group_users()
        groups = Users("groups", people).round(requests=1)
        assert all(set(s["v"]) == {version} for s in groups["users"].values()), state
        print("state %s: set in %.1f s, the next request of each of %d users on %s"
              % (state, seconds, len(summary["users"]) + len(people), version))
        record("state", state=state, seconds=seconds, users=len(summary["users"]) + len(people))


def fingerprint():
    live = docker("exec", "-i", BALANCER, "python3", "-", input_text=(
        "import socket\n"
        "def c(cmd):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); s.sendall(cmd.encode() + b'\\n')\n"
        "    d = b''\n"
        "    while True:\n"
        "        x = s.recv(65536)\n"
        "        if not x: return d.decode()\n"
        "        d += x\n"
        "print(c('show map %s') + c('show map %s'))\n" % (STR_MAP, NET_MAP))).stdout
    files = read(BALANCER, STR_MAP) + read(BALANCER, NET_MAP)
    return hashlib.sha256(files.encode()).hexdigest(), sorted(line.split(None, 1)[1] for line in live.splitlines()
                                                              if line.startswith("0x"))


def bad(**changes):
    spec = dict(SPEC)
    spec.update(changes)
    return spec


@pytest.mark.parametrize("case,spec,extra,needle", [
    ("unknown group", bad(steps=[{"group": "stuff"}]), {}, "'stuff', which is not an opt-in group"),
    ("malformed CIDR", bad(opt_in=[{"name": "office", "networks": ["10.0.0.0/40"]}]), {}, "'10.0.0.0/40'"),
    ("share above 100", None, {"percent": 120}, "120 is outside 0-100"),
    ("share below 0", bad(steps=[{"users": -5}]), {}, "-5 is outside 0-100"),
    ("bad key name", bad(key={"cookie": "user id"}), {}, "'user id' is not a name HAProxy can use"),
    ("missing map", bad(backend="shop"), {}, "has no map loaded from /etc/haproxy/routing/shop.map"),
])
def test_bad_input_refused_before_anything_changes(case, spec, extra, needle):
    before = fingerprint()
    code, _result, _seconds, out = route("step", step=extra.get("step", 2), percent=extra.get("percent"), spec=spec)
    assert code != 0, (case, out)
    assert needle in out, (case, out)
    assert fingerprint() == before, case


def test_check_mode_reports_and_changes_nothing():
    before = fingerprint()
    code, result, _seconds, out = route("canary", flags=["--check", "--diff"])
    assert code == 0 and result["changed"], out
    assert "+=mode canary" in out and "-=mode stable" in out, out
    assert fingerprint() == before


def test_request_log_records_the_route():
    route("step", step=3)
    Users("logged", [{"id": "log-%d" % i, "cookie": "log-%d" % i} for i in range(200)]
          + [{"id": "logstaff", "cookie": "x", "headers": {"X-Canary": "1"}}]).round(requests=1)
    time.sleep(1)
    log = docker("exec", BALANCER, "tail", "-n", "400", "/var/log/haproxy.log").stdout
    assert "{canary/optin:staff}" in log and "{stable/bucket}" in log, log[-2000:]
    line = [x for x in log.splitlines() if "{canary/optin:staff}" in x][-1]
    assert "demoapp_canary/rte-app3" in line, line
    print("a request log line:", line)
