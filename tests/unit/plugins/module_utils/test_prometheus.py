"""Unit tests for _prometheus: PromQL placeholders, API answers, and queries
against a fake Prometheus HTTP API on loopback."""
import json
import os
import sys
import urllib.parse
from http.server import ThreadingHTTPServer

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _prometheus as prom

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _prometheus_fake import FakePrometheus, fake_prometheus_url  # noqa: E402


def test_alternation_matches_exactly_the_values_without_backslashes():
    assert prom.alternation(["app1:8080", "10.0.0.5:8080"]) == "app1:8080|10[.]0[.]0[.]5:8080"
    assert prom.alternation([]) == "^$"
    with pytest.raises(prom.PrometheusError, match=r"'a\"b'"):
        prom.alternation(['a"b'])


def test_substitute_placeholders_braces_and_literal_dollar():
    values = {"instances": "a|b", "servers": "s1", "backend": "web", "window": "30s", "interval": "10s"}
    query = 'sum(increase(x{instance=~"$instances",proxy="${backend}"}[$window])) + $$1 + y[$interval]'
    assert prom.substitute(query, values) == 'sum(increase(x{instance=~"a|b",proxy="web"}[30s])) + $1 + y[10s]'


@pytest.mark.parametrize("query,word", [('x{i=~"$instance"}', r"\$instance"), ("", "non-empty"), (None, "None")])
def test_substitute_refuses_unknown_placeholders_and_empty_queries(query, word):
    with pytest.raises(prom.PrometheusError, match=word):
        prom.check_template(query)


def test_duration_and_urls():
    assert prom.duration(29.2) == "30s" and prom.duration(0) == "1s"
    url = prom.api_url("http://prom:9090/", "up", start=100, end=130, step=1)
    assert url.startswith("http://prom:9090/api/v1/query_range?")
    expected = {"query": ["up"], "start": ["100.000"], "end": ["130.000"], "step": ["1s"]}
    assert urllib.parse.parse_qs(url.split("?", 1)[1]) == expected
    assert prom.api_url("https://p/x", "up", at=5).endswith("/x/api/v1/query?query=up&time=5.000")
    with pytest.raises(prom.PrometheusError, match="'prom:9090'"):
        prom.api_url("prom:9090", "up")


def test_parse_matrix_vector_scalar_and_drop_nan():
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"instance": "a"}, "values": [[1, "1.5"], [2, "NaN"], [3, "2"]]},
        {"metric": {"instance": "b"}, "values": [[1, "+Inf"], [2, "4"]]}]}}
    assert prom.parse_response(json.dumps(matrix)) == {"values": [1.5, 2.0, 4.0], "series": 2}
    vector = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "7"]}]}}
    assert prom.parse_response(json.dumps(vector)) == {"values": [7.0], "series": 1}
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert prom.parse_response(json.dumps(empty)) == {"values": [], "series": 0}
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    assert prom.parse_response(json.dumps(scalar)) == {"values": [3.0], "series": 1}


@pytest.mark.parametrize("body,word", [
    ('{"status":"error","errorType":"bad_data","error":"parse error: unexpected \\"=\\""}', "bad_data: parse error"),
    ("<html>", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"status":"success","data":{"resultType":"string","result":[1,"x"]}}', "'string'"),
])
def test_parse_errors_say_why(body, word):
    with pytest.raises(prom.PrometheusError, match=word):
        prom.parse_response(body)


@pytest.fixture
def fake_prometheus():
    with fake_prometheus_url() as url:
        yield url


def test_run_queries_range_instant_and_a_failing_one(fake_prometheus):
    queries = [{"name": "p50", "query": "q1", "type": "range", "step": 2},
               {"name": "default_step", "query": "q2"},
               {"name": "count", "query": "q3", "type": "instant"},
               {"name": "broken", "query": "bad query"}]
    got = prom.run_queries(fake_prometheus, queries, end=1000.0, window=30)
    assert got["p50"] == {"values": [float(i) for i in range(16)], "series": 1, "query": "q1"}
    assert len(got["default_step"]["values"]) == 31  # window / 30 = 1 s apart
    assert got["count"]["values"] == [1000.0]
    assert got["broken"]["values"] == [] and "bad_data: unexpected identifier" in got["broken"]["error"]
    assert [p for p, _q in FakePrometheus.seen] == ["/api/v1/query_range", "/api/v1/query_range",
                                                    "/api/v1/query", "/api/v1/query_range"]


def test_run_queries_unreachable_prometheus_is_no_data_not_a_crash():
    with ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus) as server:
        port = server.server_address[1]
    got = prom.run_queries("http://127.0.0.1:%d" % port, [{"name": "x", "query": "up"}], end=100, window=10,
                           timeout=2)
    assert got["x"]["values"] == [] and "cannot reach http://127.0.0.1:%d/api/v1/query_range" % port \
        in got["x"]["error"]
