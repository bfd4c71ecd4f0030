# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifier of the nginx scenario: the nginx driver on real nginx (Debian's nginx-light under
systemd) in front of the demo app, under bounded load. Each test leaves every server ready at
its initial weight."""
import time

from conftest import (APPS, CANARY_LOG, UPSTREAM_FILE, Requests, curl_ok, docker, file_hash, info, nginx_pids,
                      server)
from fleet_test import Load

LB1, LB2 = "ngx-lb1", "ngx-lb2"
CLAIMS = "/var/lib/grayrelease-canary/demoapp.claims.json"


def restore(host):
    result = server(host, {"servers": APPS, "state": "ready", "weight": "100%"})
    assert not result.get("failed"), result
    servers = info(host)["backends"]["demoapp"]
    assert all(s["admin_state"] == "ready" and s["weight"] == s["initial_weight"] for s in servers.values()), servers


def test_baseline_every_server_ready_and_serving():
    for host in (LB1, LB2):
        result = info(host)
        servers = result["backends"]["demoapp"]
        assert sorted(servers) == APPS
        for name, item in servers.items():
            assert (item["admin_state"], item["status"], item["weight"], item["up"]) == ("ready", "UP", 1, None), name
            assert item["address"] == "%s:8080" % name
        assert result["process"]["pid"] and len(result["process"]["workers"]) >= 1
        assert curl_ok(host)


def test_check_mode_changes_nothing():
    before_hash, before_pids = file_hash(LB1), nginx_pids(LB1)
    result = server(LB1, {"servers": ["ngx-app2"], "state": "drain"}, check=True)
    assert not result.get("failed"), result
    assert result["changed"] is True and result["servers"]["ngx-app2"]["admin_state"] == "drain"
    assert file_hash(LB1) == before_hash and nginx_pids(LB1) == before_pids
    assert info(LB1)["backends"]["demoapp"]["ngx-app2"]["admin_state"] == "ready"


def test_drain_proven_under_mixed_load_then_ready():
    """Fast requests plus 5 s requests, 3 a second (about 15 in flight, some on ngx-app1 at the drain):
    the drain is proven by evidence, no request fails, the slow ones complete."""
    load = Load(LB1, rate=30, duration=120, name="ngxload", slow_rate=3, slow_seconds=5)
    try:
        time.sleep(6)
        before = info(LB1)["backends"]["demoapp"]
        t0 = time.monotonic()
        drained = server(LB1, {"servers": ["ngx-app1"], "state": "drain", "drain_timeout": 40, "claims": CLAIMS,
                               "owner": "ngx-test", "max_unavailable": 1})
        seconds = time.monotonic() - t0
        assert not drained.get("failed"), drained
        evidence = drained["drain"]["evidence"]
        print("drain: waited %s s (module %.1f s), evidence %s" % (drained["drain"]["waited"], seconds, evidence))
        assert drained["changed"] and drained["servers"]["ngx-app1"]["admin_state"] == "drain"
        assert evidence["proof"] in ("old workers exited", "no connections")
        # slow requests were in flight to ngx-app1: the drain had to wait for them, not return at once
        assert drained["drain"]["waited"] >= 0.5
        assert drained["commands"][-2:] == ["nginx -t", "nginx -s reload"]
        during = info(LB1)["backends"]["demoapp"]
        assert during["ngx-app1"]["scur"] == 0
        # a second drain would leave two of three out: refused, nothing changed
        refused = server(LB1, {"servers": ["ngx-app2"], "state": "drain", "max_unavailable": 1})
        assert refused.get("failed") and refused["error_kind"] == "capacity", refused
        time.sleep(3)
        idle = info(LB1)["backends"]["demoapp"]["ngx-app1"]
        # drained: nginx sends it nothing (the requests counted are those that were in flight)
        readied = server(LB1, {"servers": ["ngx-app1"], "state": "ready", "claims": CLAIMS, "owner": "ngx-test",
                               "probe": {"urls": ["http://ngx-app1:8080/healthz"], "deadline": 20}})
        assert not readied.get("failed"), readied
        assert readied["servers"]["ngx-app1"]["admin_state"] == "ready" and readied["probe"]["healthy"]
        time.sleep(4)
        after = info(LB1)["backends"]["demoapp"]["ngx-app1"]
    finally:
        summary = load.stop(wait=60)
    print("load: %s" % {k: summary[k] for k in ("requests", "failed", "statuses", "slow")})
    assert summary["failed"] == 0 and summary["slow"]["failed"] == 0, summary
    assert summary["slow"]["requests"] >= 10 and summary["requests"] >= 300
    assert after["req_tot"] > idle["req_tot"] > before["ngx-app1"]["req_tot"]
    assert docker("exec", LB1, "cat", CLAIMS, check=False).stdout.strip() in ("", "{}", '{"demoapp": {}}')


def test_hand_over_readies_one_and_drains_the_next_under_load():
    """A rolling update's hand-over in one call: ngx-app2 back (probed from the balancer), then ngx-app3
    drained with evidence; never two out at once (max_unavailable=1), no request fails."""
    load = Load(LB1, rate=30, duration=90, name="ngxhand", slow_rate=2, slow_seconds=3)
    try:
        time.sleep(3)
        first = server(LB1, {"servers": ["ngx-app2"], "state": "drain", "drain_timeout": 30, "max_unavailable": 1})
        assert not first.get("failed"), first
        result = server(LB1, {"servers": ["ngx-app2"], "state": "ready", "then_drain": ["ngx-app3"],
                              "drain_timeout": 30, "max_unavailable": 1,
                              "probe": {"urls": ["http://ngx-app2:8080/healthz"], "deadline": 20}})
        assert not result.get("failed"), result
        part = result["then_drain"]
        print("hand-over: drain of ngx-app3 %s s, evidence %s" % (part["seconds"], part["drain"]["evidence"]))
        assert result["servers"]["ngx-app2"]["admin_state"] == "ready"
        assert result["then_drain"]["servers"]["ngx-app3"]["admin_state"] == "drain"
        assert result["then_drain"]["drain"]["evidence"]["proof"] in ("old workers exited", "no connections")
        time.sleep(2)
    finally:
        summary = load.stop(wait=60)
        restore(LB1)
    print("load: %s" % {k: summary[k] for k in ("requests", "failed", "slow")})
    assert summary["failed"] == 0 and summary["slow"]["failed"] == 0 and summary["slow"]["requests"] >= 5


def test_weights_share_measured_from_the_access_log():
    """1:3:0 -> ngx-app1 serves a quarter, ngx-app3 nothing, over 2000 requests, counted from the log."""
    result = server(LB2, {"servers": APPS, "weights": {"ngx-app1": 1, "ngx-app2": 3, "ngx-app3": 0}})
    assert not result.get("failed"), result
    assert result["servers"]["ngx-app3"]["weight"] == 0 and result["servers"]["ngx-app3"]["admin_state"] == "ready"
    assert "weight=1 down; # grayrelease: name=ngx-app3 initial_weight=1 weight=0 admin_state=ready" in \
        docker("exec", LB2, "cat", UPSTREAM_FILE).stdout
    try:
        before = info(LB2)["backends"]["demoapp"]
        summary = Requests(LB2, count=2000, rate=150, duration=60).result()
        time.sleep(1)
        after = info(LB2)["backends"]["demoapp"]
        delta = dict((s, after[s]["req_tot"] - before[s]["req_tot"]) for s in APPS)
        total = sum(delta.values())
        share = 100.0 * delta["ngx-app1"] / total
        print("weights 1:3:0 over %d requests: %s, ngx-app1 %.1f %%" % (total, delta, share))
        assert summary["failed"] == 0 and summary["requests"] == 2000
        assert total == 2000  # every request counted once, from the log
        assert abs(share - 25.0) <= 3 and delta["ngx-app3"] == 0
        assert all(after[s]["hrsp_5xx"] == before[s]["hrsp_5xx"] for s in APPS)
    finally:
        restore(LB2)


def test_failed_nginx_t_changes_nothing_and_says_why():
    """An app host's name no longer resolves in another part of the configuration: nginx's own test
    fails, the module says nginx's message, the file and the running nginx are as they were."""
    broken = "/etc/nginx/conf.d/zz-broken.conf"
    docker("exec", LB2, "sh", "-c", "echo 'upstream broken { server ngx-app9.invalid:8080; }' > %s" % broken)
    before_hash, before_pids = file_hash(LB2), nginx_pids(LB2)
    try:
        result = server(LB2, {"servers": ["ngx-app2"], "state": "drain"})
    finally:
        docker("exec", LB2, "rm", "-f", broken)
    print(result.get("msg"))
    assert result.get("failed") and result["error_kind"] == "config" and result["changed"] is False
    assert 'host not found in upstream "ngx-app9.invalid:8080"' in result["msg"]
    assert file_hash(LB2) == before_hash and nginx_pids(LB2) == before_pids and curl_ok(LB2)


def test_new_file_refused_by_nginx_t_is_put_back():
    """nginx -t fails on the new file itself (here a wrapper makes nginx's test fail the way a bad
    directive does): the previous file is back and nginx was not reloaded."""
    wrapper = "/usr/local/sbin/nginx-strict"
    docker("exec", LB2, "sh", "-c", "printf '%s\\n' '#!/bin/sh' "
           "'if [ \"$1\" = -t ]; then exec nginx -t -g \"no_such_directive on;\"; fi' 'exec nginx \"$@\"' > "
           + wrapper + " && chmod 755 " + wrapper)
    before_text, before_pids = docker("exec", LB2, "cat", UPSTREAM_FILE).stdout, nginx_pids(LB2)
    try:
        result = server(LB2, {"servers": ["ngx-app2"], "state": "drain", "nginx_binary": wrapper})
    finally:
        docker("exec", LB2, "rm", "-f", wrapper)
    print(result.get("msg"))
    assert result.get("failed") and result["error_kind"] == "config" and result["changed"] is False
    assert 'unknown directive "no_such_directive"' in result["msg"] and "previous file is back" in result["msg"]
    assert docker("exec", LB2, "cat", UPSTREAM_FILE).stdout == before_text and nginx_pids(LB2) == before_pids
    assert not docker("exec", LB2, "sh", "-c", "ls -a /etc/nginx/grayrelease | grep tmp", check=False).stdout


def test_without_worker_shutdown_timeout_nothing_changes():
    before_hash, before_pids = file_hash(LB2), nginx_pids(LB2)
    docker("exec", LB2, "sed", "-i", "s/^worker_shutdown_timeout/#worker_shutdown_timeout/", "/etc/nginx/nginx.conf")
    try:
        result = server(LB2, {"servers": ["ngx-app2"], "state": "drain"})
    finally:
        docker("exec", LB2, "sed", "-i", "s/^#worker_shutdown_timeout/worker_shutdown_timeout/",
               "/etc/nginx/nginx.conf")
    assert result.get("failed") and result["error_kind"] == "prerequisite", result
    assert "worker_shutdown_timeout is not set" in result["msg"]
    assert file_hash(LB2) == before_hash and nginx_pids(LB2) == before_pids


def test_unknown_names_and_foreign_files_are_refused():
    before_hash = file_hash(LB2)
    unknown = server(LB2, {"servers": ["ngx-app9"], "state": "drain"})
    assert unknown.get("failed") and unknown["error_kind"] == "unknown_server" and "ngx-app1" in unknown["msg"]
    other = server(LB2, {"backend": "other", "servers": ["ngx-app1"], "state": "drain",
                         "upstream_file": UPSTREAM_FILE})
    assert other.get("failed") and other["error_kind"] == "unknown_backend"
    foreign = server(LB2, {"servers": ["ngx-app1"], "state": "drain", "upstream_file": "/etc/nginx/nginx.conf"})
    assert foreign.get("failed") and foreign["error_kind"] == "not_ours"
    assert file_hash(LB2) == before_hash


def test_a_reload_is_seen_as_new_workers_of_the_same_master():
    before = info(LB1)
    docker("exec", LB1, "systemctl", "reload", "nginx")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = info(LB1)
        if not set(after["process"]["workers"]) & set(before["process"]["workers"]):
            break
        time.sleep(0.5)
    assert after["process"]["pid"] == before["process"]["pid"]
    assert not set(after["process"]["workers"]) & set(before["process"]["workers"])
    assert docker("exec", LB1, "test", "-s", CANARY_LOG, check=False).returncode == 0
    for host in (LB1, LB2):
        restore(host)
