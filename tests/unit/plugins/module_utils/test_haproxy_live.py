# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""haproxy_server / haproxy_info logic against a real HAProxy on loopback."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _haproxy_fixture import running_lab  # noqa: E402

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import (  # noqa: E402
    HAProxyError,
    RuntimeAPI,
    ServerControl,
    gather_info,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import canary_weights  # noqa: E402

pytestmark = [pytest.mark.haproxy]

lab = pytest.fixture(running_lab)


def ctl(lab, servers, socket_path=None):
    return ServerControl(RuntimeAPI(socket_path or lab.admin), "web", servers)


def admin_states(lab):
    info = gather_info(RuntimeAPI(lab.admin), "web")["web"]
    return dict((s, (i["admin_state"], i["weight"])) for s, i in info.items())


def test_info_counts_requests_as_numbers(lab):
    api = RuntimeAPI(lab.user)  # read-only: user level is enough
    before = gather_info(api, "web")["web"]
    for _attempt in range(24):
        lab.get("/")
    after = gather_info(api, "web")["web"]
    delta = dict((s, after[s]["req_tot"] - before[s]["req_tot"]) for s in after)
    assert sum(delta.values()) == 24
    # roundrobin on weights 1, 1, 10 (bad is DOWN): 2, 2, 20
    assert delta == {"s1": 2, "s2": 2, "s3": 20, "bad": 0}
    served = dict((n, a.served) for n, a in lab.apps.items())
    assert served == {"s1": 2, "s2": 2, "s3": 20, "bad": 0}
    s1 = after["s1"]
    for key in ("req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
                "econ", "eresp", "rtime", "ttime", "qtime", "scur", "stot", "weight"):
        assert isinstance(s1[key], int), key
    assert s1["hrsp_2xx"] - before["s1"]["hrsp_2xx"] == 2
    assert (s1["status"], s1["check_status"], s1["admin_state"]) == ("UP", "L7OK", "ready")
    assert after["bad"]["status"] == "DOWN" and after["bad"]["check_status"] == "L7STS"
    assert after["s3"]["weight"] == 10 and after["s3"]["initial_weight"] == 10


def test_drain_with_held_session_times_out(lab):
    t, outcome = lab.hold_session("s1", 4)
    start = time.monotonic()
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["s1"]).run(state="drain", drain_timeout=1)
    assert 1 <= time.monotonic() - start < 5
    assert err.value.kind == "drain_timeout"
    assert "s1: 1" in err.value.msg and "shutdown_sessions" in err.value.msg
    assert err.value.result["drain"]["sessions_left"] == 1
    assert admin_states(lab)["s1"] == ("drain", 1)  # the drain itself stays in place
    assert lab.stat()["s1"] == "DRAIN"
    t.join(15)
    assert outcome.get("body") == "s1"  # the held request was not harmed


def test_drain_waits_for_session_to_end(lab):
    t, outcome = lab.hold_session("s2", 1.5)
    res = ctl(lab, ["s2"]).run(state="drain", drain_timeout=20)
    assert res["changed"] is True
    assert res["drain"]["waited"] >= 0.8 and res["drain"]["timed_out"] is False
    assert res["servers"]["s2"]["scur"] == 0 and res["servers"]["s2"]["admin_state"] == "drain"
    t.join(5)
    assert outcome.get("body") == "s2"


def test_drain_shutdown_sessions_kills_the_rest(lab):
    t, outcome = lab.hold_session("s1", 20)
    start = time.monotonic()
    res = ctl(lab, ["s1"]).run(state="maint", drain_timeout=1, shutdown_sessions=True)
    assert time.monotonic() - start < 8
    assert res["drain"]["timed_out"] is True and res["drain"]["shutdown"] == {"s1": 1}
    assert res["servers"]["s1"]["scur"] == 0 and res["servers"]["s1"]["admin_state"] == "maint"
    t.join(10)
    assert "body" not in outcome and "error" in outcome  # the client saw its session cut


def test_ready_waits_for_a_real_check_after_maint(lab):
    ctl(lab, ["s1"]).run(state="maint")
    assert lab.stat()["s1"] == "MAINT"
    res = ctl(lab, ["s1"]).run(state="ready", health_timeout=10)
    assert res["changed"] is True
    assert res["servers"]["s1"]["status"] == "UP" and res["servers"]["s1"]["check_status"] == "L7OK"
    assert res["health"]["waited"] > 0.05  # a check had to complete first


def test_not_fooled_by_optimistic_up_after_maint(lab):
    ctl(lab, ["s2"]).run(state="maint")
    lab.apps["s2"].healthy = False  # breaks while in maintenance: last check was L7OK
    lab.raw("set server web/s2 state ready")
    trap = lab.stat()["s2"]
    lab.raw("set server web/s2 state maint")
    assert trap.startswith("UP"), "HAProxy no longer reports UP right after maint: %s" % trap
    start = time.monotonic()
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["s2"]).run(state="ready", health_timeout=3)
    assert err.value.kind == "health_timeout"
    assert time.monotonic() - start >= 3
    assert "s2" in err.value.msg and "DOWN" in err.value.msg


def test_failing_checks_never_healthy(lab):
    start = time.monotonic()
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["bad"]).run(state="ready", health_timeout=2)
    assert err.value.kind == "health_timeout" and "bad (status DOWN" in err.value.msg
    assert time.monotonic() - start >= 2
    # and after maint: the optimistic UP does not make it healthy either
    ctl(lab, ["bad"]).run(state="maint")
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["bad"]).run(state="ready", health_timeout=2)
    assert err.value.kind == "health_timeout"


def test_ready_healthy_then_recovering_server(lab):
    ctl(lab, ["bad"]).run(state="maint")
    lab.apps["bad"].healthy = True
    res = ctl(lab, ["bad"]).run(state="ready", health_timeout=10)
    assert res["servers"]["bad"]["status"] == "UP"


def test_check_mode_changes_nothing(lab):
    before = admin_states(lab)
    res = ctl(lab, ["s1", "s3"]).run(state="maint", weight="50%", check_mode=True, want_diff=True)
    assert res["changed"] is True
    assert res["servers"]["s1"]["admin_state"] == "maint" and res["servers"]["s3"]["weight"] == 5
    assert res["commands"] == ["set server web/s1 state maint", "set server web/s3 state maint",
                               "set server web/s3 weight 5"]
    assert "drain" not in res
    assert admin_states(lab) == before
    # check mode works on a user-level socket too: it only reads
    res = ctl(lab, ["s1"], lab.user).run(state="drain", check_mode=True)
    assert res["changed"] is True and admin_states(lab) == before


def test_diff_and_idempotence(lab):
    res = ctl(lab, ["s1", "s3"]).run(state="drain", weight="50%", want_diff=True)
    assert res["changed"] is True
    assert res["diff"]["before"] == "web/s1: admin_state=ready weight=1\nweb/s3: admin_state=ready weight=10\n"
    assert res["diff"]["after"] == "web/s1: admin_state=drain weight=1\nweb/s3: admin_state=drain weight=5\n"
    again = ctl(lab, ["s1", "s3"]).run(state="drain", weight="50%", want_diff=True)
    assert again["changed"] is False and again["commands"] == []
    assert again["diff"]["before"] == again["diff"]["after"] == res["diff"]["after"]
    ready = ctl(lab, ["s1", "s3"]).run(state="ready", weight="100%")
    assert ready["changed"] is True
    assert ready["servers"]["s3"]["weight"] == 10 and ready["servers"]["s3"]["status"] == "UP"
    assert ctl(lab, ["s1", "s3"]).run(state="ready", weight="100%")["changed"] is False


def test_percent_and_absolute_weights(lab):
    assert ctl(lab, ["s3"]).run(weight="25%")["servers"]["s3"]["weight"] == 3  # 2.5 rounds up
    assert ctl(lab, ["s3"]).run(weight="1000%")["servers"]["s3"]["weight"] == 100
    assert ctl(lab, ["s1"]).run(weight=0)["servers"]["s1"]["weight"] == 0
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["s3"]).run(weight="3000%")
    assert err.value.kind == "bad_weight" and "300" in err.value.msg
    with pytest.raises(HAProxyError):
        ctl(lab, ["s3"]).run(weight=257)
    assert admin_states(lab)["s3"] == ("ready", 100)


def test_canary_weights_through_weights_option_shift_traffic(lab):
    initial = dict((s, i["initial_weight"]) for s, i in gather_info(RuntimeAPI(lab.admin), "web")["web"].items()
                   if s != "bad")
    weights = canary_weights(initial, ["s3"], 10)
    res = ctl(lab, ["s3"]).run(weights=weights)
    assert dict((s, res["servers"][s]["weight"]) for s in weights) == weights
    before = gather_info(RuntimeAPI(lab.admin), "web")["web"]
    n = 200
    for _attempt in range(n):
        lab.get("/")
    after = gather_info(RuntimeAPI(lab.admin), "web")["web"]
    share = 100.0 * (after["s3"]["req_tot"] - before["s3"]["req_tot"]) / n
    assert 7 <= share <= 13, share


def test_unknown_backend_and_server_list_names(lab):
    with pytest.raises(HAProxyError) as err:
        ServerControl(RuntimeAPI(lab.admin), "nope", ["s1"]).run(state="drain")
    assert err.value.kind == "unknown_backend" and "web" in err.value.msg and "'nope'" in err.value.msg
    before = admin_states(lab)
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["s1", "ghost"]).run(state="maint")
    assert err.value.kind == "unknown_server"
    assert "ghost" in err.value.msg and "bad, s1, s2, s3" in err.value.msg
    assert admin_states(lab) == before  # s1 was not put in maint either


@pytest.mark.parametrize("name", ["s1;disable server web/s2", "s1\nset server web/s2 state maint",
                                  "s1 state maint", "web/s2", "", "s1#", "s\u00e9"])
def test_injection_rejected_before_sending(lab, name):
    sent = []

    class Spy(RuntimeAPI):
        def command(self, cmd):
            sent.append(cmd)
            return RuntimeAPI.command(self, cmd)

    before = admin_states(lab)
    with pytest.raises(HAProxyError) as err:
        ServerControl(Spy(lab.admin), "web", ["s1", name]).run(state="maint")
    assert err.value.kind == "invalid_name" and "nothing was sent" in err.value.msg
    with pytest.raises(HAProxyError):
        ServerControl(Spy(lab.admin), name or "x y", ["s1"]).run(state="maint")
    with pytest.raises(HAProxyError):
        ServerControl(Spy(lab.admin), "web", ["s1"]).run(state="maint", weights={name: 1})
    assert sent == []
    assert admin_states(lab) == before


def test_non_admin_socket_fails_and_changes_nothing(lab):
    before = admin_states(lab)
    with pytest.raises(HAProxyError) as err:
        ctl(lab, ["s1"], lab.user).run(state="maint")
    assert err.value.kind == "not_admin" and "level 'user'" in err.value.msg
    assert admin_states(lab) == before


def test_tcp_socket(lab):
    res = ctl(lab, ["s2"], lab.tcp).run(state="drain")
    assert res["changed"] and admin_states(lab)["s2"] == ("drain", 1)


def test_missing_and_refused_sockets(tmp_path):
    with pytest.raises(HAProxyError) as err:
        ServerControl(RuntimeAPI(str(tmp_path / "nope.sock")), "web", ["s1"]).run(state="drain")
    assert err.value.kind == "missing_socket" and "does not exist" in err.value.msg
    # a socket file nobody listens on (HAProxy stopped, stale file)
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()
    with pytest.raises(HAProxyError) as err:
        ServerControl(RuntimeAPI(path), "web", ["s1"]).run(state="drain")
    assert err.value.kind == "refused" and "refused" in err.value.msg
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(HAProxyError) as err:
        ServerControl(RuntimeAPI("tcp:127.0.0.1:%d" % port), "web", ["s1"]).run(state="drain")
    assert err.value.kind == "refused"
    for bad in ("relative.sock", "tcp:nohost", "tcp:127.0.0.1:http"):
        with pytest.raises(HAProxyError) as err:
            RuntimeAPI(bad)
        assert err.value.kind == "bad_socket" and bad in err.value.msg
