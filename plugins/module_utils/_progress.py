# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a person watching a rollout reads: the progress view and the analysis record.

Private to grayrelease.canary. Pure Python, no Ansible imports, so the
callback plugin (plugins/callback/rollout_progress.py) stays thin and every
line it prints is unit-tested from recorded engine states.

Two parts:

- record_analysis(): called by the engine when the canary analysis ends. It
  stores, per analysis interval, canary vs baseline error rate and latency
  (from the probe rounds the analysis already has) and, per step, the
  traffic share set by the weights vs the share HAProxy actually sent
  (from the before/after counters). The progress view, report.md and
  report.html read them.
- ProgressView: fed every rollout state the coordinator writes (the state
  file the grayrelease_rollout_state_file fact names), every per-interval
  probe result and the final report; returns the lines to print for what is
  new since the last state.
"""

from __future__ import annotations

import re
import statistics

from ansible_collections.grayrelease.canary.plugins.module_utils._contract import BATCH_PHASES
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import canary_hosts
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import by_url
from ansible_collections.grayrelease.canary.plugins.module_utils._routing import RoutingError, parse_spec

# Batch phases in the order they run (restore: the canary's weights put back).
PHASES = BATCH_PHASES
# How a finished phase reads in a batch line.
PHASE_WORDS = {'before_drain': 'before-drain hook', 'drain': 'drained', 'switch': 'switched',
               'health': 'healthy', 'ready': 'ready', 'after_ready': 'after-ready hook',
               'analysis': 'analysed', 'restore': 'weights restored'}


def _round(value, digits=2):
    return None if value is None else round(float(value), digits)


def _rate(errors, total):
    return round(float(errors) / total, 4) if total else None


def group_stats(samples, urls):
    """{requests, errors, error_rate, p50_ms, p95_ms} of the http_sample results for urls."""
    latencies, errors, total = [], 0, 0
    for url in urls:
        result = by_url(samples, url) or {}
        latencies.extend(result.get('latencies_ms') or [])
        errors += int(result.get('errors') or 0)
        total += int(result.get('total') or 0)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] if ordered else None
    return {'requests': total, 'errors': errors, 'error_rate': _rate(errors, total),
            'p50_ms': _round(statistics.median(ordered)) if ordered else None, 'p95_ms': _round(p95)}


def interval_stats(samples, canary_urls, baseline_urls):
    """Canary vs baseline for one analysis interval (one http_sample round)."""
    return {'canary': group_stats(samples or {}, canary_urls), 'baseline': group_stats(samples or {}, baseline_urls)}


def _counter(results, backend, servers, counter):
    total = 0
    for result in results.values():
        table = ((result or {}).get('backends') or {}).get(backend) or {}
        total += sum(int((table.get(s) or {}).get(counter) or 0) for s in servers)
    return total


def traffic_share(weights, canary_servers, before, after, backend, baseline_servers):
    """The canary's share of traffic: set by the weights and measured by HAProxy between two snapshots."""
    total_weight = sum(weights.values()) if weights else 0
    set_share = 100.0 * sum(weights.get(s, 0) for s in canary_servers) / total_weight if total_weight else None
    out = {'set_percent': _round(set_share)}
    if set(before) != set(after) or not after:
        return out
    counts = {}
    for group, servers in (('canary', canary_servers), ('baseline', baseline_servers)):
        for key, counter in (('requests', 'req_tot'), ('errors', 'hrsp_5xx')):
            delta = _counter(after, backend, servers, counter) - _counter(before, backend, servers, counter)
            # A reload mid-analysis resets the counters: no measurement then.
            counts['%s_%s' % (group, key)] = delta if delta >= 0 else None
    out.update(counts)
    if None not in counts.values():
        requests = counts['canary_requests'] + counts['baseline_requests']
        out['requests'] = requests
        out['measured_percent'] = _round(100.0 * counts['canary_requests'] / requests) if requests else None
    return out


def record_analysis(state, step, batch, before, after, rounds, canary, baseline, now):
    """Store step['intervals'] and step['traffic_share'] for the view and the reports.

    Merged into what other metric sources already put in step['intervals']
    (one dict per interval): this adds the `probe` source and the times.
    Interval times are seconds since the run started; the probe rounds run
    back to back, so the analysis time is split evenly between them.
    """
    identities = state['identities']
    canary_urls = [identities[h]['sample_url'] for h in canary]
    baseline_urls = [identities[h]['sample_url'] for h in baseline]
    start = batch['timings'].get('analysis', {}).get('started', now)
    width = (now - start) / len(rounds) if rounds else 0
    intervals = step.get('intervals') if isinstance(step.get('intervals'), list) else []
    for index, samples in enumerate(rounds):
        while len(intervals) <= index:
            intervals.append({})
        intervals[index].update({
            'interval': index + 1,
            'start': _round(start + width * index - state['started']),
            'end': _round(start + width * (index + 1) - state['started']),
            'probe': interval_stats(samples, canary_urls, baseline_urls),
        })
    step['intervals'] = intervals
    servers = dict((h, identities[h].get('server') or h) for h in canary + baseline)
    # A later step is at the initial weights: its share of what its two sides take.
    weights = step.get('weights') or dict((servers[h], state.get('initial_weights', {}).get(servers[h], 0))
                                          for h in canary + baseline)
    share = traffic_share(weights, [servers[h] for h in canary], before or {}, after or {},
                          state['settings'].get('backend'), [servers[h] for h in baseline])
    step['traffic_share'] = dict(share, asked_percent=state['settings'].get('traffic_percent')
                                 if step.get('canary', True) else None)


def _percentiles(values):
    """{count, p50_ms, p95_ms}: the median (as the judge's) and the nearest-rank 95th percentile."""
    ordered = sorted(float(v) for v in values or [] if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not ordered:
        return {'count': 0, 'p50_ms': None, 'p95_ms': None}
    rank = max(1, int(-(-95 * len(ordered) // 100)))
    return {'count': len(ordered), 'p50_ms': _round(statistics.median(ordered)), 'p95_ms': _round(ordered[rank - 1])}


# The latency sources of a judged step, in the order a reader wants them, and what they measure.
LATENCY_SOURCES = (('probe_latency_ms', 'probes of the sample URL'),
                   ('traffic_latency_ms', 'real requests (HAProxy log, Tr)'))


def latency_summary(metrics):
    """p50 and p95 of canary and baseline over a judged step's whole analysis, for every latency metric
    the judge was given (probe_latency_ms, traffic_latency_ms, any other samples metric in ms):
    name -> {source, canary: {count, p50_ms, p95_ms}, baseline: {...}}."""
    out = {}
    for metric in metrics or []:
        name = str(metric.get('name'))
        if metric.get('kind') != 'samples' or not (name.endswith('_ms') or 'latency' in name):
            continue
        out[name] = {'source': metric.get('source'), 'canary': _percentiles(metric.get('canary')),
                     'baseline': _percentiles(metric.get('baseline'))}
    return out


def latency_items(latency):
    """A step's latency summary as rows {name, label, canary, baseline}: the probes, the request log, the rest."""
    if not isinstance(latency, dict):
        return []
    order = [n for n, dummy in LATENCY_SOURCES] + sorted(n for n in latency if n not in dict(LATENCY_SOURCES))
    rows = []
    for name in order:
        item = latency.get(name)
        if not isinstance(item, dict) or not any((item.get(s) or {}).get('count') for s in ('canary', 'baseline')):
            continue
        rows.append({'name': name, 'label': dict(LATENCY_SOURCES).get(name, name),
                     'canary': item.get('canary') or {}, 'baseline': item.get('baseline') or {}})
    return rows


def latency_line(latency, step=1):
    """'latency (probes of the sample URL): canary p50 18.0 ms, p95 25.0 ms | baseline p50 ...', one per source."""
    return [('step %d ' % step if step > 1 else '') + 'latency (%s): canary p50 %s, p95 %s | baseline p50 %s, p95 %s' % (
        row['label'], fmt_ms(row['canary'].get('p50_ms')), fmt_ms(row['canary'].get('p95_ms')),
        fmt_ms(row['baseline'].get('p50_ms')), fmt_ms(row['baseline'].get('p95_ms'))) for row in latency_items(latency)]


# ---------------------------------------------------------------- formatting

def fmt_seconds(value):
    if value is None:
        return '-'
    return '%.1f s' % value if value < 100 else '%d s' % round(value)


def fmt_percent(value):
    return '-' if value is None else '%.1f%%' % value


def fmt_rate(value):
    """An error rate (0..1) as a percentage a person reads at a glance."""
    return '-' if value is None else '%.1f%%' % (100.0 * value) if value >= 0.001 or value == 0 \
        else '%.2g%%' % (100.0 * value)


def fmt_ms(value):
    return '-' if value is None else '%.1f ms' % value


def fmt_number(value):
    """A metric value: 3 significant digits, no float noise (0.0045763489536144635 -> 0.00458)."""
    if value is None:
        return '-'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return '%d' % value
    return '%.3g' % value


# A decimal with more digits than a person reads (0.333333, 7.557499999999999).
LONG_DECIMAL_RE = re.compile(r'(?<!\w)(?<!\d\.)\d+\.\d{4,}(?:e[-+]?\d+)?(?!\w)(?!\.\d)')


def readable(text):
    """Free text (a judge's reason) with its long decimals at 3 significant digits."""
    return LONG_DECIMAL_RE.sub(lambda match: fmt_number(float(match.group())), str(text))


def _short(text, limit):
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _hosts(names, limit=6):
    names = list(names)
    if len(names) <= limit:
        return ', '.join(names)
    return '%s and %d more' % (', '.join(names[:limit]), len(names) - limit)


def _weights_text(weights, canary_servers):
    """app1=5, the other 5 servers 9 each: the canary's weights, then the others grouped by weight."""
    canary = ', '.join('%s=%s' % (s, weights[s]) for s in canary_servers if s in weights)
    others = {}
    for server in sorted(weights):
        if server not in canary_servers:
            others.setdefault(weights[server], []).append(server)
    if len(others) == 1:
        weight, servers = list(others.items())[0]
        return '%s, the other %d servers %s each' % (canary, len(servers), weight)
    return '%s; %s' % (canary, ', '.join('%s=%s' % (s, w) for w, servers in sorted(others.items())
                                         for s in servers) or 'no other servers')


def batch_line(state, step, batch):
    """step 2/4, batch 3/6: app3 -> v2: drained 0.7 s, switched 1.4 s, healthy 0.8 s, ready 0.6 s (3.5 s)."""
    parts = []
    for phase in PHASES:
        timing = batch['timings'].get(phase)
        if not timing:
            continue
        seconds = timing.get('seconds') if isinstance(timing, dict) else timing
        if seconds is None:
            parts.append('%s FAILED' % phase)
            continue
        text = '%s %s' % (PHASE_WORDS[phase], fmt_seconds(seconds))
        if phase == 'drain':
            text += _drain_detail(batch)
            if batch.get('handed_over'):
                text += ' (with the weights restore)' if batch.get('drained_with') == 'restore' \
                    else ' (with the last ready)'
        parts.append(text)
    if batch['outcome'] == 'failed':
        # The reason follows once, as a list, in the summary at the end.
        parts.append('FAILED')
    return '%s: %s -> %s: %s (%s)' % (_position(state, step, batch), ', '.join(batch['hosts']),
                                      state['settings']['version'], ', '.join(parts), fmt_seconds(batch['seconds']))


def _position(state, step, batch):
    return 'step %d/%d, batch %d/%d' % (step['step'], len(state['plan_steps']), batch['batch'], len(state['plan']))


def _drain_detail(batch):
    """What the slowest balancer's drain found: sessions it waited for or cut."""
    views = [v.get('drain') or {} for v in (batch.get('drain') or {}).values() if isinstance(v, dict)]
    timed_out = [v for v in views if v.get('timed_out')]
    if timed_out:
        return ' (timed out, %d sessions left)' % max(int(v.get('sessions_left') or 0) for v in timed_out)
    return ''


def interval_line(index, count, stats, step=1):
    """One analysis interval; a later step's (judged at full weight) names its step."""
    canary, baseline = stats['canary'], stats['baseline']
    return ('step %d ' % step if step > 1 else '') + 'analysis interval %d/%d: canary %s | baseline %s' % (
        index, count, _side_text(canary), _side_text(baseline))


def _side_text(side):
    """0/20 errors (0.0%), p50 17.5 ms, p95 21.0 ms"""
    return '%d/%d errors (%s), p50 %s, p95 %s' % (side['errors'], side['requests'], fmt_rate(side['error_rate']),
                                                  fmt_ms(side['p50_ms']), fmt_ms(side.get('p95_ms')))


def traffic_line(traffic):
    measured = traffic.get('measured_percent')
    text = 'traffic share of the canary: set %s' % fmt_percent(traffic.get('set_percent'))
    if traffic.get('asked_percent') is not None:
        text += ' (asked %s%%)' % fmt_number(traffic['asked_percent'])
    if measured is None:
        return text + ', measured: no requests through HAProxy'
    return text + ', measured %s (%d of %d requests through HAProxy, %d vs %d 5xx)' % (
        fmt_percent(measured), traffic['canary_requests'], traffic['requests'], traffic['canary_errors'],
        traffic['baseline_errors'])


def verdict_lines(verdict, step=1, stopped=False):
    """The verdict; its failing metrics unless the verdict stopped the run
    (stopped: then they are the reason, listed once in the summary)."""
    head = ('step %d ' % step if step > 1 else '') + 'verdict: %s, score %s' % (
        verdict.get('verdict'), fmt_number(verdict.get('score')))
    if stopped:
        # Why follows once, in words, in the summary at the end (its headline at the halt).
        return [head]
    lines = ['%s (%s)' % (head, readable(verdict.get('reason', '')))]
    for name, metric in sorted((verdict.get('metrics') or {}).items()):
        if metric.get('failed'):
            lines.append('  failing metric %s: canary %s vs baseline %s (p=%s)%s' % (
                name, fmt_number(metric.get('canary')), fmt_number(metric.get('baseline')),
                fmt_number(metric.get('p_value')), ', critical' if metric.get('critical') else ''))
    return lines


def _canary_groups(state):
    """(canary hosts, baseline hosts) of the analysis, as the engine splits them."""
    sides = (state.get('steps') or [{}])[-1].get('sides')
    if sides:
        return sides['canary'], sides['baseline']
    canary = canary_hosts(state['done_before'], state['plan_steps'])
    return canary, [h for h in state['app_hosts'] if h not in canary and h not in state['held']]


# ---------------------------------------------------------------- the reason, the run, its settings

# What a metric measures, for the reason in words.
METRIC_WORDS = {'http_5xx_ratio': '5xx responses through the balancer', 'probe_error_ratio': 'failed probe requests',
                'probe_latency_ms': 'probe latency (median)',
                'traffic_latency_ms': 'response time of real requests (median, balancer log)'}
# At most this many items in the reason's list; the whole reason stays in report.json.
REASON_ITEMS = 6
_WHERE_RE = re.compile(r'\A(step \d+, batch \d+): ')
_JUDGED_RE = re.compile(r'\A(canary|step \d+) judged ')


def _split_top(text, separator='; '):
    """text split at separator outside (), [] and {}."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in '([{':
            depth += 1
        elif char in ')]}':
            depth = max(depth - 1, 0)
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            start = index + len(separator)
            index = start
            continue
        index += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _metric_value(name, kind, value):
    if kind == 'ratio':
        return fmt_rate(value)
    return fmt_ms(value) if str(name).endswith('_ms') and isinstance(value, (int, float)) else fmt_number(value)


def metric_words(name, metric):
    """One failing metric in words first, its statistics after:
    '5xx responses through the balancer higher on the canary: 33.3% vs 0.0% on the baseline, past the
    critical limit (p<0.001; n 180 canary, 1620 baseline)'."""
    label = METRIC_WORDS.get(name, str(name).replace('_', ' '))
    how = {'high': 'higher', 'low': 'lower'}.get(metric.get('classification'), metric.get('classification') or '')
    kind = metric.get('kind')
    canary, baseline = metric.get('canary'), metric.get('baseline')
    text = '%s %s on the canary: %s vs %s on the baseline' % (
        label, how, _metric_value(name, kind, canary), _metric_value(name, kind, baseline))
    if kind != 'ratio' and isinstance(canary, (int, float)) and isinstance(baseline, (int, float)) and baseline > 0:
        text += ' (%sx)' % fmt_number(round(float(canary) / baseline, 2))
    if metric.get('critical_breach'):
        text += ', past the critical limit'
    statistics = ['p%s' % (metric['p_text'] if str(metric['p_text']).startswith('<') else '=%s' % metric['p_text'])
                  if metric.get('p_text') else 'p=%s' % fmt_number(metric.get('p_value'))]
    if metric.get('canary_count') is not None:
        statistics.append('n %s canary, %s baseline' % (fmt_number(metric.get('canary_count')),
                                                        fmt_number(metric.get('baseline_count'))))
    return '%s (%s)' % (text, '; '.join(statistics))


def reason_items(reason, steps=()):
    """The reason as a short list, in words before statistics: what stopped the run first, then its parts.

    A verdict that stopped the run: 'the canary failed its analysis (step 1, batch 1): verdict fail,
    score 25', then each failing metric (metric_words). Anything else: the reason's own parts
    ('; '-separated outside brackets). At most REASON_ITEMS items.
    """
    if not reason:
        return []
    text = readable(reason).strip()
    match = _WHERE_RE.match(text)
    where = match.group(1) if match else ''
    text = text[match.end():] if match else text
    if _JUDGED_RE.match(text):
        for step in steps or []:
            verdict = step.get('judge') or {}
            if step.get('outcome') != 'failed' or not verdict.get('metrics'):
                continue
            failing = [(n, m) for n, m in sorted(verdict['metrics'].items()) if m.get('failed')]
            items = ['%s failed its analysis%s: verdict %s, score %s' % (
                'the canary' if step.get('canary') else 'step %s' % step.get('step'),
                ' (%s)' % where if where else '', verdict.get('verdict'), fmt_number(verdict.get('score')))]
            items += [metric_words(n, m) for n, m in failing] or [readable(verdict.get('reason') or '')]
            return _bounded(items)
    parts = _split_top(text)
    if where:
        parts[0] = '%s: %s' % (where, parts[0])
    return _bounded(parts)


def _bounded(items):
    if len(items) <= REASON_ITEMS:
        return items
    return items[:REASON_ITEMS - 1] + ['and %d more (the whole reason is in report.json)'
                                       % (len(items) - REASON_ITEMS + 1)]


def artifact_of(settings):
    """What was rolled out: {kind, source, checksum, digest, read_by}, from the run's settings."""
    settings = settings or {}
    release = settings.get('release') if isinstance(settings.get('release'), dict) else {}
    source = settings.get('artifact_source') or settings.get('artifact') or release.get('image') or ''
    return {'kind': settings.get('release_kind') or release.get('kind') or 'tarball',
            'source': str(source),
            'checksum': str(settings.get('checksum') or settings.get('artifact_sha256') or ''),
            'checksum_given': bool(settings.get('checksum')),
            'digest': str(release.get('digest') or ''),
            'read_by': 'every app host' if settings.get('artifact_remote') else 'the controller'}


def artifact_text(artifact):
    """'demoapp-v2.tar.gz (sha256:ab12..., given), read by the controller'"""
    if not artifact or not (artifact.get('source') or artifact.get('digest')):
        return 'not recorded'
    proofs = []
    if artifact.get('checksum'):
        proofs.append('%s%s' % (_sha(artifact['checksum']), ', given' if artifact.get('checksum_given') else ''))
    if artifact.get('digest'):
        proofs.append('image %s' % artifact['digest'])
    return '%s%s (%s), read by %s' % (
        artifact.get('source') or '-', ' [%s]' % artifact['kind'] if artifact.get('kind') not in (None, 'tarball') else '',
        '; '.join(proofs) or 'no checksum given', artifact.get('read_by') or 'the controller')


def _sha(value):
    value = str(value)
    return value if value.startswith('sha256:') else 'sha256:%s' % value


def origin_text(origin):
    """'alice (AWX job 42, template "deploy web", workflow job 41)' or 'root on ctl-1, run 1a2b3c4d'."""
    if not origin:
        return 'not recorded'
    text = origin.get('user') or 'unknown'
    if origin.get('awx_job_id') is not None:
        awx = ['AWX job %s' % origin['awx_job_id']]
        if origin.get('awx_job_template'):
            awx.append('template "%s"' % origin['awx_job_template'])
        if origin.get('awx_workflow_job_id') is not None:
            awx.append('workflow job %s' % origin['awx_workflow_job_id'])
        if origin.get('awx_schedule'):
            awx.append('schedule "%s"' % origin['awx_schedule'])
        return '%s (%s)' % (text, ', '.join(awx))
    if origin.get('controller'):
        text += ' on %s' % origin['controller']
    return text + (', run %s' % origin['run'] if origin.get('run') else '')


def settings_items(settings, capacity=None, thresholds=None):
    """The run's settings a reader needs, as (name, value) pairs: steps, the cap, the analysis, the thresholds."""
    settings = settings or {}
    steps = settings.get('steps') or []
    cap = str(settings.get('max_unavailable'))
    if capacity and capacity.get('max_unavailable') is not None:
        cap += ' (%s host%s at once)' % (capacity['max_unavailable'], '' if capacity['max_unavailable'] == 1 else 's')
    routing = settings.get('routing')
    # report.json's settings hold routing_of()'s summary, the engine's the user's canary_routing.
    routing = routing if isinstance(routing, dict) and isinstance(routing.get('key'), str) else routing_of(settings)
    items = [('steps', ', '.join(str(s) for s in steps) or '-'), ('out of rotation at most', cap),
             ('canary traffic', routing_text(routing) if routing
              else '%s%%' % fmt_number(settings.get('traffic_percent'))),
             ('analysis', '%s x %s per judged step%s' % (
                 fmt_number(settings.get('analysis_count')), fmt_seconds(settings.get('analysis_interval')),
                 '' if settings.get('judge_every_step', True) else ' (the canary only)'))]
    limits = 'confidence %s' % fmt_number(settings.get('confidence'))
    if thresholds:
        limits += ', pass_score %s, marginal_score %s' % (fmt_number(thresholds.get('pass_score')),
                                                          fmt_number(thresholds.get('marginal_score')))
    critical = []
    if settings.get('critical_ratio'):
        critical.append('median %sx' % fmt_number(settings['critical_ratio']))
    if settings.get('critical_difference'):
        critical.append('error rate +%s points' % fmt_number(100.0 * settings['critical_difference']))
    limits += '; critical: %s' % (', '.join(critical) or 'off')
    items += [('thresholds', limits),
              ('on marginal / inconclusive', '%s / %s' % (settings.get('on_marginal'), settings.get('on_inconclusive'))),
              ('pause after a step', str(settings.get('pause'))), ('drain timeout', fmt_seconds(settings.get('drain_timeout'))),
              ('auto rollback', 'yes' if settings.get('auto_rollback') else 'no')]
    return items


def routing_of(settings):
    """With canary_routing: who goes to the canary at each step (the user key, the opt-in groups and share of
    users, cumulative), from the run's settings; else None. Group members and networks are left out."""
    raw = (settings or {}).get('routing')
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        spec = parse_spec(dict(raw, backend=raw.get('backend') or (settings or {}).get('backend') or 'backend'))
    except (RoutingError, TypeError, ValueError, AttributeError) as exc:
        return {'key': '', 'steps': [], 'error': str(exc)}
    return {'key': '%s %s' % (spec['key']['source'], spec['key']['name']), 'keyless': spec['keyless'],
            'canary_backend': spec['canary_backend'],
            'steps': [{'groups': list(step['active']), 'percent': step['percent']} for step in spec['steps']]}


def routing_text(routing):
    """'by user (cookie uid): 1. group staff; 2. staff + 5% of users; 3. 50% of users'"""
    if routing.get('error'):
        return 'by user (canary_routing, not readable: %s)' % routing['error']
    steps = []
    for number, step in enumerate(routing.get('steps') or [], 1):
        parts = list(step.get('groups') or [])
        if step.get('percent'):
            parts.append('%s%% of users' % fmt_number(step['percent']))
        steps.append('%d. %s' % (number, ' + '.join(parts) or 'no users'))
    return 'by user (%s%s): %s' % (routing.get('key'), ', keyless %s' % routing['keyless'] if routing.get('keyless')
                                   else '', '; '.join(steps) or '-')


def settings_line(settings, capacity=None):
    return 'settings: %s' % '; '.join('%s %s' % (k, v) for k, v in settings_items(settings, capacity)[:6])


# ---------------------------------------------------------------- the view

class ProgressView(object):
    """Lines for what is new in each rollout state; remembers what it said."""

    def __init__(self):
        self.state = None
        self._said = set()
        self.live_intervals = 0
        self.finished = False

    def _once(self, key, lines):
        if key in self._said:
            return []
        self._said.add(key)
        return lines

    def update(self, state):
        """Lines for everything the new state adds: plan, steps, batches, analysis, halt, rollback, notes."""
        self.state = state
        lines = []
        if (state.get('act') or {}).get('phase') == 'analysis' and ('analysis', len(state['steps'])) not in self._said:
            # A new analysis: its intervals are counted from 1 as they arrive.
            self._said.add(('analysis', len(state['steps'])))
            self.live_intervals = 0
        if state.get('plan_lines'):
            lines += self._once('plan', list(state['plan_lines']))
            lines += self._once('run', self._run_lines(state))
        if state.get('staged'):
            lines += self._once('staged', ['pre-staged %s on %s (nothing switched)' % (
                state['settings']['version'], _hosts(state['staged']))])
        for step in state.get('steps', []):
            lines += self._step(state, step)
        for host, why in sorted(state.get('lost', {}).items()):
            lines += self._once(('lost', host), ['LOST %s: %s' % (host, why)])
        if state.get('halt'):
            halt = state['halt']
            word = 'paused' if halt['kind'] == 'paused' else 'HALTED'
            # What stopped the run, in words; the whole list (its statistics after its words) is
            # said once, in the summary at the end, where a reader of the job's output looks first.
            items = reason_items(halt['reason'], state.get('steps')) or ['-']
            lines += self._once('halt', ['%s (%s): %s' % (word, halt['phase'], items[0])])
        rollback = state.get('rollback') or {}
        groups = rollback.get('groups') or []
        for record in rollback.get('records', []):
            lines += self._once(('rollback', record['group']), ['rollback %d/%d: %s -> %s' % (
                record['group'], len(groups), ', '.join(record['hosts']) or 'nothing', state['previous_version'])])
            for number, error in enumerate(record['errors']):
                lines += self._once(('rollback error', record['group'], number), ['  rollback problem: %s' % error])
        for number, note in enumerate(state.get('notes', [])):
            lines += self._once(('note', number), ['note: %s' % note])
        return lines

    def _step(self, state, step):
        lines = []
        hosts = ', '.join(step['hosts'])
        if step['canary']:
            canary, dummy = _canary_groups(state)
            servers = [state['identities'][h].get('server') or h for h in canary]
            share = traffic_share(step.get('weights') or {}, servers, {}, {}, None, [])['set_percent']
            lines += self._once(('step', step['step']), [
                'step %d/%d (canary): %s, %s of the traffic at weights %s' % (
                    step['step'], len(state['plan_steps']), hosts, fmt_percent(share),
                    _weights_text(step.get('weights') or {}, servers))])
        else:
            lines += self._once(('step', step['step']), ['step %d/%d: %s' % (
                step['step'], len(state['plan_steps']), hosts)])
        for batch in step['batches']:
            done = [p for p in PHASES if (batch['timings'].get(p) or {}).get('seconds') is not None]
            if step['canary'] and 'ready' in done:
                lines += self._once(('canary ready', batch['batch']), [
                    '%s: %s -> %s ready at the canary weights; analysis: %s x %s' % (
                        _position(state, step, batch), ', '.join(batch['hosts']), state['settings']['version'],
                        state['settings']['analysis_count'], fmt_seconds(state['settings']['analysis_interval']))])
        # Intervals not already printed as they completed (the analysis was not a loop).
        for number, interval in enumerate(step.get('intervals') or [], 1):
            if interval.get('probe'):
                lines += self._once(('interval', step['step'], number), [
                    interval_line(number, len(step['intervals']), interval['probe'], step['step'])])
        if step.get('traffic_share'):
            lines += self._once(('traffic', step['step']), [traffic_line(step['traffic_share'])])
        if step.get('judge'):
            lines += self._once(('verdict', step['step']), verdict_lines(
                step['judge'], step['step'], stopped=step.get('outcome') == 'failed' and bool(state.get('halt'))))
            lines += self._once(('latency', step['step']), latency_line(step.get('latency'), step['step']))
        # A batch's line once it is over: after its analysis, which explains its end.
        for batch in step['batches']:
            if batch['outcome'] != 'running':
                lines += self._once(('batch', batch['batch']), [batch_line(state, step, batch)])
        return lines

    @staticmethod
    def _run_lines(state):
        """Who runs it, what is rolled out, and with which settings: said once, after the plan."""
        return ['run by %s' % origin_text(state.get('origin')),
                'artifact: %s' % artifact_text(artifact_of(state.get('settings'))),
                settings_line(state.get('settings'), state.get('capacity'))]

    def interval(self, samples):
        """A line for one probe round (one analysis interval) as it completes."""
        state = self.state
        if not state or (state.get('act') or {}).get('phase') != 'analysis' or not isinstance(samples, dict):
            return []
        canary, baseline = _canary_groups(state)
        urls = dict((h, state['identities'][h]['sample_url']) for h in canary + baseline)
        if not [url for url in urls.values() if by_url(samples, url) is not None]:
            return []
        self.live_intervals += 1
        # Said as it completed: the step's lines never print it again, whatever analysis comes next.
        self._said.add(('interval', len(state['steps']), self.live_intervals))
        stats = interval_stats(samples, [urls[h] for h in canary], [urls[h] for h in baseline])
        return [interval_line(self.live_intervals, state['act'].get('count') or self.live_intervals, stats,
                              len(state['steps']))]

    def waiting(self, coordinator=False):
        """(what the running task waits for, its bound in seconds or None), or None.

        coordinator: the task is the coordinator's own (rollout_state), which
        only takes long when it sleeps canary_pause seconds after a step.
        """
        state = self.state
        if not state:
            return None
        act = state.get('act') or {}
        settings = state['settings']
        phase = act.get('phase')
        if coordinator:
            if _pause_follows(state):
                return 'pause after step %d of %d' % (len(state['steps']), len(state['plan_steps'])), \
                    float(settings['pause'])
            return None
        servers = ', '.join(act.get('servers') or act.get('apps') or [])
        if phase in ('drain', 'rollback_drain'):
            return 'drain %s' % servers, settings.get('drain_timeout')
        if phase in ('health', 'rollback_health'):
            return 'health check %s' % ', '.join(act.get('hosts') or _batch_hosts(state)), \
                act.get('deadline') or settings.get('health_deadline')
        if phase in ('ready', 'rollback_ready', 'repair'):
            what, bound = 'ready %s (HAProxy health checks)' % servers, settings.get('health_deadline')
            if act.get('ready_probe'):
                what = 'health check %s from every balancer, then %s' % (', '.join(_batch_hosts(state)), what)
                bound = (bound or 0) + (act['ready_probe'].get('deadline') or 0)
            if act.get('then_drain'):
                what = '%s, then drain %s' % (what, ', '.join(act['then_drain']))
                bound = (bound or 0) + (settings.get('drain_timeout') or 0)
            return what, bound
        if phase == 'restore' and act.get('then_drain'):
            return 'initial weights back, then drain %s' % ', '.join(act['then_drain']), settings.get('drain_timeout')
        if phase in ('before_drain', 'after_ready'):
            return '%s on %s' % (PHASE_WORDS[phase], servers), None
        if phase in ('switch', 'rollback_switch'):
            return 'switch %s to %s and restart' % (servers, act.get('version') or settings['version']), None
        if phase == 'analysis':
            count = int(act.get('count') or 1)
            return 'analysis interval %d/%d (%s s each)' % (
                min(self.live_intervals + 1, count), count, fmt_number(act.get('interval'))), None
        if phase == 'releases':
            if act.get('stage'):
                return 'reading the releases on %d hosts, pre-staging %s on %d' % (
                    len(act.get('apps') or []), settings['version'], len(act['stage'])), None
            return 'reading the releases on %d hosts' % len(act.get('apps') or []), None
        if phase == 'unstage':
            return 'removing the staged %s on %d hosts' % (settings['version'], len(act.get('apps') or [])), None
        return None

    def summary(self, result):
        """The final summary from the finish task's result (report, paths, verdict)."""
        self.finished = True
        doc = result.get('report') or {}
        decision = str(doc.get('decision'))
        versions = '%s -> %s' % (doc.get('previous_version') or '?', doc.get('version') or '?')
        if decision != 'promoted':
            versions = '%s, previous %s' % (doc.get('version') or '?', doc.get('previous_version') or '?')
        lines = ['decision: %s (%s) after %s' % (
            decision.replace('_', ' ').upper(), versions, fmt_seconds(doc.get('seconds')))]
        if doc.get('reason'):
            # The reason as a short list, words before statistics: said here, once.
            items = doc.get('reasons') or reason_items(doc['reason'], doc.get('steps'))
            lines.append('reason: %s' % items[0])
            lines += ['  - %s' % item for item in items[1:]]
        steps = doc.get('steps') or []
        batches = sum(len(s.get('batches') or []) for s in steps)
        judged = [s['judge'] for s in steps if s.get('judge')]
        line = 'steps: %d of %d, batches %d of %d' % (
            len([s for s in steps if s.get('outcome') == 'ok']), len(doc.get('plan_steps') or []),
            len([b for s in steps for b in s.get('batches') or [] if b.get('outcome') == 'ok']),
            len(doc.get('plan') or [])) if batches or doc.get('plan') else 'steps: none run'
        if judged:
            line += '; canary verdict %s, score %s' % (judged[0].get('verdict'), fmt_number(judged[0].get('score')))
        lines.append(line)
        if doc.get('rolled_back'):
            lines.append('rolled back: %s' % ', '.join(doc['rolled_back']))
        by_version = {}
        for host, version in sorted((doc.get('hosts') or {}).items()):
            by_version.setdefault(version, []).append(host)
        if by_version:
            lines.append('hosts: %s' % '; '.join('%s on %s' % (_hosts(h), v) for v, h in sorted(by_version.items())))
        for problem in doc.get('rollback_errors') or []:
            lines.append('rollback problem: %s' % problem)
        if result.get('report_error'):
            lines.append(result['report_error'])
        paths = [p for p in (result.get('report_html'), result.get('report_path')) if p]
        if paths:
            lines.append('report: %s' % ' and '.join(paths))
        return lines


def _batch_hosts(state):
    steps = state.get('steps') or []
    return steps[-1]['batches'][-1]['hosts'] if steps and steps[-1]['batches'] else []


def _pause_follows(state):
    """Does recording the pending act end a step that canary_pause seconds follow?"""
    pause = state['settings'].get('pause')
    act = (state.get('act') or {}).get('phase')
    if isinstance(pause, bool) or not isinstance(pause, (int, float)) or pause <= 0 or not state.get('steps'):
        return False
    step = state['steps'][-1]
    last_of_step = len(step['batches']) == len(state['plan_steps'][step['step'] - 1])
    more = step['step'] < len(state['plan_steps'])
    ending = 'restore' if step['canary'] else 'analysis' if step.get('judged') else 'ready'
    return last_of_step and more and act == ending
