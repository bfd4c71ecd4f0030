# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx driver without nginx: the upstream file, nginx -T, ps and /proc/net/tcp, the access log,
apply/drain with a fake nginx."""

from __future__ import annotations

import os

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _balancer, _nginx
from ansible_collections.grayrelease.canary.plugins.module_utils._nginx import BalancerError

SERVERS = [{"name": "app1", "address": "10.0.0.1:8080"}, {"name": "app2", "address": "10.0.0.2:8080", "weight": 2},
           {"name": "app3", "address": "10.0.0.3:8080", "params": ["max_fails=3"]}]

NGINX_T = """# configuration file /etc/nginx/nginx.conf:
user www-data;
worker_processes 2;
pid /run/nginx.pid;
worker_shutdown_timeout 30s;
http {
    log_format grayrelease_canary '$msec $status';
    include %s;
}

# configuration file %s:
upstream demoapp { }
"""

PS_BEFORE = """    PID    PPID COMMAND
      1       0 /lib/systemd/systemd
     71       1 nginx: master process /usr/sbin/nginx -g daemon on; master_process on;
     72      71 nginx: worker process
     73      71 nginx: worker process
"""
PS_AFTER = """    PID    PPID COMMAND
     71       1 nginx: master process /usr/sbin/nginx -g daemon on; master_process on;
     72      71 nginx: worker process is shutting down
     80      71 nginx: worker process
     81      71 nginx: worker process
"""
PS_DONE = """    PID    PPID COMMAND
     71       1 nginx: master process /usr/sbin/nginx -g daemon on; master_process on;
     80      71 nginx: worker process
     81      71 nginx: worker process
"""

# 10.0.0.9:41000 -> 10.0.0.1:8080 established (01), and a TIME_WAIT (06) one to 10.0.0.2:8080.
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0900000A:A028 0100000A:1F90 01 00000000:00000000 00:00000000 00000000    33        0 2 1
   2: 0900000A:A029 0200000A:1F90 06 00000000:00000000 00:00000000 00000000    33        0 3 1
"""


def resolve(address):
    host, _sep, port = address.rpartition(":")
    return {(host, int(port))}


class FakeNginx(object):
    """nginx -T / -t / -s reload, and the process table around a reload."""

    def __init__(self, path, t_fails=None, dump=None):
        self.path = path
        self.calls = []
        self.t_fails = t_fails
        self.dump = dump if dump is not None else NGINX_T % (path, path)
        self.ps = PS_BEFORE
        self.tcp = TCP
        self.seen_by_t = None
        self.reloads = 0

    def run(self, argv, timeout=60):
        self.calls.append(" ".join(argv[1:]))
        if argv[1:] == ["-T"]:
            return (0, self.dump, "") if self.dump else (1, "", "nginx: [emerg] unknown directive \"x\"\n")
        if argv[1:] == ["-t"]:
            with open(self.path) as handle:
                self.seen_by_t = handle.read()
            if self.t_fails:
                return 1, "", ("nginx: [emerg] %s\nnginx: configuration file /etc/nginx/nginx.conf test failed\n"
                               % self.t_fails)
            return 0, "", "nginx: configuration file /etc/nginx/nginx.conf test is successful\n"
        if argv[1:] == ["-s", "reload"]:
            self.reloads += 1
            # the first reload as measured (PS_AFTER); later ones start workers with new pids again
            self.ps = PS_AFTER if self.reloads == 1 else PS_AFTER.replace(" 80 ", " %d " % (80 + 10 * self.reloads)) \
                .replace(" 81 ", " %d " % (81 + 10 * self.reloads))
            return 0, "", ""
        raise AssertionError(argv)


@pytest.fixture
def upstream(tmp_path):
    path = tmp_path / "demoapp.conf"
    path.write_text(_nginx.new_upstream("demoapp", SERVERS, extra_lines=["keepalive 8;"]))
    return str(path)


def make_driver(path, fake, tmp_path, **kwargs):
    pid = tmp_path / "nginx.pid"
    pid.write_text("71\n")
    fake.dump = fake.dump.replace("/run/nginx.pid", str(pid))
    return _nginx.NginxDriver("demoapp", upstream_file=path, run=fake.run,
                              processes=lambda: _nginx.parse_ps(fake.ps),
                              tcp_table=lambda: _nginx.parse_proc_net_tcp(fake.tcp), resolve=resolve,
                              sleep=lambda s: None, **kwargs)


# ---------------------------------------------------------------- the file

def test_new_file_renders_records_and_parses_back(upstream):
    with open(upstream) as handle:
        text = handle.read()
    assert text.startswith(_nginx.MARKER)
    assert "    server 10.0.0.2:8080 weight=2; # grayrelease: name=app2 initial_weight=2 weight=2 admin_state=ready" \
        in text
    assert "server 10.0.0.3:8080 weight=1 max_fails=3;" in text
    parsed = _nginx.parse_upstream(text)
    assert parsed["upstream"] == "demoapp"
    assert list(parsed["servers"]) == ["app1", "app2", "app3"]
    assert parsed["servers"]["app3"]["params"] == ["max_fails=3"]
    assert _nginx.render(parsed) == text  # a round trip changes nothing, keepalive kept


def test_drain_maint_and_weight_zero_render_down_and_the_record_tells_them_apart(upstream):
    with open(upstream) as handle:
        parsed = _nginx.parse_upstream(handle.read())
    changed = _nginx.apply_ops(parsed, [("app1", "state", "drain"), ("app2", "state", "maint"),
                                        ("app3", "weight", 0)])
    text = _nginx.render(changed)
    lines = dict((r, line) for line in text.splitlines() for r in ("app1", "app2", "app3") if "name=%s " % r in line)
    assert "weight=1 down;" in lines["app1"] and "admin_state=drain" in lines["app1"]
    assert "weight=2 down;" in lines["app2"] and "admin_state=maint" in lines["app2"]
    # nginx has no weight 0: the line keeps a valid weight, is down, the record says weight 0 and ready
    assert "weight=1 max_fails=3 down;" in lines["app3"] and "weight=0 admin_state=ready" in lines["app3"]
    again = _nginx.parse_upstream(text)
    assert again["servers"]["app3"]["weight"] == 0 and again["servers"]["app3"]["admin_state"] == "ready"
    assert parsed["servers"]["app1"]["admin_state"] == "ready"  # apply_ops copies


@pytest.mark.parametrize("text, words", [
    ("upstream demoapp {\n    server 10.0.0.1:8080;\n}\n", "not an upstream file of grayrelease.canary"),
    (_nginx.HEADER + "upstream demoapp {\n    server 10.0.0.1:8080;\n}\n", "without its grayrelease record"),
    (_nginx.HEADER + "upstream demoapp {\n    server 10.0.0.1:8080 weight=1 down; # grayrelease: name=app1 "
     "initial_weight=1 weight=1 admin_state=ready\n}\n", "disagrees with its record"),
    (_nginx.HEADER + "upstream demoapp {\n", "no complete"),
    (_nginx.HEADER + "server { listen 80; }\n", "expected 'upstream NAME {'"),
])
def test_files_that_are_not_ours_or_edited_by_hand_are_refused(text, words):
    with pytest.raises(BalancerError) as err:
        _nginx.parse_upstream(text, "/etc/nginx/grayrelease/demoapp.conf")
    assert err.value.kind == "not_ours" and words in err.value.msg


def test_bad_ops_are_refused(upstream):
    with open(upstream) as handle:
        parsed = _nginx.parse_upstream(handle.read())
    with pytest.raises(BalancerError, match="unknown server 'app9'.*app1, app2, app3"):
        _nginx.apply_ops(parsed, [("app9", "state", "drain")])
    with pytest.raises(BalancerError, match="invalid weight 300"):
        _nginx.apply_ops(parsed, [("app1", "weight", 300)])
    with pytest.raises(BalancerError, match="invalid state 'off'"):
        _nginx.apply_ops(parsed, [("app1", "state", "off")])


# ---------------------------------------------------------------- nginx -T, ps, /proc/net/tcp

def test_config_facts():
    facts = _nginx.config_facts(NGINX_T % (("/etc/nginx/grayrelease/demoapp.conf",) * 2))
    assert facts["worker_shutdown_timeout"] == "30s" and facts["pid"] == "/run/nginx.pid" and facts["log_format"]
    assert facts["files"] == ["/etc/nginx/nginx.conf", "/etc/nginx/grayrelease/demoapp.conf"]
    commented = _nginx.config_facts("# configuration file /x:\n# worker_shutdown_timeout 10s;\nuser x; # pid /a;\n")
    assert commented["worker_shutdown_timeout"] is None and commented["pid"] == "/run/nginx.pid"


def test_processes_of_one_master():
    state = _nginx.nginx_processes(_nginx.parse_ps(PS_AFTER), 71)
    assert state == {"master": 71, "workers": [80, 81], "shutting_down": [72]}
    assert _nginx.nginx_processes(_nginx.parse_ps(PS_AFTER))["master"] == 71
    assert _nginx.nginx_processes(_nginx.parse_ps(PS_AFTER), 99)["workers"] == []


def test_list_processes_reads_this_machine():
    procs = _nginx.list_processes()
    assert (os.getpid(), os.getppid()) in [(pid, ppid) for pid, ppid, _title in procs]


def test_proc_net_tcp_established_connections():
    rows = _nginx.parse_proc_net_tcp(TCP)
    assert rows[1] == (("10.0.0.9", 41000), ("10.0.0.1", 8080), True)
    assert rows[2][2] is False  # TIME_WAIT is no connection
    counts = _nginx.count_connections(rows, {"app1": {("10.0.0.1", 8080)}, "app2": {("10.0.0.2", 8080)}})
    assert counts == {"app1": 1, "app2": 0}
    six = ("  sl  local rem st\n   0: 0000000000000000FFFF00000900000A:A028 "
           "0000000000000000FFFF00000100000A:1F90 01 0\n")
    assert _nginx.parse_proc_net_tcp(six)[0][1] == ("10.0.0.1", 8080)


# ---------------------------------------------------------------- apply and drain

def test_apply_writes_tests_and_reloads_once(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    before = driver.process()
    done = driver.apply([("app1", "state", "drain"), ("app2", "weight", 3), ("app3", "weight", 0)])
    assert fake.calls == ["-T", "-t", "-s reload"]  # one test, one reload for three changes
    assert done == ["server app1 state drain", "server app2 weight 3", "server app3 weight 0", "nginx -t",
                    "nginx -s reload"]
    after = driver.read()
    assert after["app1"]["admin_state"] == "drain" and after["app1"]["status"] == "DRAIN"
    assert after["app2"]["weight"] == 3 and after["app3"]["weight"] == 0
    assert after["app1"]["scur"] == 1 and after["app1"]["up"] is None and "req_tot" not in after["app1"]
    driver.verify(after, [("app1", "state", "drain"), ("app3", "weight", 0)])
    with pytest.raises(BalancerError, match="does not show the change: app2 weight is 3, not 4"):
        driver.verify(after, [("app2", "weight", 4)])
    process = driver.process()
    assert process["pid"] == 71 and process["workers"] == [80, 81] and process["shutting_down"] == [72]
    assert process["generation"] != before["generation"] and process["generation"].startswith("71-")
    assert driver.last_reload["old_workers"] == [72, 73]
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".tmp")]


def test_apply_nothing_to_do_touches_nothing(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    assert driver.apply([("app1", "state", "ready")]) == []
    assert fake.calls == ["-T"]


def test_failed_nginx_t_puts_the_previous_file_back_and_reloads_nothing(upstream, tmp_path):
    with open(upstream) as handle:
        original = handle.read()
    fake = FakeNginx(upstream, t_fails='host not found in upstream "nowhere.invalid:8080" in /etc/nginx/x.conf:3')
    driver = make_driver(upstream, fake, tmp_path)
    with pytest.raises(BalancerError) as err:
        driver.apply([("app1", "state", "drain")])
    assert err.value.kind == "config"
    assert 'host not found in upstream "nowhere.invalid:8080"' in err.value.msg and "nothing was changed" in err.value.msg
    assert "admin_state=drain" in fake.seen_by_t  # nginx -t saw the new file
    with open(upstream) as handle:
        assert handle.read() == original
    assert "-s reload" not in fake.calls


@pytest.mark.parametrize("dump, words, kind", [
    ("# configuration file /etc/nginx/nginx.conf:\nuser x;\nworker_shutdown_timeout 5s;\n", "does not read", "prerequisite"),
    (None, "worker_shutdown_timeout is not set", "prerequisite"),
    ("", "fails its test before any change", "config"),
])
def test_prerequisites_refused_before_anything_changes(upstream, tmp_path, dump, words, kind):
    with open(upstream) as handle:
        original = handle.read()
    fake = FakeNginx(upstream)
    if dump is None:
        fake.dump = fake.dump.replace("worker_shutdown_timeout 30s;", "")
    else:
        fake.dump = dump
    driver = make_driver(upstream, fake, tmp_path)
    with pytest.raises(BalancerError) as err:
        driver.apply([("app1", "state", "drain")])
    assert err.value.kind == kind and words in err.value.msg
    with open(upstream) as handle:
        assert handle.read() == original
    assert fake.calls == ["-T"]


def test_reload_without_new_workers_fails_and_restores(upstream, tmp_path):
    with open(upstream) as handle:
        original = handle.read()
    fake = FakeNginx(upstream)
    clock = iter(range(0, 1000)).__next__
    driver = _nginx.NginxDriver("demoapp", upstream_file=upstream, run=fake.run,
                                processes=lambda: _nginx.parse_ps(PS_BEFORE), tcp_table=lambda: [],
                                resolve=resolve, clock=clock, sleep=lambda s: None, reload_timeout=5)
    with pytest.raises(BalancerError, match="did not start new workers") as err:
        driver.apply([("app1", "state", "drain")])
    assert err.value.kind == "reload"
    with open(upstream) as handle:
        assert handle.read() == original


def test_drain_evidence(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    driver.apply([("app1", "state", "drain")])
    # old worker 72 still shutting down, a connection to app1 open: not done
    done, state = driver.drain_state(["app1"])
    evidence = state["extra"]["evidence"]
    assert not done and evidence["old_workers"] == [72] and evidence["connections"] == {"app1": 1}
    assert state["busy"] == {"app1": 1}
    # the connection ended, the old worker still lingers (other servers' requests): proven by connections
    fake.tcp = TCP.splitlines()[0] + "\n"
    done, state = driver.drain_state(["app1"])
    evidence = state["extra"]["evidence"]
    assert done and evidence["proof"] == "no connections" and evidence["old_workers"] == [72]
    # the old workers exited: proven whatever the connections
    fake.tcp = TCP
    fake.ps = PS_DONE
    done, state = driver.drain_state(["app1"])
    evidence = state["extra"]["evidence"]
    assert done and evidence["proof"] == "old workers exited" and evidence["connections"] == {"app1": 1}


def test_a_server_not_down_is_never_drained(upstream, tmp_path):
    fake = FakeNginx(upstream)
    fake.ps = PS_DONE
    fake.tcp = ""
    driver = make_driver(upstream, fake, tmp_path)
    done, state = driver.drain_state(["app2"])
    assert not done and state["extra"]["evidence"]["not_down"] == ["app2"]
    assert "not down" in driver.drain_timeout_message(5, state, {})


def test_control_drains_waits_for_evidence_and_fails_on_timeout_without_calling_it_done(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    ticks = iter(range(0, 10000)).__next__
    control = _balancer.Control(driver, ["app1"], clock=ticks, sleep=lambda s: None)
    with pytest.raises(BalancerError) as err:
        control.run(state="drain", drain_timeout=5, shutdown_sessions=True)
    assert err.value.kind == "drain_timeout" and "drain not proven after 5s" in err.value.msg
    assert "old nginx workers 72 still running" in err.value.msg and "app1: 1" in err.value.msg
    assert err.value.result["drain"]["evidence"]["old_workers"] == [72]
    assert err.value.result["drain"]["shutdown"] == {}  # nginx cannot end sessions: nothing was killed
    assert err.value.result["changed"] is True
    # then the connection ends (old worker 72 still lingers): the next run finds the drain proven
    fake.tcp = ""
    control = _balancer.Control(driver, ["app1"], clock=ticks, sleep=lambda s: None)
    result = control.run(state="drain", drain_timeout=5)
    assert result["changed"] is False and result["drain"]["evidence"]["proof"] == "no connections"
    assert result["drain"]["evidence"]["old_workers"] == [72] and result["drain"]["sessions_left"] == 0


def test_control_check_mode_changes_nothing(upstream, tmp_path):
    with open(upstream) as handle:
        original = handle.read()
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    result = _balancer.Control(driver, ["app1", "app2"]).run(state="drain", check_mode=True, want_diff=True)
    assert result["changed"] and result["servers"]["app1"]["admin_state"] == "drain"
    assert fake.calls == []  # check mode does not even run nginx -T
    assert result["commands"] == ["server app1 state drain", "server app2 state drain"]
    assert "demoapp/app1: admin_state=drain" in result["diff"]["after"]
    with open(upstream) as handle:
        assert handle.read() == original


def test_hand_over_readies_then_drains_within_capacity(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    driver.apply([("app1", "state", "drain")])
    fake.calls[:] = []
    fake.ps, fake.tcp = PS_BEFORE, ""
    result, _warnings = _balancer.hand_over(
        lambda servers: _balancer.Control(driver, servers, max_unavailable=1, sleep=lambda s: None), ["app1"],
        ["app2"])
    # the ready, then the drain: nginx -T read once per driver, a test and a reload for each part
    assert fake.calls == ["-t", "-s reload", "-t", "-s reload"]
    assert result["servers"]["app1"]["admin_state"] == "ready"
    assert result["then_drain"]["servers"]["app2"]["admin_state"] == "drain"
    assert result["then_drain"]["drain"]["evidence"]["proof"]
    # a third one out would be two out at once: refused, nothing changed
    fake.calls[:] = []
    with pytest.raises(BalancerError, match="more than max_unavailable=1") as err:
        _balancer.Control(driver, ["app3"], max_unavailable=1).run(state="drain")
    assert err.value.kind == "capacity" and fake.calls == []


def test_control_weights_percent_and_unknown_names(upstream, tmp_path):
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path)
    result = _balancer.Control(driver, ["app1"]).run(weights={"app1": 1, "app2": "50%"})
    assert result["commands"] == ["server app2 weight 1", "nginx -t", "nginx -s reload"]
    assert result["servers"]["app2"]["weight"] == 1 and fake.calls == ["-T", "-t", "-s reload"]
    with pytest.raises(BalancerError, match="unknown server.*app9"):
        _balancer.Control(driver, ["app9"]).run(state="drain")
    with pytest.raises(BalancerError, match="invalid server name"):
        _balancer.Control(driver, ["app1;reboot"]).run(state="drain")
    other = _nginx.NginxDriver("other", upstream_file=upstream)
    with pytest.raises(BalancerError, match="unknown upstream 'other'") as err:
        other.read()
    assert err.value.kind == "unknown_backend"


# ---------------------------------------------------------------- the access log

LOG = [
    '1796526000.100 200 "10.0.0.1:8080" "200" "0.004" 0.005',
    '1796526000.200 502 "10.0.0.2:8080" "502" "0.001" 0.001',
    '1796526000.300 200 "10.0.0.2:8080, 10.0.0.1:8080" "-, 200" "0.000, 0.010" 0.011',
    '1796526000.400 200 "10.0.0.3:8080 : 10.0.0.1:8080" "404 : 200" "0.002 : 0.003" 0.006',
    '1796526000.500 502 "demoapp" "-" "-" 0.000',
    '1796526000.600 404 "-" "-" "-" 0.000',
    '10.0.0.9 - - [28/Nov/2026] "GET / HTTP/1.1" 200 12 "10.0.0.1:8080"',
]


def test_parse_log_line_attempts():
    entry = _nginx.parse_log_line(LOG[2])
    assert entry["status"] == 200 and entry["time"] == 1796526000.3
    assert entry["attempts"] == [("10.0.0.2:8080", None, 0.0), ("10.0.0.1:8080", 200, 0.01)]
    assert _nginx.parse_log_line(LOG[5])["attempts"] == []
    assert _nginx.parse_log_line(LOG[6]) is None


def test_collect_like_the_haproxy_log_source():
    names = {"10.0.0.1:8080": "app1", "10.0.0.2:8080": "app2", "10.0.0.3:8080": "app3"}
    out = _nginx.collect(LOG, names, since=1796526000.0)
    assert out["servers"]["app1"]["requests"] == 3 and out["servers"]["app1"]["errors_5xx"] == 0
    assert out["servers"]["app2"]["requests"] == 2 and out["servers"]["app2"]["errors_5xx"] == 2
    assert out["servers"]["app1"]["response_ms"] == [4, 10, 3]
    assert out["servers"]["app3"]["statuses"] == {"4xx": 1}
    assert out["skipped_unparsed"] == 1 and out["matched"] == 4
    assert _nginx.collect(LOG, names, since=1796526000.35)["matched"] == 1


def test_log_counters_read_incrementally(tmp_path):
    log = tmp_path / "canary.log"
    state = str(tmp_path / "state" / "demoapp.counters.json")
    log.write_text("\n".join(LOG[:2]) + "\n")
    now = [1796526005.0]
    counters = _nginx.LogCounters(str(log), state, clock=lambda: now[0])
    assert counters.read() == {}  # the first read starts at the log's end
    with open(str(log), "a") as handle:
        handle.write("\n".join(LOG[2:]) + "\n" + '1796526001.000 200 "10.0.0.1:80')  # the last line is half written
    got = counters.read()
    assert got["10.0.0.1:8080"] == {"requests": 2, "errors_5xx": 0, "rate": 0}
    assert got["10.0.0.2:8080"]["errors_5xx"] == 1 and got["demoapp"]["errors_5xx"] == 1
    with open(str(log), "a") as handle:
        handle.write('80" "503" "0.001" 0.001\n')
    got = counters.read(save=False)
    assert got["10.0.0.1:8080"] == {"requests": 3, "errors_5xx": 1, "rate": 0}
    assert counters.read()["10.0.0.1:8080"]["requests"] == 3  # save=False did not move the offset
    assert counters.read()["10.0.0.1:8080"]["requests"] == 3
    # rotated: a new file is read from its start
    os.rename(str(log), str(log) + ".1")
    log.write_text(LOG[0] + "\n")
    assert counters.read()["10.0.0.1:8080"]["requests"] == 4


def test_log_counters_rate_and_missing_log(tmp_path):
    log = tmp_path / "canary.log"
    log.write_text("")
    counters = _nginx.LogCounters(str(log), str(tmp_path / "c.json"), clock=lambda: 1796526005.0)
    counters.read()
    log.write_text("\n".join([LOG[0]] * 30) + "\n")
    assert counters.read()["10.0.0.1:8080"]["rate"] == 3
    with pytest.raises(BalancerError, match="cannot read the access log") as err:
        _nginx.LogCounters(str(tmp_path / "none.log"), str(tmp_path / "c.json")).read()
    assert err.value.kind == "access_log"


def test_driver_reads_log_counters(upstream, tmp_path):
    log = tmp_path / "canary.log"
    log.write_text("")
    fake = FakeNginx(upstream)
    driver = make_driver(upstream, fake, tmp_path, access_log=str(log), counters_file=str(tmp_path / "c.json"))
    assert driver.read()["app1"]["req_tot"] == 0
    log.write_text("\n".join(LOG) + "\n")
    servers = driver.read()
    assert (servers["app1"]["req_tot"], servers["app2"]["hrsp_5xx"], servers["app3"]["req_tot"]) == (3, 2, 1)
    public = driver.public(servers["app1"])
    assert sorted(public) == sorted(_nginx.PUBLIC_KEYS) and public["rate"] == 0


def test_counters_of_a_server_named_by_host_name_come_from_the_addresses_it_resolved_to(tmp_path):
    path = tmp_path / "demoapp.conf"
    path.write_text(_nginx.new_upstream("demoapp", [{"name": "app1", "address": "app1.example:8080"}]))
    log = tmp_path / "canary.log"
    log.write_text("")
    driver = _nginx.NginxDriver("demoapp", upstream_file=str(path), access_log=str(log),
                                counters_file=str(tmp_path / "c.json"), processes=lambda: [], tcp_table=lambda: [],
                                resolve=lambda address: {("10.0.0.1", 8080)})
    driver.read()
    log.write_text("\n".join(LOG[:3]) + "\n")
    assert driver.read()["app1"]["req_tot"] == 2
    assert driver.process() == {"pid": None, "workers": [], "shutting_down": [],
                                "generation": "stopped-" + driver._digest}
