"""Unit tests for _haproxy_log: HAProxy's HTTP request log lines (as rsyslog
wrote them on the judge scenario's balancer) and the per-server window."""
import calendar

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _haproxy_log as hl

# Real lines from jdg-lb1 (Debian haproxy 2.6.12 + rsyslog 8.2302, option httplog).
REAL = [
    "2026-11-28T20:18:14.166166+00:00 jdg-lb1 haproxy[418]: [NOTICE]   (418) : haproxy version is 2.6.12-1+deb12u3",
    '2026-11-28T20:18:27.251633+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40590 [28/Nov/2026:20:18:27.250] fe_demoapp '
    'demoapp/jdg-app1 0/0/0/1/1 200 204 - - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.258270+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40604 [28/Nov/2026:20:18:27.256] fe_demoapp '
    'demoapp/jdg-app2 0/0/0/1/1 200 204 - - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.264932+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40612 [28/Nov/2026:20:18:27.263] fe_demoapp '
    'demoapp/jdg-app3 0/0/0/1/1 200 204 - - ---- 2/1/0/0/0 0/0 "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.271041+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40620 [28/Nov/2026:20:18:27.269] fe_demoapp '
    'demoapp/jdg-app1 0/0/0/0/0 404 172 - - ---- 2/1/0/0/0 0/0 "GET /nothere HTTP/1.1"',
]
# The same shape for what the scenario also produces: a 300 ms canary, an
# injected 500, a request no server took (Tr -1) and the traditional syslog header.
MORE = [
    '2026-11-28T20:18:28.570001+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40630 [28/Nov/2026:20:18:28.268] fe_demoapp '
    'demoapp/jdg-app1 0/0/0/302/302 200 204 - - ---- 3/2/1/1/0 0/0 "GET / HTTP/1.1"',
    '2026-11-28T20:18:28.600001+00:00 jdg-lb1 haproxy[452]: 127.0.0.1:40640 [28/Nov/2026:20:18:28.598] fe_demoapp '
    'demoapp/jdg-app2 0/0/0/2/2 500 190 - - ---- 3/2/1/1/0 0/0 "GET / HTTP/1.1"',
    'Nov 28 20:18:29 jdg-lb1 haproxy[452]: 127.0.0.1:40650 [28/Nov/2026:20:18:29.001] fe_demoapp '
    'demoapp/jdg-app3 0/0/-1/-1/3 503 217 - - SC-- 3/2/1/1/3 0/0 "GET / HTTP/1.1"',
    'Nov 28 20:18:29 jdg-lb1 haproxy[452]: 127.0.0.1:40660 [28/Nov/2026:20:18:29.101] fe_demoapp '
    'demoapp/<NOSRV> 0/-1/-1/-1/0 503 217 - - SC-- 3/2/0/0/0 0/0 "GET / HTTP/1.1"',
]
T0 = calendar.timegm((2026, 11, 28, 20, 18, 27, 0, 0, 0))


def test_parse_real_line():
    entry = hl.parse_line(REAL[1], utc_offset=0)
    assert entry == {"accepted": T0 + 0.25, "frontend": "fe_demoapp", "backend": "demoapp", "server": "jdg-app1",
                     "TR": 0, "Tw": 0, "Tc": 0, "Tr": 1, "Ta": 1, "status": 200, "route": None}


def test_parse_skips_notices_and_honours_the_utc_offset():
    assert hl.parse_line(REAL[0]) is None
    assert hl.parse_line("garbage") is None
    # Local time two hours ahead of UTC: the same wall clock is two hours earlier.
    assert hl.parse_line(REAL[1], utc_offset=7200)["accepted"] == T0 + 0.25 - 7200


def test_collect_per_server_in_window():
    got = hl.collect(REAL + MORE, "demoapp", since=T0, until=T0 + 10, utc_offset=0)
    servers = got["servers"]
    assert sorted(servers) == ["jdg-app1", "jdg-app2", "jdg-app3"]  # <NOSRV> is nobody's
    assert servers["jdg-app1"]["response_ms"] == [1, 0, 302]
    assert servers["jdg-app1"]["statuses"] == {"2xx": 2, "4xx": 1}
    assert servers["jdg-app2"]["errors_5xx"] == 1 and servers["jdg-app2"]["requests"] == 2
    # The 503 with Tr -1 counts as a request and an error, but has no response time.
    assert servers["jdg-app3"]["response_ms"] == [1] and servers["jdg-app3"]["total_ms"] == [1, 3]
    assert servers["jdg-app3"]["errors_5xx"] == 1
    assert got["matched"] == 7 and got["skipped_unparsed"] == 1
    assert got["first"] == T0 + 0.25 and got["last"] == pytest.approx(T0 + 2.001)


def test_collect_window_server_filter_and_backend():
    got = hl.collect(REAL + MORE, "demoapp", since=T0 + 1.5, until=T0 + 1.9, utc_offset=0)
    assert list(got["servers"]) == ["jdg-app2"]
    got = hl.collect(REAL + MORE, "demoapp", since=T0, servers=["jdg-app1"], utc_offset=0)
    assert list(got["servers"]) == ["jdg-app1"]
    assert hl.collect(REAL, "other", since=0)["servers"] == {}


def test_collect_thins_evenly_but_counts_everything():
    lines = [REAL[1]] * 100
    got = hl.collect(lines, "demoapp", since=0, max_samples=10)
    assert got["servers"]["jdg-app1"]["requests"] == 100
    assert len(got["servers"]["jdg-app1"]["response_ms"]) == 10


@pytest.mark.parametrize("kwargs,word", [({"backend": ""}, "backend"), ({"max_samples": 0}, "max_samples")])
def test_collect_bad_input_names_it(kwargs, word):
    args = dict(backend="demoapp", since=0)
    args.update(kwargs)
    with pytest.raises(hl.LogError, match=word):
        hl.collect(REAL, **args)


def _line(second, server="jdg-app1", tr=1):
    return ('2026-11-28T20:%02d:%02d.000000+00:00 lb haproxy[1]: 10.0.0.1:1 [28/Nov/2026:20:%02d:%02d.000] fe '
            'demoapp/%s 0/0/0/%d/%d 200 10 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"'
            % (second // 60, second % 60, second // 60, second % 60, server, tr, tr))


def test_tail_lines_reads_back_only_as_far_as_the_window_needs(tmp_path):
    path = tmp_path / "haproxy.log"
    path.write_text("\n".join(_line(s) for s in range(0, 3600)) + "\n")
    start = calendar.timegm((2026, 11, 28, 20, 59, 0, 0, 0, 0))
    lines = hl.tail_lines(str(path), start, utc_offset=0, block=4096)
    # Whole lines only, the last one included; far fewer than the file holds.
    assert lines[-1] == _line(3599)
    assert all(hl.parse_line(line, 0) for line in lines)
    assert 60 + hl.SLACK_SECONDS <= len(lines) < 600
    got = hl.collect(lines, "demoapp", since=start, utc_offset=0)
    assert got["matched"] == 60


def test_tail_lines_small_and_empty_files(tmp_path):
    path = tmp_path / "haproxy.log"
    path.write_text("")
    assert hl.tail_lines(str(path), 0) == []
    path.write_text(REAL[1] + "\n")
    assert hl.tail_lines(str(path), 0, block=16) == [REAL[1]]


def test_summarize_nearest_rank():
    assert hl.summarize([]) == {"count": 0, "p50": None, "p95": None, "max": None}
    assert hl.summarize([5, 1, 3, 2, 4]) == {"count": 5, "p50": 3, "p95": 5, "max": 5}


# Lines of the routing scenario (rte-lb1, the rules of routing_config: the route is the first capture).
ROUTED = [
    '2026-11-28T20:18:27.300000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55485 [28/Nov/2026:20:18:27.300] fe_demoapp '
    'demoapp_canary/rte-app3 0/0/0/4/4 200 184 - - ---- 1/1/0/0/0 0/0 {canary/bucket} "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.400000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55486 [28/Nov/2026:20:18:27.400] fe_demoapp '
    'demoapp_canary/rte-app3 0/0/0/5/5 500 184 - - ---- 1/1/0/0/0 0/0 {canary/bucket} "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.500000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55487 [28/Nov/2026:20:18:27.500] fe_demoapp '
    'demoapp_canary/rte-app3 0/0/0/6/6 200 184 - - ---- 1/1/0/0/0 0/0 {canary/optin:staff|Mozilla} "GET / HTTP/1.1"',
    '2026-11-28T20:18:27.600000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55488 [28/Nov/2026:20:18:27.600] fe_demoapp '
    'demoapp/rte-app1 0/0/0/2/2 200 184 - - ---- 1/1/0/0/0 0/0 {stable/bucket} "GET / HTTP/1.1"',
    # A client's request line that looks like a route is text, not the route.
    '2026-11-28T20:18:27.700000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55489 [28/Nov/2026:20:18:27.700] fe_demoapp '
    'demoapp/rte-app1 0/0/0/2/2 200 184 - - ---- 1/1/0/0/0 0/0 "GET /{canary/bucket} HTTP/1.1"',
    # A route of a shape the rules never write is not taken.
    '2026-11-28T20:18:27.800000+00:00 rte-lb1 haproxy[1290]: 127.0.0.1:55490 [28/Nov/2026:20:18:27.800] fe_demoapp '
    'demoapp/rte-app1 0/0/0/2/2 200 184 - - ---- 1/1/0/0/0 0/0 {canary/everyone} "GET / HTTP/1.1"',
]


def test_the_user_routing_route_is_read_from_the_first_capture_only():
    assert [hl.parse_line(line, 0)["route"] for line in ROUTED] == [
        "canary/bucket", "canary/bucket", "canary/optin:staff", "stable/bucket", None, None]


def test_collect_takes_the_canary_backend_too_and_counts_per_route():
    only_stable = hl.collect(ROUTED, "demoapp", since=T0, until=T0 + 10, utc_offset=0)
    assert sorted(only_stable["servers"]) == ["rte-app1"]
    got = hl.collect(ROUTED, "demoapp", since=T0, until=T0 + 10, utc_offset=0, also_backend="demoapp_canary")
    canary = got["servers"]["rte-app3"]
    assert canary["requests"] == 3 and canary["errors_5xx"] == 1
    assert canary["routes"] == {"canary/bucket": {"requests": 2, "errors_5xx": 1, "response_ms": [4, 5]},
                                "canary/optin:staff": {"requests": 1, "errors_5xx": 0, "response_ms": [6]}}
    assert got["servers"]["rte-app1"]["routes"] == {"stable/bucket": {"requests": 1, "errors_5xx": 0,
                                                                      "response_ms": [2]}}
    assert got["servers"]["rte-app1"]["requests"] == 3
    with pytest.raises(hl.LogError, match="also_backend ''"):
        hl.collect(ROUTED, "demoapp", since=T0, also_backend="")
