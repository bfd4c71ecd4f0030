# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout bookkeeping shared by the rollout playbook's filters.

Private to grayrelease.canary. Pure functions over haproxy_info and
http_sample results, so the playbook stays a readable story and the
arithmetic is unit-tested.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy_log import summarize
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import by_url, redact_url
from ansible_collections.grayrelease.canary.plugins.module_utils._judge import METRIC_KEYS, judge
from ansible_collections.grayrelease.canary.plugins.module_utils._prometheus import (
    PrometheusError,
    alternation,
    api_url,
    check_template,
    duration,
    substitute,
)


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
            res = by_url(samples, url)
            if res is None:
                raise RolloutError("no probe samples for %s" % redact_url(url))
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
        # max_absolute 0.005: a half-point rise in errors already counts.
        # With ~120 canary requests in the default window this lifts the
        # detection of 2% errors from 82% to 92% at no measured false-alarm
        # cost (bench/results/calibration.txt).
        {"name": "http_5xx_ratio", "kind": "ratio", "direction": "increase", "weight": 2,
         "min_samples": min_samples, "max_absolute": 0.005,
         "baseline": traffic_deltas(before, after, backend, baseline_servers),
         "canary": traffic_deltas(before, after, backend, canary_servers)},
        {"name": "probe_error_ratio", "kind": "ratio", "direction": "increase", "critical": True,
         "min_samples": min_samples, "max_absolute": 0.005, "baseline": baseline_probes, "canary": canary_probes},
        {"name": "probe_latency_ms", "kind": "samples", "direction": "increase", "tolerance": 0.5,
         "min_samples": min_samples, "baseline": baseline_latencies, "canary": canary_latencies},
    ]


# ---------------------------------------------------------------- more metric sources
#
# Besides the three built-in metrics above, a canary can be judged on the
# timers of the requests HAProxy logged (canary_haproxy_log), on PromQL
# queries (canary_prometheus_metrics) and on metrics the user's own tasks
# computed (canary_custom_metrics). Any metric can be switched off, made
# dry-run (observed and reported, never judged) or must-have-data (no data
# fails it) through canary_metric_options.

BUILTIN_METRICS = ('http_5xx_ratio', 'probe_error_ratio', 'probe_latency_ms', 'traffic_latency_ms')
# Options of a metric that are this module's business, not the judge's.
POLICY_KEYS = ('enabled', 'dry_run', 'must_have_data')
PROMETHEUS_KEYS = ('name', 'kind', 'query', 'errors_query', 'total_query', 'step')
METRIC_NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]*\Z')
# Per server, the log timings kept in the report (the judge gets them all).
REPORT_SAMPLES = 50
TRUE_STRINGS = ('true', 'yes', 'on', '1', 'y')
FALSE_STRINGS = ('false', 'no', 'off', '0', 'n')


def _judge_option_keys():
    # Whatever the judge accepts per metric (its defaults grow over time).
    return tuple(sorted(set(METRIC_KEYS) - {'name', 'kind', 'baseline', 'canary'}))


def _flag(value):
    """A bool from a bool or a survey string, or None when it is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS
    return None


def _check_options(where, options, errors, extra=()):
    """Validate one metric's option dict; returns it with policy flags as bools."""
    if not isinstance(options, dict):
        errors.append('%s must be a dict of metric options, got %r' % (where, options))
        return {}
    allowed = set(_judge_option_keys()) | set(POLICY_KEYS) | set(extra)
    out = {}
    for key, value in options.items():
        if key not in allowed:
            errors.append('%s: unknown option %r (known: %s)' % (where, key, ', '.join(sorted(allowed))))
            continue
        if key in POLICY_KEYS or key == 'critical':
            flag = _flag(value)
            if flag is None:
                errors.append('%s: %s=%r must be true or false' % (where, key, value))
                continue
            value = flag
        out[key] = value
    return out


def check_metric_settings(raw, errors):
    """Validate the metric-source settings; returns settings['metrics'].

    raw: the canary_* variables. Appends one message per bad value to errors.
    """
    log_path = raw.get('canary_haproxy_log') or ''
    if not isinstance(log_path, str) or (log_path and not log_path.startswith('/')):
        errors.append('canary_haproxy_log=%r must be an absolute path on the balancers, or empty (off)' % (log_path,))
        log_path = ''
    url = raw.get('canary_prometheus_url') or ''
    if url:
        try:
            api_url(url, 'up')
        except PrometheusError as exc:
            errors.append('canary_prometheus_url: %s' % exc)
    specs = raw.get('canary_prometheus_metrics') or []
    queries = []
    if not isinstance(specs, list):
        errors.append('canary_prometheus_metrics must be a list of metric dicts, got %r' % (specs,))
        specs = []
    if specs and not url:
        errors.append('canary_prometheus_metrics is set but canary_prometheus_url is not')
    seen = set(BUILTIN_METRICS)
    for index, spec in enumerate(specs):
        where = 'canary_prometheus_metrics[%d]' % index
        if not isinstance(spec, dict):
            errors.append('%s must be a dict, got %r' % (where, spec))
            continue
        name = spec.get('name')
        if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
            errors.append('%s: name %r must be letters, digits, _ . - (starting with a letter)' % (where, name))
            continue
        if name in seen:
            errors.append('%s: name %r is already used by another metric' % (where, name))
        seen.add(name)
        where = 'canary_prometheus_metrics %r' % name
        kind = spec.get('kind') or 'samples'
        item = {'name': name, 'kind': kind}
        needed = {'samples': ('query',), 'ratio': ('errors_query', 'total_query')}.get(kind)
        if needed is None:
            errors.append('%s: kind %r must be samples (query, every point of the window) or ratio '
                          '(errors_query and total_query, counts at its end)' % (where, kind))
            continue
        for key in needed:
            try:
                check_template(spec.get(key))
                item[key] = spec[key]
            except PrometheusError as exc:
                errors.append('%s: %s: %s' % (where, key, exc))
        step = spec.get('step')
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            errors.append('%s: step %r must be seconds > 0' % (where, step))
        item['step'] = step
        item['options'] = _check_options(where, dict((k, v) for k, v in spec.items() if k not in PROMETHEUS_KEYS),
                                         errors)
        queries.append(item)
    options = raw.get('canary_metric_options') or {}
    checked = {}
    if not isinstance(options, dict):
        errors.append('canary_metric_options must be a dict of metric name -> options, got %r' % (options,))
    else:
        for name, value in options.items():
            checked[name] = _check_options('canary_metric_options[%r]' % (name,), value, errors)
    return {'haproxy_log': log_path, 'prometheus_url': url, 'prometheus_metrics': queries, 'metric_options': checked}


def prometheus_instance(identity):
    """The instance label of an app host: canary_prometheus_instance, else its sample URL's host:port."""
    if identity.get('prometheus_instance'):
        return identity['prometheus_instance']
    return urlsplit(identity.get('sample_url') or '').netloc.rpartition('@')[2]


def analysis_sources(metric_settings, backend, canary, baseline, interval, count):
    """What the analysis act asks of the log readers and the Prometheus querier.

    canary, baseline: lists of (server name, prometheus instance). Returns
    {'log': {...} or None, 'prometheus': {...} or None}, the queries filled
    in per side.
    """
    window = float(interval) * int(count)
    sources = {'log': None, 'prometheus': None}
    if metric_settings.get('haproxy_log'):
        # A second more than the probes take: the log is read right after them.
        sources['log'] = {'path': metric_settings['haproxy_log'], 'window': window + 1,
                          'servers': sorted(s for s, _i in canary + baseline)}
    if metric_settings.get('prometheus_metrics'):
        try:
            queries = _prometheus_queries(metric_settings['prometheus_metrics'], backend, canary, baseline, window,
                                          interval)
        except PrometheusError as exc:
            raise RolloutError(str(exc))
        sources['prometheus'] = {'url': metric_settings['prometheus_url'], 'window': window, 'queries': queries}
    return sources


def _prometheus_queries(specs, backend, canary, baseline, window, interval):
    """Each spec's query (or errors and total queries) per side, placeholders filled in."""
    queries = []
    for spec in specs:
        for side, members in (('canary', canary), ('baseline', baseline)):
            values = {'instances': alternation([i for _s, i in members]),
                      'servers': alternation([s for s, _i in members]),
                      'backend': backend, 'window': duration(window), 'interval': duration(float(interval))}
            if spec['kind'] == 'samples':
                queries.append({'name': '%s|%s' % (spec['name'], side), 'type': 'range', 'step': spec['step'],
                                'query': substitute(spec['query'], values)})
            else:
                for key in ('errors', 'total'):
                    queries.append({'name': '%s|%s|%s' % (spec['name'], side, key), 'type': 'instant',
                                    'query': substitute(spec['%s_query' % key], values)})
    return queries


def merge_logs(log_results, servers):
    """Per server, the log timings of every balancer together."""
    merged = dict((s, {'requests': 0, 'errors_5xx': 0, 'response_ms': [], 'total_ms': []}) for s in servers)
    for result in log_results.values():
        for server, item in ((result or {}).get('servers') or {}).items():
            if server not in merged:
                continue
            into = merged[server]
            into['requests'] += item.get('requests', 0)
            into['errors_5xx'] += item.get('errors_5xx', 0)
            into['response_ms'].extend(item.get('response_ms') or [])
            into['total_ms'].extend(item.get('total_ms') or [])
            for route, part in (item.get('routes') or {}).items():
                routed = into.setdefault('routes', {}).setdefault(route, {'requests': 0, 'errors_5xx': 0,
                                                                          'response_ms': []})
                routed['requests'] += part.get('requests', 0)
                routed['errors_5xx'] += part.get('errors_5xx', 0)
                routed['response_ms'].extend(part.get('response_ms') or [])
    return merged


def traffic_report(merged, canary_servers):
    """Per server: role, requests, 5xx, summaries and the first samples of Tr (response) and Ta (total)."""
    report = {}
    for server, item in sorted(merged.items()):
        report[server] = {
            'role': 'canary' if server in canary_servers else 'baseline',
            'requests': item['requests'],
            'errors_5xx': item['errors_5xx'],
            'response_ms': summarize(item['response_ms']),
            'total_ms': summarize(item['total_ms']),
            'response_ms_samples': item['response_ms'][:REPORT_SAMPLES],
        }
    return report


def _prometheus_metric(spec, results):
    def side(name):
        if spec['kind'] == 'samples':
            return list((results.get('%s|%s' % (spec['name'], name)) or {}).get('values') or [])
        counts = {}
        for key in ('errors', 'total'):
            values = (results.get('%s|%s|%s' % (spec['name'], name, key)) or {}).get('values') or []
            # increase() extrapolates: counts come back as floats, summed over series.
            counts[key] = max(0, int(round(sum(values))))
        counts['errors'] = min(counts['errors'], counts['total'])
        return counts

    metric = {'name': spec['name'], 'kind': spec['kind'], 'source': 'prometheus',
              'baseline': side('baseline'), 'canary': side('canary')}
    if spec['kind'] == 'samples':
        # A window holds ~30 points per side by default; 20 is for requests.
        metric['min_samples'] = 10
    metric.update(spec['options'])
    return metric


def analysis_metrics(base_metrics, logs=None, canary_servers=(), baseline_servers=(), prometheus=None,
                     prometheus_specs=(), custom=None, options=None, min_samples=20):
    """Every metric of one analysis, with its policy options, before judging.

    base_metrics: canary_metrics()'s list. logs: merge_logs() result (None
    when the request log is off). prometheus: prometheus_query's results.
    custom: canary_custom_metrics (list of canary_judge metric dicts, plus
    dry_run / must_have_data). options: canary_metric_options, applied last.
    """
    metrics = [dict(m, source='haproxy' if m['name'] == 'http_5xx_ratio' else 'probe') for m in base_metrics]
    if logs is not None:
        metrics.append({
            'name': 'traffic_latency_ms', 'kind': 'samples', 'direction': 'increase', 'tolerance': 0.25,
            'weight': 2, 'min_samples': min_samples, 'source': 'haproxy_log',
            'baseline': [v for s in baseline_servers for v in logs.get(s, {}).get('response_ms', [])],
            'canary': [v for s in canary_servers for v in logs.get(s, {}).get('response_ms', [])]})
    for spec in prometheus_specs:
        metrics.append(_prometheus_metric(spec, prometheus or {}))
    if custom:
        if not isinstance(custom, list):
            raise RolloutError('canary_custom_metrics must be a list of metric dicts, got %r' % (custom,))
        names = set(m['name'] for m in metrics)
        for index, metric in enumerate(custom):
            if not isinstance(metric, dict) or not metric.get('name'):
                raise RolloutError('canary_custom_metrics[%d] must be a metric dict with a name, got %r'
                                   % (index, metric))
            if metric['name'] in names:
                raise RolloutError('canary_custom_metrics[%d]: name %r is already used by another metric'
                                   % (index, metric['name']))
            names.add(metric['name'])
            errors = []
            policy = _check_options('canary_custom_metrics %r' % metric['name'],
                                    dict((k, v) for k, v in metric.items() if k in POLICY_KEYS), errors)
            if errors:
                raise RolloutError('; '.join(errors))
            metrics.append(dict(metric, source='custom', **policy))
    out = []
    for metric in metrics:
        metric = dict(metric, **((options or {}).get(metric['name']) or {}))
        if metric.pop('enabled', True):
            out.append(metric)
    return out


def judge_analysis(metrics, judge_fn=judge, **judge_options):
    """Judge the metrics that count; observe the dry-run ones; apply must_have_data.

    Dry-run metrics are judged on their own, for the report only
    (`dry_run: true`, `would_fail`; never `failed`, never in the score). A
    judged metric with `must_have_data` and no data fails, and so does the
    verdict. Returns the judge's verdict dict with `sources` (metric ->
    where it came from).
    """
    judged, observed, must_have, sources = [], [], set(), {}
    for metric in metrics:
        sources[metric['name']] = metric.get('source', 'custom')
        policy = dict((k, metric.get(k)) for k in POLICY_KEYS)
        bare = dict((k, v) for k, v in metric.items() if k not in POLICY_KEYS and k != 'source')
        if policy['dry_run']:
            observed.append(bare)
            continue
        if policy['must_have_data']:
            must_have.add(metric['name'])
        judged.append(bare)
    if judged:
        verdict = judge_fn(judged, **judge_options)
    else:
        verdict = {'verdict': 'inconclusive', 'score': None, 'metrics': {}, 'failed_metrics': [],
                   'reason': 'every metric is dry-run or disabled: nothing to judge'}
    empty = sorted(name for name in must_have if verdict['metrics'][name]['classification'] == 'nodata')
    for name in empty:
        item = verdict['metrics'][name]
        item['failed'] = True
        item['must_have_data'] = True
        item['reason'] = '%s: FAILED (no data, must_have_data): %s' % (name, item.get('reason', ''))
        verdict['failed_metrics'] = list(verdict.get('failed_metrics') or []) + [name]
    if empty:
        verdict['verdict'] = 'fail'
        verdict['reason'] = 'metric(s) without enough data, must_have_data: %s; %s' % (
            ', '.join(empty), verdict['reason'])
    for metric in observed:
        alone = judge_fn([metric], **judge_options)
        item = dict(alone['metrics'][metric['name']])
        item['would_fail'] = bool(item.get('failed'))
        item['failed'] = False
        item['dry_run'] = True
        item['reason'] = 'dry run, not judged: %s' % item.get('reason', '')
        verdict['metrics'][metric['name']] = item
    verdict['sources'] = sources
    return verdict
