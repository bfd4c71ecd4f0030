# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The analysis of a judged step: what it samples (the sides, the request logs,
Prometheus), the counters it starts from, the sample-size plan at pre-flight,
and the judgement of what came back. It decides pass or fail; the batches
decide what follows.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import (
    CRITICAL_RATIO,
    JudgeError,
    METRIC_DEFAULTS,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._power import (
    PowerError,
    describe as describe_power,
    fix as fix_power,
    plan as plan_power,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._progress import latency_summary, record_analysis
from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import (
    RolloutError,
    analysis_metrics,
    analysis_sources,
    canary_metrics,
    judge_analysis,
    merge_logs,
    prometheus_instance,
    traffic_report,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._sequential import look_confidence

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import judge_options
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import (
    collect,
    describe_failures,
    halt,
    live_balancers,
    say,
    score_text,
    server_of,
    servers_of,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.routing import (
    by_route,
    judged_by_bucket,
    log_backend,
    routed_counters,
    routing_on,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.steps import is_judged, judged_looks, sides


def plan_samples(state, lbs_ok, held_servers):
    """The sample-size plan of the judged canary step; False when it refuses (canary_underpowered=fail).

    The request rate is canary_request_rate, else what HAProxy counted over
    its last second on every balancer; the baseline error rate is the
    servers' 5xx share since HAProxy started.
    """
    settings = state['settings']
    state['sample_plan'] = None
    if not (state['plan_steps'] and is_judged(state, 0)):
        return True
    servers = [s for s in servers_of(state, state['app_hosts']) if s not in held_servers]
    rows = [lbs_ok[b]['backends'][settings['backend']][s] for b in lbs_ok for s in servers]
    requests = sum(row.get('req_tot') or 0 for row in rows)
    errors = sum(row.get('hrsp_5xx') or 0 for row in rows)
    measured = settings['request_rate'] is None
    rate = sum(row.get('rate') or 0 for row in rows) if measured else settings['request_rate']
    try:
        result = plan_power(rate, settings['traffic_percent'], settings['analysis_interval'],
                            settings['analysis_count'], baseline_error_rate=errors / float(requests) if requests else 0.0,
                            alpha=1 - settings['confidence'], error_tolerance=METRIC_DEFAULTS['tolerance'],
                            max_absolute=METRIC_DEFAULTS['max_absolute'],
                            latency_tolerance=METRIC_DEFAULTS['tolerance'], min_samples=METRIC_DEFAULTS['min_samples'],
                            min_power=settings['min_power'], latency_ratio=settings['critical_ratio'] or CRITICAL_RATIO)
    except PowerError as exc:
        halt(state, 'preflight', 'nothing was changed: the sample-size plan failed: %s' % exc)
        return False
    result['rate_source'] = 'HAProxy, last second' if measured else 'canary_request_rate'
    result['text'] = describe_power(result)
    result['fix'] = None
    state['sample_plan'] = result
    if result['ok']:
        say(state, 'sample plan: %s' % result['text'])
        return True
    if rate == 0:
        result['fix'] = ('no traffic through %s at pre-flight: only the probes will be judged; set '
                         'canary_request_rate if traffic is expected during the analysis' % settings['backend'])
    else:
        result['fix'] = fix_power(result, settings['analysis_interval'])
    problem = 'the canary analysis is underpowered (%s): %s; %s' % (
        'request rate from %s' % result['rate_source'], result['text'], result['fix'])
    if settings['underpowered'] == 'fail':
        halt(state, 'preflight', 'nothing was changed: %s (canary_underpowered=fail)' % problem)
        return False
    state['notes'].append(problem)
    say(state, 'warning: %s' % problem)
    return True


def counters_from(state, ok, hosts):
    """haproxy_info-shaped snapshots of every live balancer from its ready result,
    or None when one lacks a server's counters (the analysis then reads them)."""
    backend = state['settings']['backend']
    servers = servers_of(state, hosts)
    snapshots = {}
    for balancer in live_balancers(state):
        rows = (ok.get(balancer) or {}).get('servers') or {}
        if not all('req_tot' in (rows.get(s) or {}) and 'hrsp_5xx' in rows[s] for s in servers):
            return None
        snapshots[balancer] = {'backends': {backend: dict(
            (s, {'req_tot': rows[s]['req_tot'], 'hrsp_5xx': rows[s]['hrsp_5xx']}) for s in servers)},
            'process': ok[balancer].get('process') or {}}
    return snapshots


def analysis_act(state, step_index):
    """The analysis act's sides and what it asks of the request logs and Prometheus."""
    settings = state['settings']
    canary, baseline = sides(state, step_index)
    looks = judged_looks(state)
    total = max(state.get('looks_planned') or 0, len(looks))
    # A resumed run's looks come last: the earlier runs spent the first ones.
    number = total - len(looks) + looks.index(step_index) + 1
    state['steps'][-1]['sides'] = {'canary': canary, 'baseline': baseline}
    state['steps'][-1]['look'] = {'look': number, 'looks': total, 'shared': settings['confidence'],
                                  'confidence': look_confidence(settings['confidence'], number, total)}

    def members(hosts):
        return [(server_of(state, h), prometheus_instance(state['identities'][h])) for h in hosts]

    try:
        sources = analysis_sources(settings.get('metrics') or {}, settings['backend'], members(canary),
                                   members(baseline), settings['analysis_interval'], settings['analysis_count'])
        if sources['log'] and routing_on(state):
            # The canary hosts serve in the canary backend: its lines count too, with their routes.
            sources['log']['also_backend'] = log_backend(state)
    except RolloutError as exc:
        # Its metrics then have no data: the judge (and must_have_data) says what that means.
        say(state, 'Prometheus is not queried: %s' % exc)
        sources = {'log': None, 'prometheus': None}
        if (settings.get('metrics') or {}).get('haproxy_log'):
            sources = analysis_sources(dict(settings['metrics'], prometheus_metrics=[]), settings['backend'],
                                       members(canary), members(baseline), settings['analysis_interval'],
                                       settings['analysis_count'])
    return dict(sources, canary=canary, baseline=baseline)


def source_results(state, results, failed):
    """The request logs and Prometheus answers, when the act asked for them (failures into failed)."""
    sources = {}
    for key, role, wanted in (('logs', 'balancers', 'log'), ('prometheus', 'probe', 'prometheus')):
        if state['act'].get(wanted):
            ok, bad = collect(state, role, results.get(key, {}), 'the analysis')
            failed.update(bad)
            sources[key] = ok
    return sources


def more_metrics(state, step, metrics, sources, custom, canary, baseline):
    """The built-in metrics plus the request log's, Prometheus's and the user's; the step keeps what they saw."""
    canary_servers, baseline_servers = servers_of(state, canary), servers_of(state, baseline)
    logs = None
    if 'logs' in sources:
        logs = merge_logs(sources['logs'], canary_servers + baseline_servers)
        step['traffic'] = traffic_report(logs, canary_servers)
        if routing_on(state):
            step['traffic_by_route'] = by_route(logs, canary_servers, baseline_servers)
    prometheus = None
    if 'prometheus' in sources:
        prometheus = (sources['prometheus'].get(state['probe_host']) or {}).get('answers') or {}
        step['prometheus'] = dict((name, {'query': r.get('query'), 'values': len(r.get('values') or []),
                                          'series': r.get('series'), 'error': r.get('error')})
                                  for name, r in sorted(prometheus.items()))
    metric_settings = state['settings'].get('metrics') or {}
    metrics = analysis_metrics(metrics, logs=logs, canary_servers=canary_servers, baseline_servers=baseline_servers,
                               prometheus=prometheus, prometheus_specs=metric_settings.get('prometheus_metrics') or (),
                               custom=custom, options=metric_settings.get('metric_options'))
    if logs is not None and routing_on(state):
        # Like with like: the canary's users picked by bucket against the stable's; opt-in
        # groups (a biased sample) are in step['traffic_by_route'], not judged.
        metrics = judged_by_bucket(metrics, logs, canary_servers, baseline_servers)
    return metrics


def judge_step(state, step, batch, results, now):
    """Judge a step from what its analysis act brought back (the counters before and
    after, the probe's samples, the request logs, Prometheus, the user's metrics);
    the verdict goes into the step. Returns why the step fails ('' when it may go on)."""
    settings = state['settings']
    if state['act'].get('counters_at_start'):
        start = state.pop('analysis_start')
        ok_before = dict((b, start[b]) for b in state['act']['balancers'])
        failed_before = {}
    else:
        ok_before, failed_before = collect(state, 'balancers', results.get('before', {}), 'the analysis')
    ok_after, failed_after = collect(state, 'balancers', results.get('after', {}), 'the analysis')
    ok_probe, failed_probe = collect(state, 'probe', results.get('samples', {}), 'the analysis')
    failed = dict(failed_before, **failed_after)
    failed.update(failed_probe)
    sources = source_results(state, results, failed)
    if failed:
        return describe_failures('analysis', failed)
    if results.get('custom_failed'):
        # The user's own metrics are missing: judging without them could pass a canary they would fail.
        return 'the analysis tasks (canary_analysis_tasks) failed, so their metrics are missing: %s' % (
            results['custom_failed'],)
    canary, baseline = state['act']['canary'], state['act']['baseline']
    if routing_on(state):
        ok_before, ok_after = routed_counters(state, ok_before), routed_counters(state, ok_after)
    rounds = [r.get('samples', {}) for r in ok_probe[state['probe_host']].get('results', [])]
    record_analysis(state, step, batch, ok_before, ok_after, rounds, canary, baseline, now)
    try:
        metrics = canary_metrics(ok_before, ok_after, settings['backend'], servers_of(state, canary),
                                 servers_of(state, baseline), rounds,
                                 [state['identities'][h]['sample_url'] for h in canary],
                                 [state['identities'][h]['sample_url'] for h in baseline])
        metrics = more_metrics(state, step, metrics, sources, results.get('custom'), canary, baseline)
        # p50 and p95 of both sides over the whole analysis, per latency source (the judge keeps medians only).
        step['latency'] = latency_summary(metrics)
        # Each judged step looks at the new release once more: the sequential rule gives
        # each look its share of the confidence, so that looking at every step does not
        # raise the whole rollout's false alarms above one look's.
        verdict = judge_analysis(metrics, **judge_options(settings, step['look']['confidence']))
    except (RolloutError, JudgeError) as exc:
        return 'the canary could not be judged: %s' % exc
    verdict['seconds_to_verdict'] = round(now - step['started'], 1)
    step['judge'] = verdict
    say(state, 'step %d judged %s (score %s, look %d of %d): %s' % (
        step['step'], verdict['verdict'], score_text(verdict['score']), step['look']['look'], step['look']['looks'],
        verdict['reason']))
    allowed = (verdict['verdict'] == 'pass'
               or (verdict['verdict'] == 'marginal' and settings['on_marginal'] == 'promote')
               or (verdict['verdict'] == 'inconclusive' and settings['on_inconclusive'] == 'promote'))
    if not allowed:
        failing = [m['reason'] for m in verdict['metrics'].values() if m.get('failed')]
        return '%s judged %s (score %s): %s' % (
            'canary' if step['canary'] else 'step %d' % step['step'], verdict['verdict'], score_text(verdict['score']),
            '; '.join(failing) or verdict['reason'])
    return ''
