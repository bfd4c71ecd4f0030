# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout bookkeeping shared by the rollout playbook's filters.

Private to grayrelease.canary. Pure functions over haproxy_info and
http_sample results, so the playbook stays a readable story and the
arithmetic is unit-tested.
"""

from __future__ import annotations


class RolloutError(ValueError):
    """Invalid input; the message names the offending value."""


STATE_KEYS = ("admin_state", "weight")


def _backend_of(info_result, backend):
    backends = info_result.get("backends") if isinstance(info_result, dict) else None
    if not isinstance(backends, dict) or backend not in backends:
        raise RolloutError("haproxy_info result has no backend %r" % (backend,))
    return backends[backend]


def balancer_consensus(results, backend, servers):
    """Compare what every balancer says about the given servers.

    results: balancer -> haproxy_info result. Returns a dict with
    `missing` (balancer -> servers it does not know), `disagree` (one line
    per server whose admin state or weight differs between balancers),
    `servers` (server -> state on the first balancer, with `initial_weight`),
    `not_ready` (servers not in admin state ready, or not at their initial
    weight, on any balancer) and `down` (servers whose status is not UP on
    some balancer).
    """
    if not isinstance(results, dict) or not results:
        raise RolloutError("no balancer results to compare: %r" % (results,))
    missing, disagree, not_ready, down = {}, [], set(), set()
    first = None
    for balancer in sorted(results):
        table = _backend_of(results[balancer], backend)
        gone = [s for s in servers if s not in table]
        if gone:
            missing[balancer] = gone
        if first is None:
            first = table
    for server in servers:
        seen = {}
        for balancer in sorted(results):
            info = _backend_of(results[balancer], backend).get(server)
            if info is None:
                continue
            seen[balancer] = tuple(info.get(k) for k in STATE_KEYS)
            if info.get("admin_state") != "ready" or info.get("weight") != info.get("initial_weight"):
                not_ready.add(server)
            if not str(info.get("status", "")).startswith(("UP", "DRAIN", "NOLB")):
                down.add(server)
        if len(set(seen.values())) > 1:
            disagree.append("%s: %s" % (server, ", ".join(
                "%s admin_state=%s weight=%s" % (b, v[0], v[1]) for b, v in sorted(seen.items()))))
    summary = {}
    for server in servers:
        info = first.get(server)
        if info is not None:
            summary[server] = dict((k, info.get(k)) for k in ("admin_state", "status", "weight", "initial_weight", "check_status"))
    return {
        "missing": missing,
        "disagree": disagree,
        "servers": summary,
        "not_ready": sorted(not_ready),
        "down": sorted(down),
    }


def _counter_delta(before, after, backend, servers, counter):
    """Sum over balancers and servers of after - before for one counter.

    A counter that went backwards (HAProxy reloaded mid-analysis) counts from
    zero rather than producing a negative delta.
    """
    total = 0
    for balancer, result in after.items():
        end = _backend_of(result, backend)
        start = _backend_of(before[balancer], backend)
        for server in servers:
            b = (start.get(server) or {}).get(counter) or 0
            a = (end.get(server) or {}).get(counter) or 0
            total += a - b if a >= b else a
    return total


def traffic_deltas(before, after, backend, servers):
    """{'total': requests, 'errors': 5xx} for servers between two snapshots."""
    if set(before) != set(after):
        raise RolloutError("balancer snapshots differ: before has %s, after has %s"
                           % (sorted(before), sorted(after)))
    return {
        "total": _counter_delta(before, after, backend, servers, "req_tot"),
        "errors": _counter_delta(before, after, backend, servers, "hrsp_5xx"),
    }


def probe_totals(probe_rounds, urls):
    """Every latency, and error / request counts, of urls over all http_sample rounds."""
    latencies, errors, total = [], 0, 0
    for samples in probe_rounds:
        for url in urls:
            res = samples.get(url)
            if res is None:
                raise RolloutError("no probe samples for %s" % url)
            latencies.extend(res.get("latencies_ms", []))
            errors += res.get("errors", 0)
            total += res.get("total", 0)
    return latencies, {"errors": errors, "total": total}


def canary_metrics(before, after, backend, canary_servers, baseline_servers, probe_rounds,
                   canary_urls, baseline_urls, min_samples=20):
    """The canary_judge metrics for one analysis.

    - http_5xx_ratio: 5xx share of the requests HAProxy sent to each group
      between the first and last snapshot (real traffic; no data without it);
    - probe_error_ratio (critical): failed probes of the sample URL, sent
      straight to each host, so the metric has data even without traffic;
    - probe_latency_ms: every probe's latency, canary vs baseline.
    """
    canary_latencies, canary_probes = probe_totals(probe_rounds, canary_urls)
    baseline_latencies, baseline_probes = probe_totals(probe_rounds, baseline_urls)
    return [
        {"name": "http_5xx_ratio", "kind": "ratio", "direction": "increase", "weight": 2,
         "min_samples": min_samples,
         "baseline": traffic_deltas(before, after, backend, baseline_servers),
         "canary": traffic_deltas(before, after, backend, canary_servers)},
        {"name": "probe_error_ratio", "kind": "ratio", "direction": "increase", "critical": True,
         "min_samples": min_samples, "baseline": baseline_probes, "canary": canary_probes},
        {"name": "probe_latency_ms", "kind": "samples", "direction": "increase", "tolerance": 0.5,
         "min_samples": min_samples, "baseline": baseline_latencies, "canary": canary_latencies},
    ]
