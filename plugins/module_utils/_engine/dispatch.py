# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dispatch: record() takes what each named host returned for the current act
and hands it to the phase's handler (HANDLERS), advance() runs the ops the
play calls between acts, and view() is the small view the play's conditions
read. A coordinator error halts the run with a reason instead of a traceback.
"""

from __future__ import annotations

import copy

from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import EngineError
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import (
    batch_failed,
    current_batch,
    halt,
    score_text,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.preflight import (
    after_lock,
    after_releases,
    after_repair,
    after_survey,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.batches import (
    after_after_ready,
    after_analysis,
    after_before_drain,
    after_drain,
    after_health,
    after_pause,
    after_ready,
    after_restore,
    after_switch,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.rollback import (
    after_cleanup_weights,
    after_rollback_drain,
    after_rollback_health,
    after_rollback_ready,
    after_rollback_switch,
    after_unstage,
    cleanup_due,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.finish import (
    after_final_versions,
    after_unlock,
)


def view(state):
    """What the play's tasks read: small on purpose, every host templates it for every task."""
    last = state['steps'][-1] if state['steps'] else {}
    verdict = last.get('judge') or {}
    return {
        'act': state['act'],
        'settings': state['settings'],
        'halted': state['halt'] is not None,
        'batches': len(state['plan']),
        'rollback_groups': len(state['rollback']['groups']),
        # A run with nothing to put back and nothing to clean up skips the rollback's tasks.
        'cleanup_due': cleanup_due(state),
        'lock_owner': state['lock_owner'],
        'lock_info': state['lock_info'],
        'lock_ttl': state.get('lock_ttl', 0),
        'plan_lines': state['plan_lines'],
        'verdict_line': '%s (score %s): %s' % (verdict['verdict'], score_text(verdict['score']), verdict['reason'])
                        if verdict else (state['halt'] or {}).get('reason', 'not judged'),
    }


# The coordinator's calls of the rollback: an error there is noted in the
# rollback's errors (the run is already on its way back).
ROLLBACK_OPS = ('rollback', 'rollback_group', 'cleanup')


def advance(state, op, call, now):
    """One coordinator call, `call(state)`, made safe: should it raise (a bug),
    the state goes back to what it was before the call and the run halts
    through coordinator_error(), instead of ending without its rollback and
    report. Only an error in `finish` (the report) is raised. Changes `state`
    in place; now: the clock (seconds)."""
    before = copy.deepcopy(state)
    try:
        call(state)
    except Exception as exc:  # pylint: disable=broad-except
        if op == 'finish':
            raise
        state.clear()
        # Bounded: the message goes into the report and every progress line.
        error = redact('%s: %s' % (type(exc).__name__, exc))
        state.update(coordinator_error(before, op, error if len(error) <= 500 else error[:497] + '...', now()))
    return state


def coordinator_error(state, op, error, now):
    """The coordinator's own failure (a bug in the engine, e.g. a batch begun
    out of order) turned into a halt, so that the rollback, the clean-up, the
    unlock and the report still run.

    `state` is the state from before the failed call (the failed call's
    half-made changes are dropped); `op` the coordinator call that failed,
    `error` its message. What the pending act may have done counts as done:
    its hosts were switched (the rollback puts them back; a host that never
    moved is only made sure to run), its lock was taken (the release is by
    owner, so another run's lock stays). Returns the state, with a plain act
    so that the play goes on.
    """
    state['messages'] = []
    reason = 'internal error in the coordinator (%s): %s (please report it with report.json)' % (op, error)
    act = state.get('act') or {}
    if op == 'record':
        if act.get('phase') in ('switch', 'rollback_switch'):
            state['switched'] += [h for h in act.get('apps', []) if h not in state['switched']]
            for host in act.get('apps', []):
                state['versions'][host] = None
        if act.get('phase') == 'lock':
            state['lock_held'] = True
    state['act'] = {}
    if op == 'rollback' and state['halt'] is not None:
        # No rollback plan: what is out of rotation and was never switched is
        # still put back (it is on its old release); switched hosts stay as they are.
        state['phase'] = 'rollback'
        idle = [h for h in state['out'] if h not in state['switched'] and h not in state['lost']]
        limit = max(1, state.get('max_unavailable') or 1)
        state['rollback'].update(hosts=idle, groups=[idle[i:i + limit] for i in range(0, len(idle), limit)])
        left = [h for h in state['out'] if h not in idle and h not in state['lost']]
        state['rollback']['errors'].append(reason + '; not rolled back: %s' % (
            ', '.join(h for h in state['app_hosts'] if h in state['switched'] and h not in state['lost']) or 'none')
            + ('; left out of rotation: %s' % ', '.join(left) if left else ''))
    elif (op in ROLLBACK_OPS or (op == 'record' and state['phase'] == 'rollback')) and state['halt'] is not None:
        out = [h for h in state['out'] if h not in state['lost']]
        state['rollback']['errors'].append(reason + ('; left out of rotation: %s' % ', '.join(out) if out else ''))
    elif op == 'finish_survey' or op in ROLLBACK_OPS or state['phase'] in ('finish', 'rollback'):
        # The finish (its last call, which writes the report, raises instead: advance()),
        # or the clean-up of a run that did not halt: the decision stands, noted.
        state['notes'].append(reason)
    else:
        batch = current_batch(state)
        if batch is not None and batch['outcome'] == 'running':
            batch_failed(state, batch, now, reason)
        else:
            halt(state, 'step %d' % state['steps'][-1]['step'] if state['phase'] == 'batches' and state['steps']
                 else state['phase'], reason)
    return state


def record(state, results, now):
    """Take the results of the current act and decide the next one."""
    phase = state['act'].get('phase')
    if not phase:
        raise EngineError('no act is pending; nothing to record')
    handler = HANDLERS.get(phase)
    if handler is None:
        raise EngineError('unknown act phase %r' % (phase,))
    state['messages'] = []
    if phase in ROLLBACK_PHASES:
        _time_rollback_phase(state, ROLLBACK_PHASES[phase], now)
    handler(state, results, now)
    return state


# A rollback group's acts and the phase each one is in the report's timeline.
ROLLBACK_PHASES = {'rollback_drain': 'drain', 'rollback_switch': 'switch', 'rollback_health': 'health',
                   'rollback_ready': 'ready'}


def _time_rollback_phase(state, phase, now):
    """The current rollback group's phase timed, as a batch's are: it began when the group's
    previous act ended (or the group began) and ended now, when its results came back."""
    records = state['rollback'].get('records') or []
    if not records or not isinstance(records[-1].get('started'), (int, float)):
        return
    record_ = records[-1]
    timings = record_.setdefault('timings', {})
    start = max([record_['started']] + [t['started'] + t['seconds'] for t in timings.values()
                                        if isinstance(t, dict) and isinstance(t.get('seconds'), (int, float))])
    if phase in timings:
        # The same act once more (not done today): its time adds up.
        timings[phase]['seconds'] = round(timings[phase]['seconds'] + max(now - start, 0.0), 3)
    else:
        timings[phase] = {'started': start, 'seconds': round(max(now - start, 0.0), 3)}


HANDLERS = {
    'lock': after_lock,
    'survey': after_survey,
    'releases': after_releases,
    'repair': after_repair,
    'before_drain': after_before_drain,
    'drain': after_drain,
    'switch': after_switch,
    'health': after_health,
    'ready': after_ready,
    'after_ready': after_after_ready,
    'analysis': after_analysis,
    'restore': after_restore,
    'pause': after_pause,
    'rollback_drain': after_rollback_drain,
    'rollback_switch': after_rollback_switch,
    'rollback_health': after_rollback_health,
    'rollback_ready': after_rollback_ready,
    'cleanup_weights': after_cleanup_weights,
    'unstage': after_unstage,
    'final_versions': after_final_versions,
    'unlock': after_unlock,
}
