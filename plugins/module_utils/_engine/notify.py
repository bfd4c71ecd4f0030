# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notifications at the coordinator's phase transitions (canary_notify_url).

No task of the play sends anything: after each coordinator call the action
plugin calls notify(), which reads from the state which events are due
(the run past pre-flight, a step begun or ended, a pause, a rollback
begun, the decision), sends each once, in the order of the run, through
the `send` it is given, and keeps each delivery record in
state['notifications'] (the report's `notifications`). The state holds
neither the webhook's URL nor its headers: `send` brings them.
Nothing here raises into the rollout.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._notify import EVENTS


def _sent(state):
    return state.setdefault('notify_sent', [])


def due(state):
    """The (key, event, step record or None) the state has reached and not sent yet, in the run's order."""
    found = []
    passed_preflight = state['phase'] == 'batches' or bool(state['steps'])
    if passed_preflight:
        found.append(('run_started', 'run_started', None))
    halted = state['halt'] or {}
    for step in state['steps']:
        number = step['step']
        found.append(('step_started:%d' % number, 'step_started', step))
        if step['outcome'] != 'running':
            found.append(('step_finished:%d' % number, 'step_finished', step))
        if step['outcome'] == 'ok' and step is state['steps'][-1] and (
                state['act'].get('phase') == 'pause' or halted.get('kind') == 'paused'):
            found.append(('paused:%d' % number, 'paused', step))
    if state['phase'] in ('rollback', 'finish') and state['rollback']['hosts']:
        found.append(('rolling_back', 'rolling_back', None))
    if state.get('decision'):
        found.append(('finished', 'finished', None))
    sent = set(_sent(state))
    return [item for item in found if item[0] not in sent]


def summary(state, event, step=None, report=None):
    """The report's summary at this moment, as the event's body carries it."""
    settings = state['settings']
    halted = state['halt'] or {}
    out = {
        'service': settings.get('service', ''),
        'backend': settings.get('backend', ''),
        'version': settings.get('version', ''),
        'previous_version': state.get('previous_version', ''),
        'run_id': (state.get('lock_info') or {}).get('run', ''),
        'report': '',
        'decision': state.get('decision'),
        'verdict': None,
        'score': None,
        'reason': halted.get('reason', ''),
        'step': None,
    }
    # Where the report is written: report.json at the top of canary_report_dir, and this run's copy.
    out.update(report or {})
    if event == 'run_started':
        out.update(steps=len(state['plan_steps']), hosts=len(state['app_hosts']), plan=state['plan'],
                   done_before=state['done_before'])
    if step is not None:
        out['step'] = {'index': step['step'], 'of': len(state['plan_steps']), 'hosts': step['hosts'],
                       'canary': step['canary'], 'judged': step['judged'], 'outcome': step['outcome'],
                       'seconds': step['seconds']}
        verdict = step.get('judge') or {}
        if event != 'step_started' and verdict:
            out.update(verdict=verdict.get('verdict'), score=verdict.get('score'))
            if not out['reason']:
                out['reason'] = verdict.get('reason', '')
        if event == 'step_started':
            out['reason'] = ''
    if event == 'paused':
        act = state['act']
        out['pause_seconds'] = act.get('seconds') if act.get('phase') == 'pause' else None
        if out['pause_seconds']:
            out['reason'] = ''
    if event == 'rolling_back':
        out['hosts_back'] = list(state['rollback']['hosts'])
    if event == 'finished':
        out['hosts'] = dict(state['final_versions'])
        judged = [s['judge'] for s in state['steps'] if s.get('judge')]
        if judged:
            out.update(verdict=judged[0].get('verdict'), score=judged[0].get('score'))
    return out


def notify(state, now, send, report=None):
    """Send what is due (see due()); send(event, summary) returns a delivery record.
    report: {'report': path, 'report_run': path}, into every summary.

    A run without notifications (canary_notify_url empty, or check mode,
    which changes nothing anywhere) sends nothing. Events left out of
    canary_notify_events are passed over. Returns the records made now."""
    conf = state['settings'].get('notify') or {}
    if not conf.get('enabled') or state['check_mode']:
        return []
    made = []
    for key, event, step in due(state):
        _sent(state).append(key)
        if event not in conf.get('events', EVENTS):
            continue
        record = send(event, summary(state, event, step, report))
        record = dict(record, event=event, step=step['step'] if step else None, at=round(now - state['started'], 2))
        state.setdefault('notifications', []).append(record)
        made.append(record)
    return made


def report_section(state):
    """report.json's `notifications`: where to (the URL's origin only), how, and each delivery."""
    conf = state['settings'].get('notify') or {}
    if not conf.get('enabled'):
        return {'enabled': False, 'deliveries': []}
    return {'enabled': True, 'target': conf['target'], 'format': conf['format'], 'events': conf['events'],
            'timeout': conf['timeout'], 'retries': conf['retries'],
            'deliveries': list(state.get('notifications') or [])}
