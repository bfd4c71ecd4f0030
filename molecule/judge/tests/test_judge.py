"""The canary judged on real evidence (judge scenario).

Each case reseeds the fleet (v1 everywhere), puts bounded load through
jdg-lb1 and rolls a release out as a canary-only run (step [1]: jdg-app1
against jdg-app2 and jdg-app3), judged on one kind of evidence:
- real-traffic latency: the timers HAProxy logged for every request, for a
  release 300 ms slower and for one a few milliseconds (about +100%) slower;
- Prometheus alone (built-in metrics off or dry-run): an identical release
  passes, one with 20% errors fails; a user's own metric rides along dry-run;
  a metric without data fails with must_have_data (in the failing case, to
  keep the scenario short; tests/unit's test_engine_sources shows it failing an otherwise
  passing canary);
- the user's analysis tasks failing: the step fails naming the task, and the
  run rolls back and releases its lock.
Figures go to .build/judge-measurements.jsonl.
"""
import os
import statistics
import subprocess

from conftest import APPS, BALANCER, build_release, record, rollout, version_of

LOG = "/var/log/haproxy.log"
BASE = {"canary_steps": [1], "canary_analysis_interval": 3, "canary_analysis_count": 4,
        "canary_traffic_percent": 20, "canary_drain_timeout": 10, "canary_settle_seconds": 1}
# Built-in metrics out of the way: a Prometheus-only judgement.
PROMETHEUS_ONLY = {"http_5xx_ratio": {"dry_run": True}, "probe_error_ratio": {"enabled": False},
                   "probe_latency_ms": {"enabled": False}}
APP_ERRORS = {
    "name": "app_error_ratio", "kind": "ratio", "critical": True, "must_have_data": True,
    "errors_query": 'sum(increase(demoapp_requests_total{instance=~"$instances",handler="/",code=~"5.."}[$window]))',
    "total_query": 'sum(increase(demoapp_requests_total{instance=~"$instances",handler="/"}[$window]))'}
APP_P50 = {
    "name": "app_latency_p50_ms", "step": 1,
    "query": '1000 * histogram_quantile(0.5, sum by (le) '
             '(rate(demoapp_request_duration_seconds_bucket{instance=~"$instances",handler="/"}[5s])))'}
HAPROXY_ERRORS = {
    "name": "haproxy_5xx_ratio", "kind": "ratio",
    "errors_query": 'sum(increase(haproxy_server_http_responses_total{proxy="$backend",server=~"$servers",'
                    'code="5xx"}[$window]))',
    "total_query": 'sum(increase(haproxy_server_http_responses_total{proxy="$backend",server=~"$servers"}'
                   '[$window]))'}
PROMETHEUS = {"canary_prometheus_url": "http://jdg-prom:9090",
              "canary_prometheus_metrics": [APP_ERRORS, APP_P50, HAPROXY_ERRORS],
              "canary_metric_options": PROMETHEUS_ONLY}
FILES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "files")
USER_METRIC = {"canary_analysis_tasks": os.path.join(FILES, "user_metrics.yml")}
FAILING_METRIC = {"canary_analysis_tasks": os.path.join(FILES, "failing_metrics.yml")}


def canary_step(report):
    step = report["steps"][0]
    assert step["canary"] and step["judge"], step
    return step


def check_rolled_back(report, code):
    assert code != 0
    assert report["decision"] == "rolled_back", report["reason"]
    assert all(version_of(app) == "v1" for app in APPS)


def latency_case(report_dir, version, latency_ms):
    artifact = build_release(version, "--latency-ms", str(latency_ms))
    settings = dict(BASE, canary_haproxy_log=LOG, canary_metric_options={"probe_latency_ms": {"dry_run": True}})
    code, report, seconds = rollout(report_dir, version, artifact, settings)
    check_rolled_back(report, code)
    step = canary_step(report)
    verdict = step["judge"]
    metric = verdict["metrics"]["traffic_latency_ms"]
    traffic = step["traffic"]
    canary, baselines = traffic["jdg-app1"], [traffic["jdg-app2"], traffic["jdg-app3"]]
    assert canary["role"] == "canary" and all(b["role"] == "baseline" for b in baselines), traffic
    # The report shows what each server served, request by request.
    assert canary["response_ms_samples"] and all(b["response_ms_samples"] for b in baselines), traffic
    assert canary["response_ms"]["count"] >= 20 and all(b["response_ms"]["count"] >= 20 for b in baselines)
    assert min(canary["response_ms_samples"]) >= latency_ms, canary
    assert metric["failed"] and metric["classification"] == "high", metric
    assert verdict["verdict"] == "fail", verdict["reason"]
    # Dry-run probe latency: observed and reported, not judged.
    probe = verdict["metrics"]["probe_latency_ms"]
    assert probe["dry_run"] and not probe["failed"], probe
    assert "probe_latency_ms" not in verdict["failed_metrics"]
    base_median = statistics.median(v for b in baselines for v in b["response_ms_samples"])
    figures = dict(seconds=seconds, verdict=verdict["verdict"], score=verdict["score"], canary_p50_ms=metric["canary"],
                   baseline_p50_ms=metric["baseline"], p_value=metric["p_value"],
                   canary_requests=canary["requests"], baseline_requests=[b["requests"] for b in baselines],
                   baseline_sample_median_ms=base_median, probe_latency_would_fail=probe.get("would_fail"))
    record("latency+%dms" % latency_ms, **figures)
    print(figures)
    return metric


def test_latency_300ms_fails_on_logged_traffic(report_dir):
    metric = latency_case(report_dir, "v2-slow300", 300)
    assert metric["canary"] >= 300 and metric["baseline"] < 50, metric


def test_small_latency_regression_fails_on_logged_traffic(report_dir):
    # 3 ms on a baseline of ~1-2 ms (more when the machine is busy): about +100%.
    metric = latency_case(report_dir, "v2-slow3", 3)
    assert metric["canary"] >= metric["baseline"] + 2, metric


def prometheus_case(report_dir, version, flags, extra=None, more=()):
    artifact = build_release(version, *flags)
    settings = dict(BASE, **dict(PROMETHEUS, **(extra or {})))
    settings["canary_prometheus_metrics"] = settings["canary_prometheus_metrics"] + list(more)
    code, report, seconds = rollout(report_dir, version, artifact, settings)
    step = canary_step(report)
    verdict = step["judge"]
    judged = sorted(name for name, m in verdict["metrics"].items() if not m.get("dry_run"))
    assert judged == sorted(["app_error_ratio", "app_latency_p50_ms", "haproxy_5xx_ratio"]
                            + [m["name"] for m in more]), verdict["metrics"]
    assert verdict["sources"]["app_error_ratio"] == "prometheus"
    assert not [name for name, info in step["prometheus"].items() if info["error"]], step["prometheus"]
    metrics = verdict["metrics"]
    record(version, seconds=seconds, verdict=verdict["verdict"], score=verdict["score"],
           decision=report["decision"],
           metrics=dict((n, {"canary": m["canary"], "baseline": m["baseline"], "p": m["p_value"],
                             "class": m["classification"], "dry_run": bool(m.get("dry_run"))})
                        for n, m in metrics.items()))
    return code, report, verdict


def test_prometheus_alone_passes_an_identical_release(report_dir):
    code, report, verdict = prometheus_case(report_dir, "v2", [], USER_METRIC)
    assert verdict["verdict"] == "pass", verdict["reason"]
    assert code == 0 and report["decision"] == "promoted", report["reason"]
    for name in ("app_error_ratio", "app_latency_p50_ms", "haproxy_5xx_ratio"):
        assert verdict["metrics"][name]["classification"] == "pass", verdict["metrics"][name]
    assert verdict["metrics"]["app_error_ratio"]["canary_count"] >= 20
    # The user's metric was computed by their task and observed, not judged:
    # it would fail, and the verdict is still a pass.
    user = verdict["metrics"]["user_metric"]
    assert user["dry_run"] and user["would_fail"] and not user["failed"], user
    assert verdict["sources"]["user_metric"] == "custom"
    assert "probe_latency_ms" not in verdict["metrics"] and "probe_error_ratio" not in verdict["metrics"]
    assert version_of("jdg-app1") == "v2"


# A metric of a handler this app does not have: Prometheus answers, with nothing.
NO_DATA = {"name": "checkout_errors", "kind": "ratio", "must_have_data": True,
           "errors_query": 'sum(increase(demoapp_requests_total{instance=~"$instances",handler="/checkout",'
                           'code=~"5.."}[$window]))',
           "total_query": 'sum(increase(demoapp_requests_total{instance=~"$instances",handler="/checkout"}'
                          '[$window]))'}


def test_prometheus_alone_fails_an_erroring_release_and_a_metric_without_data(report_dir):
    code, report, verdict = prometheus_case(report_dir, "v2-errors", ["--error-rate", "0.2"], more=[NO_DATA])
    check_rolled_back(report, code)
    assert verdict["verdict"] == "fail", verdict["reason"]
    errors = verdict["metrics"]["app_error_ratio"]
    assert errors["failed"] and 0.1 < errors["canary"] < 0.3 and errors["baseline"] < 0.01, errors
    assert verdict["metrics"]["haproxy_5xx_ratio"]["failed"], verdict["metrics"]["haproxy_5xx_ratio"]
    # HAProxy's counters saw it too, but were only observed (dry run).
    observed = verdict["metrics"]["http_5xx_ratio"]
    assert observed["dry_run"] and observed["would_fail"] and not observed["failed"], observed
    # must_have_data: no data fails the metric (nodata alone would not) and names it in the verdict.
    empty = verdict["metrics"]["checkout_errors"]
    assert empty["classification"] == "nodata" and empty["failed"] and empty["must_have_data"], empty
    assert "must_have_data: checkout_errors" in verdict["reason"], verdict["reason"]


def test_failing_analysis_tasks_roll_back_naming_the_task_and_release_the_lock(report_dir):
    artifact = build_release("v2-hookfail")
    code, report, _seconds = rollout(report_dir, "v2-hookfail", artifact, dict(BASE, **FAILING_METRIC))
    check_rolled_back(report, code)
    assert "canary_analysis_tasks" in report["reason"], report["reason"]
    assert "read the queue depth from the user's metrics service" in report["reason"], report["reason"]
    # The coordinator stayed in the play to the end: the report is complete and the lock gone.
    assert report["steps"][0]["canary"] and not report["steps"][0].get("judge"), report["steps"][0]
    locks = subprocess.run(["docker", "exec", BALANCER, "sh", "-c", "ls /var/lib/grayrelease-canary/*.lock 2>/dev/null"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert locks.stdout.strip() == "", locks.stdout
