# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsers and planning of _haproxy on canned HAProxy 2.6 output (no process needed)."""

from __future__ import annotations

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import (
    HAProxyError,
    ServerControl,
    admin_state_from_bits,
    gather_info,
    parse_servers_state,
    parse_show_info,
    parse_show_stat,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import (
    plan_changes,
    resolve_weight,
    validate_name,
)

# Captured from haproxy 2.6.12 (fields after check_health trimmed).
STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,"
    "weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,"
    "rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,"
    "hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
    "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,"
    "agent_desc,check_rise,check_fall,check_health,\n"
    "be,s1,0,0,2,3,,17,0,0,,0,,1,0,0,0,UP,10,1,0,0,0,3,0,,1,3,1,,17,,2,0,,0,L7OK,200,2,0,15,0,0,2,0,,,,17,0,"
    "0,,,,,-1,,,0,0,4,5,,,,Layer7 check passed,,2,2,3,\n"
    "be,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,1,1,2,2,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,"
    ",,0,0,0,0,,,,,,2,2,,\n"
    "tcpbe,t1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,9,0,,1,4,1,,0,,2,0,,0,* L4OK,,0,,,,,,,,,,,0,0,,,,,-1,,,0,"
    "0,0,0,,,,Layer4 check passed,,2,2,3,\n"
)
STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 be 1 s1 127.0.0.1 2 8 10 10 3 15 3 3 6 0 0 0 - 18081 - 0 0 - - 0\n"
    "3 be 2 s2 127.0.0.1 0 1 1 1 2 17 2 0 14 0 0 0 - 18082 - 0 0 - - 0\n"
    "4 tcpbe 1 t1 127.0.0.1 2 0 1 1 9 15 3 3 6 0 0 0 - 18083 - 0 0 - - 0\n"
)


class Canned(object):
    spec = "/canned.sock"

    def __init__(self):
        self.sent = []

    def show_stat(self):
        return parse_show_stat(STAT)

    def show_servers_state(self):
        return parse_servers_state(STATE)

    def process(self):
        return parse_show_info("Name: HAProxy\nVersion: 2.6.12\nPid: 4242\nUptime_sec: 17\n")

    def require_admin(self):
        raise AssertionError("check mode must not need admin")


def test_parse_show_info_gives_the_process():
    assert parse_show_info("Name: HAProxy\nPid: 4242\nUptime_sec: 17\nNbthread: 2\n") == {"pid": 4242, "uptime_sec": 17}
    assert parse_show_info("") == {"pid": 0, "uptime_sec": 0}  # unknown


def test_parse_show_stat_and_state():
    rows = parse_show_stat(STAT)
    assert [(r["pxname"], r["svname"], r["status"]) for r in rows] == [
        ("be", "s1", "UP"), ("be", "s2", "MAINT"), ("tcpbe", "t1", "UP")]
    state = parse_servers_state(STATE)
    assert state[("be", "s1")]["srv_admin_state"] == "8" and state[("tcpbe", "t1")]["srv_iweight"] == "1"
    with pytest.raises(HAProxyError):
        parse_show_stat("Permission denied\n")
    with pytest.raises(HAProxyError):
        parse_servers_state("Unknown command\n")


def test_gather_info_numbers_and_admin_state():
    info = gather_info(Canned())
    s1 = info["be"]["s1"]
    assert (s1["scur"], s1["stot"], s1["req_tot"], s1["hrsp_2xx"], s1["hrsp_5xx"], s1["econ"]) == (2, 17, 17, 15, 2, 1)
    assert (s1["rtime"], s1["ttime"], s1["weight"], s1["initial_weight"]) == (4, 5, 10, 10)
    assert s1["admin_state"] == "drain"  # bit 0x08 even though status says UP
    assert info["be"]["s2"]["admin_state"] == "maint" and info["be"]["s2"]["check_status"] == ""
    assert info["tcpbe"]["t1"]["hrsp_2xx"] == 0  # empty (TCP) counters become 0
    assert info["tcpbe"]["t1"]["check_status"] == "L4OK"  # "* L4OK": a check is running, the last one passed
    with pytest.raises(HAProxyError) as err:
        gather_info(Canned(), "nope")
    assert "be, tcpbe" in err.value.msg


@pytest.mark.parametrize("bits,state", [
    (0, "ready"), (0x01, "maint"), (0x02, "maint"), (0x04 | 0x01, "maint"), (0x04, "maint"), (0x20, "maint"),
    (0x08, "drain"), (0x10, "drain"), (0x08 | 0x01, "maint"), (0x40, "ready"), (0x40 | 0x08, "drain"), ("", "ready"),
])
def test_admin_bits(bits, state):
    assert admin_state_from_bits(bits) == state


def test_resolve_weight():
    assert resolve_weight(7, 1) == 7
    assert resolve_weight("7", 1) == 7
    assert resolve_weight("50%", 10) == 5
    assert resolve_weight("12.5%", 8) == 1
    assert resolve_weight("100%", 33) == 33
    assert resolve_weight("0%", 33) == 0
    for bad in ("x", "-1", 257, "-5%", "abc%", True, "300%"):
        with pytest.raises(HAProxyError):
            resolve_weight(bad, 100)


def test_plan_order():
    cur = {"a": {"admin_state": "maint", "weight": 1, "initial_weight": 1},
           "b": {"admin_state": "ready", "weight": 1, "initial_weight": 1}}
    assert plan_changes(cur, ["a", "b"], "ready", 5) == [("a", "weight", 5), ("b", "weight", 5), ("a", "state", "ready")]
    assert plan_changes(cur, ["a", "b"], "drain", None, {"b": 0}) == [
        ("a", "state", "drain"), ("b", "state", "drain"), ("b", "weight", 0)]
    assert plan_changes(cur, ["b"], "ready", "100%") == []


def test_check_mode_on_canned_output():
    res = ServerControl(Canned(), "be", ["s1", "s2", "s1"]).run(state="ready", weight=3, check_mode=True, want_diff=True)
    assert res["changed"] is True
    assert res["commands"] == ["set server be/s1 weight 3", "set server be/s2 weight 3",
                               "set server be/s1 state ready", "set server be/s2 state ready"]
    assert res["before"]["s1"]["admin_state"] == "drain" and res["servers"]["s2"]["admin_state"] == "ready"
    assert res["diff"]["after"] == "be/s1: admin_state=ready weight=3\nbe/s2: admin_state=ready weight=3\n"


@pytest.mark.parametrize("name", ["a;b", "a b", "a\nb", "a/b", "", None, 5, "é", "a$b"])
def test_validate_name_rejects(name):
    with pytest.raises(HAProxyError) as err:
        validate_name("server", name)
    assert err.value.kind == "invalid_name"


def test_validate_name_accepts():
    assert validate_name("server", "app-1.zone_a:8080") == "app-1.zone_a:8080"
