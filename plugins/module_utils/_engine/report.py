# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report: the run as a JSON document (report.json), its Markdown and the
summary lines; every value from outside is escaped before it is written.
"""

from __future__ import annotations

import re

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import format_p
from ansible_collections.grayrelease.canary.plugins.module_utils._progress import (
    artifact_of,
    artifact_text,
    origin_text,
    latency_items,
    reason_items,
    routing_of,
    settings_items,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import score_text
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.notify import report_section as notify_section


def decide(state):
    """promoted, paused, rolled_back or failed."""
    halted = state['halt']
    if halted is None:
        return 'promoted'
    if halted['kind'] == 'paused':
        return 'paused'
    rollback = state['rollback']
    errors = rollback['errors'] + [e for r in rollback.get('records', []) for e in r['errors']]
    touched_lost = [h for h in state['lost'] if h in state['app_hosts']]
    # Rolled back means: something was put back, and every host is again on
    # the old release and in rotation, with nothing lost on the way.
    if rollback['hosts'] and not errors and not state['switched'] and not state['out'] and not touched_lost \
            and not [b for b in state['lost'] if b in state['balancers']]:
        return 'rolled_back'
    return 'failed'


# AWX and Automation Controller put these in every job's extra vars (awx_* and the older tower_*).
_AWX_VARS = (('awx_job_id', 'job_id'), ('awx_job_template', 'job_template_name'),
             ('awx_workflow_job_id', 'workflow_job_id'), ('awx_workflow_job', 'workflow_job_name'),
             ('awx_launch_type', 'job_launch_type'), ('awx_schedule', 'schedule_name'), ('user', 'user_name'))


def run_origin(variables, env, lock_info=None):
    """Who runs this rollout and from where: AWX's job variables when the job is AWX's
    (awx_job_id, awx_user_name, ... or their tower_* twins), else the controller's user,
    host and the run's id. With AWX_HOST in the environment, the job's page too."""
    variables = variables if isinstance(variables, dict) else {}
    env = env if isinstance(env, dict) else {}
    lock_info = lock_info if isinstance(lock_info, dict) else {}
    origin = {}
    for key, suffix in _AWX_VARS:
        for prefix in ('awx', 'tower'):
            value = variables.get('%s_%s' % (prefix, suffix))
            if value not in (None, ''):
                origin[key] = value if isinstance(value, int) and not isinstance(value, bool) else str(value)
                break
    for name in ('AWX_JOB_ID', 'JOB_ID', 'TOWER_JOB_ID'):
        # The job's environment, when the job's extra vars did not say (AWX sets JOB_ID / AWX_JOB_ID).
        if origin.get('awx_job_id') is None and env.get(name):
            origin['awx_job_id'] = str(env[name])
    host = str(env.get('AWX_HOST') or env.get('TOWER_HOST') or '')
    if origin.get('awx_job_id') is not None and re.match(r'https?://[^\s"<>]+\Z', host):
        origin['awx_job_url'] = '%s/#/jobs/playbook/%s/output' % (host.rstrip('/'), origin['awx_job_id'])
    origin.setdefault('user', str(env.get('USER') or env.get('LOGNAME') or 'unknown'))
    for key in ('controller', 'run'):
        if lock_info.get(key):
            origin[key] = str(lock_info[key])
    return origin


def report(state, iso):
    """The report.json document (credentials in URLs redacted). iso: epoch seconds -> ISO 8601 UTC text."""
    return redact(_report(state, iso))


def _report(state, iso):
    settings = state['settings']
    halted = state['halt'] or {}
    lost = dict(state['lost'])
    may_hold = []
    for host, why in sorted(lost.items()):
        if host in state['balancers']:
            may_hold.append('%s (%s) may still hold servers drained or at canary weights; the next run repairs it'
                            % (host, why))
        elif host in state['switched'] or host in state['out']:
            may_hold.append('%s (%s) may be on %s and out of rotation' % (host, why, settings['version']))
    return {
        'decision': state['decision'],
        'reason': halted.get('reason', ''),
        # The reason as a short list, in words before statistics (the page and the summary show it).
        'reasons': reason_items(halted.get('reason', ''), state['steps']),
        'run': state.get('origin') or run_origin({}, {'USER': str(state.get('lock_owner') or '').split('@', 1)[0]},
                                                 state.get('lock_info')),
        'artifact': artifact_of(settings),
        'version': settings.get('version', ''),
        'previous_version': state['previous_version'],
        'backend': settings.get('backend', ''),
        'started': iso(state['started']),
        'finished': iso(state['finished'] or state['started']),
        'seconds': round((state['finished'] or state['started']) - state['started'], 1),
        'check_mode': state['check_mode'],
        'plan': state['plan'],
        'plan_steps': state['plan_steps'],
        'done_before': state['done_before'],
        'repaired': state['repaired'],
        'maintenance': [h for h in state['app_hosts'] if h in state['held']],
        # host -> what an operator set on its server (maintenance, a drain, a weight): left alone
        'operator_held': state['held'],
        'capacity': state.get('capacity'),
        'limit': settings.get('limit') or [],
        # With canary_routing the users' steps decide the canary's traffic (routing), not traffic_percent.
        'settings': dict([(k, settings.get(k)) for k in (
            'steps', 'max_unavailable', 'zone_mode', 'traffic_percent', 'analysis_interval', 'analysis_count',
            'pause', 'drain_timeout', 'auto_rollback', 'on_marginal', 'on_inconclusive', 'prestage',
            'confidence', 'critical_ratio', 'critical_difference', 'request_rate', 'min_power', 'underpowered',
            'judge_every_step', 'health_deadline', 'balancer_driver', 'release_kind')] + [('routing', routing_of(settings))]),
        'steps': [_report_step(step, iso, state['started']) for step in state['steps']],
        'rolled_back': state['rollback']['done'],
        'rollback': [_report_rollback(r, iso, state['started']) for r in state['rollback'].get('records', [])],
        'rollback_errors': state['rollback']['errors'] + [e for r in state['rollback'].get('records', [])
                                                          for e in r['errors']],
        'lost': lost,
        'lost_may_hold': may_hold,
        'notes': state['notes'],
        # Pre-staged by this run (beside the running release); those never switched to were removed again.
        'staged': state['staged'],
        'staged_removed': state.get('unstaged', []),
        'sample_plan': state.get('sample_plan'),
        'hosts': state['final_versions'],
        # Webhook deliveries (canary_notify_url): the URL's origin only, never its path or headers.
        'notifications': notify_section(state),
    }


def fallback_report(state, iso, error):
    """report.json when the full report could not be built (a bug): the
    contract's keys from whatever the state still holds, the error as the
    reason. Never raises on a damaged state."""
    def get(key, default):
        value = state.get(key) if isinstance(state, dict) else None
        return value if isinstance(value, type(default)) else default

    try:
        decision = state.get('decision') or decide(state)
    except Exception:  # pylint: disable=broad-except
        decision = 'failed'
    settings = get('settings', {})
    started = state['started'] if isinstance(state.get('started'), (int, float)) else 0.0
    finished = state['finished'] if isinstance(state.get('finished'), (int, float)) else started
    return redact({
        'decision': decision,
        'reason': 'internal error in the coordinator (report): %s (please report it)' % error,
        'version': settings.get('version', ''),
        'previous_version': get('previous_version', ''),
        'started': iso(started),
        'finished': iso(finished),
        'plan': get('plan', []),
        'steps': [],
        'hosts': get('final_versions', {}),
        'notes': get('notes', []),
    })


def _report_step(step, iso, origin):
    # offset: seconds since the run started, for the report's timeline.
    out = dict(step, started=iso(step['started']), finished=iso(step['finished'] or step['started']),
               offset=round(step['started'] - origin, 2))
    out['batches'] = [dict(b, started=iso(b['started']), finished=iso(b['finished'] or b['started']),
                           offset=round(b['started'] - origin, 2),
                           timings=dict((k, v.get('seconds')) for k, v in b['timings'].items()))
                      for b in step['batches']]
    share = canary_share(step.get('traffic_by_route'))
    if share:
        out['canary_share'] = share
    return out


def canary_share(by_route):
    """With canary_routing: the share of the analysis window's logged requests the canary
    backend served (every route), as measured; None without the request log's routes."""
    if not by_route:
        return None
    total = sum(part['requests'] for part in by_route.values())
    canary = sum(part['requests'] for route, part in by_route.items() if route.startswith('canary/'))
    return {'requests': canary, 'of': total, 'percent': round(100.0 * canary / total, 1) if total else None}


def _report_rollback(record, iso, origin):
    """A rollback group: its start as text and as an offset, and its phases' seconds when the engine timed them."""
    out = dict(record, started=iso(record['started']), offset=round(record['started'] - origin, 2))
    timings = record.get('timings')
    if isinstance(timings, dict):
        out['timings'] = dict((k, v.get('seconds') if isinstance(v, dict) else v) for k, v in timings.items())
        out['phase_offsets'] = dict((k, round(v['started'] - origin, 2)) for k, v in timings.items()
                                    if isinstance(v, dict) and isinstance(v.get('started'), (int, float)))
    return out


def first_verdict(doc):
    """The first judged step's verdict (the canary's), or {}."""
    for step in doc.get('steps') or []:
        if step.get('judge'):
            return step['judge']
    return {}


def report_markdown(doc):
    """report.md: the same facts for a person. Every text from outside goes through md_text."""
    lines = ['# Canary rollout of %s: %s' % (md_text(doc['backend']), md_text(str(doc['decision']).upper())), '',
             '| | |', '|---|---|',
             '| decision | **%s** |' % md_text(doc['decision']),
             '| version | %s -> %s |' % (md_text(doc['previous_version']), md_text(doc['version'])),
             '| started / finished (UTC) | %s / %s (%s s) |' % (doc['started'], doc['finished'], doc['seconds'])]
    if doc.get('run'):
        lines.append('| run by | %s |' % md_text(origin_text(doc['run'])))
    if doc.get('artifact'):
        lines.append('| artifact | %s |' % md_text(artifact_text(doc['artifact'])))
    if doc['reason']:
        # Once, as a short list in words; the statistics follow in the judgement.
        items = doc.get('reasons') or reason_items(doc['reason'], doc.get('steps'))
        lines = lines[:2] + ['## Why', ''] + ['- %s' % md_text(i, starts_line=True) for i in items] + [''] + lines[2:]
    lines += ['| rolled back | %s |' % (_md_names(doc['rolled_back']) or 'nothing'),
              '| repaired before start | %s |' % (_md_names(doc['repaired']) or 'nothing')]
    if doc['maintenance']:
        lines.append('| left alone (maintenance) | %s |' % _md_names(doc['maintenance']))
    if doc['lost']:
        lines.append('| lost | %s |' % md_text('; '.join(doc['lost_may_hold']) or ', '.join(doc['lost'])))
    if doc.get('settings'):
        limits = first_verdict(doc).get('thresholds')
        lines += ['', '## Settings', '', '| | |', '|---|---|']
        lines += ['| %s | %s |' % (md_text(k), md_text(v)) for k, v in settings_items(doc['settings'], doc.get('capacity'),
                                                                                      limits)]
    lines += ['', '## Plan', '']
    for number, step in enumerate(doc['plan_steps'], 1):
        lines.append('%d. %s' % (number, md_text(' | '.join(', '.join(b) for b in step), starts_line=True)))
    if doc['done_before']:
        lines += ['', 'Already on %s before this run (resume): %s' % (md_text(doc['version']),
                                                                      _md_names(doc['done_before']))]
    lines += _sample_plan_lines(doc.get('sample_plan'))
    lines += ['', '## Steps', '', '| step | batch | hosts | canary | outcome | seconds | drain | switch | health | ready |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for step in doc['steps']:
        for batch in step['batches']:
            t = batch['timings']
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                step['step'], batch['batch'], _md_names(batch['hosts']), 'yes' if step['canary'] else '',
                md_text(batch['outcome']), batch['seconds'], t.get('drain', '-'), t.get('switch', '-'),
                t.get('health', '-'), t.get('ready', '-')))
    if doc.get('rollback'):
        lines += ['', '## Rollback', '', '| group | hosts | started (UTC) | drain | switch | health | ready |',
                  '|---|---|---|---|---|---|---|']
        for record in doc['rollback']:
            t = record.get('timings') if isinstance(record.get('timings'), dict) else {}
            lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                _num(record.get('group')), _md_names(record.get('hosts') or []) or 'nothing',
                md_text(record.get('started', '-')), _num(t.get('drain')), _num(t.get('switch')),
                _num(t.get('health')), _num(t.get('ready'))))
    for step in doc['steps']:
        verdict = step.get('judge') or {}
        if not verdict.get('metrics'):
            continue
        lines += _judgement_lines(step['step'], verdict, step.get('look'))
        lines += _latency_lines(step.get('latency'))
        lines += _traffic_lines(step.get('traffic'))
        lines += _route_lines(step.get('canary_share'), step.get('traffic_by_route'))
    errors = _other_errors(doc)
    for title, items in (('Errors', errors), ('Rollback errors', doc['rollback_errors']), ('Notes', doc['notes']),
                         ('Notifications', _notification_lines(doc.get('notifications')))):
        if items:
            lines += ['', '### %s' % title, ''] + ['- %s' % md_text(e, starts_line=True) for e in items]
    lines += ['', '## Hosts', '', '| host | version |', '|---|---|']
    lines += ['| %s | %s |' % (md_text(h), md_text(v)) for h, v in sorted(doc['hosts'].items())]
    return '\n'.join(lines) + '\n'


def _notification_lines(section):
    """One line per webhook delivery: the event, delivered or why not, attempts and seconds."""
    if not section or not section.get('enabled'):
        return []
    lines = []
    for item in section.get('deliveries') or []:
        lines.append('%s%s to %s: %s after %s attempt%s in %s s' % (
            item.get('event'), ' (step %s)' % item['step'] if item.get('step') else '', section.get('target'),
            'delivered' if item.get('delivered') else 'NOT delivered (%s)' % (item.get('error') or 'no answer'),
            item.get('attempts'), '' if item.get('attempts') == 1 else 's', item.get('seconds')))
    return lines


def _other_errors(doc):
    """The steps' errors but the one the reason already says (printed once)."""
    reason = doc.get('reason') or ''
    return [e for s in doc.get('steps') or [] for e in s.get('errors') or [] if not (e and reason.endswith(e))]


def _latency_lines(latency):
    """p50 and p95 of the canary and the baseline over the step's whole analysis, per latency source."""
    rows = latency_items(latency)
    if not rows:
        return []
    lines = ['', '#### Latency over the analysis (p50 / p95)', '',
             '| source | canary p50 / p95 | baseline p50 / p95 | n canary / baseline |', '|---|---|---|---|']
    for row in rows:
        lines.append('| %s | %s / %s | %s / %s | %s / %s |' % (
            md_text(row['label']), _ms(row['canary']['p50_ms']), _ms(row['canary']['p95_ms']),
            _ms(row['baseline']['p50_ms']), _ms(row['baseline']['p95_ms']), _num(row['canary']['count']),
            _num(row['baseline']['count'])))
    return lines


def _ms(value):
    return '-' if value is None else '%s ms' % _num(value)


def _traffic_lines(traffic):
    """Per server, the requests HAProxy logged in the window (canary_haproxy_log)."""
    if not traffic:
        return []
    lines = ['', '#### Real traffic per server (HAProxy request log, Tr = server response time)', '',
             '| server | side | requests | 5xx | Tr p50 / p95 / max (ms) | Ta p50 (ms) | first Tr samples (ms) |',
             '|---|---|---|---|---|---|---|']
    for server, item in sorted(traffic.items()):
        tr = item['response_ms']
        lines.append('| %s | %s | %d | %d | %s / %s / %s | %s | %s |' % (
            md_text(server), md_text(item['role']), item['requests'], item['errors_5xx'], _num(tr['p50']),
            _num(tr['p95']), _num(tr['max']), _num(item['total_ms']['p50']),
            ' '.join(_num(v) for v in item['response_ms_samples'][:20])))
    return lines


def _route_lines(share, by_route):
    """canary_routing: the users' requests per route in the window, and the canary's measured share."""
    if not share:
        return []
    lines = ['', '#### Users by route (HAProxy request log): %s of %s requests on the canary backend (%s%%)'
             % (share['requests'], share['of'], _num(share['percent'])), '',
             '| route | requests | 5xx |', '|---|---|---|']
    for route, part in sorted(by_route.items()):
        lines.append('| %s | %d | %d |' % (md_text(route), part['requests'], part['errors_5xx']))
    return lines


def _sample_plan_lines(plan):
    if not plan:
        return []
    lines = ['', '### Sample-size plan of the canary analysis', '',
             '| | |', '|---|---|',
             '| request rate | %s req/s (%s) |' % (_num(plan['request_rate']), md_text(plan.get('rate_source', ''))),
             '| window | %s s at %s%% of the traffic |' % (_num(plan['window_seconds']), _num(plan['traffic_percent'])),
             '| expected requests | %d canary, %d baseline |' % (plan['canary_requests'], plan['baseline_requests']),
             '| power: %s errors (baseline %s) | %.2f |' % (_percent(plan['error_target_rate']),
                                                            _percent(plan['baseline_error_rate']), plan['error_power']),
             '| power: median %sx slower | %.2f |' % (_num(plan['latency_ratio']), plan['latency_power']),
             '| detectable with power %s | %s |' % (_num(plan['min_power']), ', '.join(
                 x for x in ('error rate >= %s' % _percent(plan['detectable_error_rate'])
                             if plan['detectable_error_rate'] is not None else '',
                             'median >= %sx' % _num(plan['detectable_latency_ratio'])
                             if plan['detectable_latency_ratio'] is not None else '') if x) or 'nothing')]
    if plan.get('fix'):
        lines.append('| underpowered | %s |' % md_text(plan['fix']))
    return lines


def _judgement_lines(number, verdict, look=None):
    """The verdict, what decided it, and per metric the figures and the rule."""
    heading = '### Canary judgement (step %s): %s, score %s' % (
        md_text(number), md_text(verdict['verdict']), score_text(verdict['score']))
    decided = 'decided by %s: ' % verdict['decided_by'] if verdict.get('decided_by') else ''
    lines = ['', heading, '', md_text(decided + verdict.get('reason', ''), starts_line=True)]
    limits = verdict.get('thresholds')
    if limits:
        lines += ['', 'confidence %s (alpha %s), pass_score %s, marginal_score %s, critical: %s, %s'
                  % (_num(limits['confidence']), _num(limits['alpha']), _num(limits['pass_score']),
                     _num(limits['marginal_score']),
                     'median %sx' % _num(limits['critical_ratio']) if limits['critical_ratio'] else 'median off',
                     'rate +%s' % _points(limits['critical_difference']) if limits['critical_difference']
                     else 'rate off')
                  + ('; look %d of %d, sharing canary_confidence %s' % (look['look'], look['looks'], _num(look['shared']))
                     if look and look['looks'] > 1 else '')]
    lines += ['', '| metric | result | n canary / baseline | baseline | canary | effect | p-value | thresholds | rule |',
              '|---|---|---|---|---|---|---|---|---|']
    for name, metric in sorted(verdict['metrics'].items()):
        if metric.get('dry_run'):
            result = 'dry run'
        elif metric.get('critical_breach'):
            result = '**FAILED (critical)**'
        elif metric.get('failed'):
            result = '**FAILED**'
        else:
            result = md_text(metric.get('classification'))
        lines.append('| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |' % (
            md_text(name), result, _num(metric.get('canary_count')), _num(metric.get('baseline_count')),
            _num(metric.get('baseline')), _num(metric.get('canary')), md_text(metric.get('effect_text', '-')),
            md_text(metric.get('p_text') or format_p(metric.get('p_value'))), md_text(_limits_text(metric)),
            md_text(metric.get('rule') or metric.get('reason', ''))))
    return lines


def _limits_text(metric):
    limits = metric.get('thresholds') or {}
    if not limits:
        return '-'
    parts = ['tolerance %s%%' % _num(limits['tolerance'] * 100)]
    if metric.get('kind') == 'ratio':
        parts[0] += ' + %s' % _points(limits.get('max_absolute', 0))
        if limits.get('critical_difference'):
            parts.append('critical +%s' % _points(limits['critical_difference']))
    elif limits.get('critical_ratio'):
        parts.append('critical %sx' % _num(limits['critical_ratio']))
    parts.append('min %s' % _num(limits['min_samples']))
    return ', '.join(parts)


def _points(fraction):
    text = _num(fraction * 100)
    return '%s point%s' % (text, '' if text == '1' else 's')


def _percent(rate):
    return '%.3g%%' % (rate * 100)


# Control characters (ESC starts a terminal's escape sequence) other than
# the whitespace that _one_line folds.
_CONTROL_RE = re.compile('[\x00-\x08\x0e-\x1f\x7f-\x9f]')
# What text from users and hosts (names, versions, reasons, hosts' error
# messages, metric names) must not do in report.md: '|' and newlines break
# the table row; [text](url) and ![](url) make links and images, '<tag' and
# '<scheme:' HTML and autolinks, '&name;' characters; backticks, '*', '~'
# and '#', '_' change how it looks; '\' would undo an escape.
_MD_ESCAPES = {'\\': '\\\\', '`': '\\`', '*': '\\*', '_': '\\_', '[': '\\[', ']': '\\]', '|': '\\|', '#': '\\#',
               '~': '\\~', '&': '&amp;', '<': '&lt;'}
# '<' only where it could open a tag or an autolink: 'p<0.001' and '< 0.005' stay as they are.
# '_' only where it is not inside a word (CommonMark does not emphasise there): fe_demoapp stays.
_MD_SPECIAL_RE = re.compile(r'[\\`*\[\]|#~&]|<(?=[A-Za-z/!?])|(?<![^\W_])_|_(?![^\W_])')
# What makes a line a list item ('- x', '+ x', '1. x', '1) x'), a quote
# ('>') or a heading's underline ('===', '---') when text starts the line.
_MD_LINE_START_RE = re.compile(r'\A(?:[-+]|[0-9]{1,9}[.)])(?= |\Z)|\A>|\A[-=]+\Z')


def _one_line(value):
    """Outside text on one line: whitespace (newlines too) folded, control characters shown as U+FFFD."""
    return _CONTROL_RE.sub('\ufffd', ' '.join(str(value).split()))


def md_text(value, starts_line=False):
    """Outside text as literal Markdown on one line (a table cell; with starts_line, a list item or paragraph)."""
    text = _MD_SPECIAL_RE.sub(lambda match: _MD_ESCAPES[match.group()[0]], _one_line(value))
    return _MD_LINE_START_RE.sub(_md_line_start, text) if starts_line else text


def _md_line_start(match):
    marker = match.group()
    if marker[0].isdigit():
        return marker[:-1] + '\\' + marker[-1]  # 1. -> 1\.
    return '\\' + marker


def _md_names(names):
    return md_text(', '.join(str(name) for name in names))


def _num(value):
    if isinstance(value, float):
        return '%.4g' % value
    return '-' if value is None else md_text(value)


def summary_lines(doc, report_path):
    """The run's summary for the terminal and set_stats: one line per fact, whatever a host's text holds."""
    lines = ['decision: %s (%s -> %s)' % (doc['decision'], _one_line(doc['previous_version'] or '?'),
                                          _one_line(doc['version'] or '?'))]
    if doc['reason']:
        # The reason once, as a short list in words (the statistics after them); the whole one is in report.json.
        items = [_one_line(i) for i in doc.get('reasons') or reason_items(doc['reason'], doc.get('steps'))]
        items = items or [_one_line(doc['reason'])]
        lines.append('reason: %s' % items[0])
        lines += ['  - %s' % i for i in items[1:]]
    lines += ['%s: %s' % (_one_line(h), _one_line(v)) for h, v in sorted(doc['hosts'].items())]
    lines.append('report: %s' % report_path)
    return lines
