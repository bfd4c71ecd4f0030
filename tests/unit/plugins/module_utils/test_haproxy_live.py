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
    hand_over,
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


class Recorder(RuntimeAPI):
    """The real socket, with every command sent and the admin states seen after each change."""

    def __init__(self, spec, lab):
        super(Recorder, self).__init__(spec)
        self.lab = lab
        self.sent = []
        self.out_after = []

    def set_command(self, cmd):
        out = super(Recorder, self).set_command(cmd)
        self.sent.append(cmd)
        self.out_after.append(sorted(s for s, (state, _w) in admin_states(self.lab).items()
                                     if state != "ready" and s != "bad"))
        return out


def test_hand_over_readies_then_drains_never_both_out(lab):
    t, outcome = lab.hold_session("s2", 1.5)   # readies every other server when it has the session
    ctl(lab, ["s1"]).run(state="drain")
    api = Recorder(lab.admin, lab)
    result, warnings = hand_over(api, "web", ["s1"], ["s2"], run_args={"health_timeout": 10},
                                 drain_args={"drain_timeout": 20})
    assert api.sent == ["set server web/s1 state ready", "set server web/s2 state drain"]
    # At no moment were both servers out of rotation on this balancer.
    assert api.out_after == [[], ["s2"]]
    assert result["changed"] and result["servers"]["s1"]["admin_state"] == "ready"
    assert result["health"]["waited"] >= 0
    part = result["then_drain"]
    assert part["servers"]["s2"]["admin_state"] == "drain" and part["servers"]["s2"]["scur"] == 0
    assert part["drain"]["waited"] >= 0.5 and part["seconds"] >= part["drain"]["waited"]
    assert warnings == []
    t.join(5)
    assert outcome.get("body") == "s2"  # the drain waited for the held request
    ctl(lab, ["s2"]).run(state="ready", health_timeout=10)


def test_hand_over_drains_nothing_when_the_ready_fails(lab):
    api = Recorder(lab.admin, lab)
    ctl(lab, ["bad"]).run(state="drain")
    with pytest.raises(HAProxyError) as err:
        hand_over(api, "web", ["bad"], ["s1"], run_args={"health_timeout": 1})
    assert err.value.kind == "health_timeout"
    assert "then_drain" not in err.value.result
    assert api.sent == ["set server web/bad state ready"]
    assert admin_states(lab)["s1"] == ("ready", 1)


def test_hand_over_drain_failure_keeps_the_ready_and_says_which_part(lab):
    t, outcome = lab.hold_session("s2", 4)
    ctl(lab, ["s1"]).run(state="drain")
    with pytest.raises(HAProxyError) as err:
        hand_over(RuntimeAPI(lab.admin), "web", ["s1"], ["s2"], run_args={"health_timeout": 10},
                  drain_args={"drain_timeout": 1})
    assert err.value.kind == "drain_timeout"
    assert err.value.msg.startswith("readied s1; then draining s2 failed: drain timeout")
    assert err.value.result["servers"]["s1"]["admin_state"] == "ready"
    assert err.value.result["then_drain"]["failed"] is True and err.value.result["changed"] is True
    t.join(10)
    assert outcome.get("body") == "s2"
    ctl(lab, ["s2"]).run(state="ready", health_timeout=10)


def test_hand_over_refuses_overlap_and_unknown_names_before_any_change(lab):
    api = Recorder(lab.admin, lab)
    ctl(lab, ["s1"]).run(state="drain")
    with pytest.raises(HAProxyError) as err:
        hand_over(api, "web", ["s1"], ["s1", "s2"])
    assert err.value.kind == "bad_input" and "s1" in err.value.msg
    with pytest.raises(HAProxyError) as err:
        hand_over(api, "web", ["s1"], ["nope"])
    assert err.value.kind == "unknown_server" and "nope" in err.value.msg
    assert api.sent == []
    assert admin_states(lab)["s1"] == ("drain", 1)
    ctl(lab, ["s1"]).run(state="ready", health_timeout=10)


def test_hand_over_check_mode_predicts_both_parts(lab):
    ctl(lab, ["s1"]).run(state="drain")
    api = Recorder(lab.admin, lab)
    result, _warnings = hand_over(api, "web", ["s1"], ["s2"], check_mode=True)
    assert api.sent == []
    assert result["commands"] == ["set server web/s1 state ready"]
    assert result["then_drain"]["commands"] == ["set server web/s2 state drain"]
    assert result["then_drain"]["servers"]["s2"]["admin_state"] == "drain"
    assert admin_states(lab)["s1"] == ("drain", 1) and admin_states(lab)["s2"] == ("ready", 1)
    ctl(lab, ["s1"]).run(state="ready", health_timeout=10)


def test_hand_over_after_a_weights_change_drains_the_next_server(lab):
    # A canary's weights restored after its analysis, then the next batch drained: no state, weights only.
    ctl(lab, ["s1", "s2"]).run(weight=5)
    t, outcome = lab.hold_session("s2", 1)
    api = Recorder(lab.admin, lab)
    # s2 is re-weighted too, then drained: with weights only, a server may be in both lists.
    result, warnings = hand_over(api, "web", ["s1", "s2"], ["s2"], drain_args={"drain_timeout": 20},
                                 run_args={"state": None, "weights": {"s1": 1, "s2": 1}})
    assert api.sent == ["set server web/s1 weight 1", "set server web/s2 weight 1", "set server web/s2 state drain"]
    assert api.out_after == [[], [], ["s2"]]
    assert result["servers"]["s1"]["admin_state"] == "ready" and result["servers"]["s1"]["weight"] == 1
    assert result["then_drain"]["drain"]["waited"] >= 0.3 and warnings == []
    t.join(5)
    assert outcome.get("body") == "s2"  # the drain waited for the held request
    with pytest.raises(HAProxyError) as err:
        hand_over(api, "web", ["s1"], ["s3"], run_args={"state": "maint"})
    assert err.value.kind == "bad_input" and "state=maint" in err.value.msg
    assert admin_states(lab)["s3"] == ("ready", 10)
    ctl(lab, ["s2"]).run(state="ready", health_timeout=10)
