# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state object and the bookkeeping every phase shares: a new state, halting,
the act (who does what next) and its timings, results collected per host
(a host that did not answer is lost), which servers are out or drained, and
the capacity guard a drain carries to the balancer.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import HOST_GONE, TASK_TIMEOUTS


def lock_ttl(settings):
    """The lock's TTL: canary_lock_ttl, or longer when a step can outlast it.

    The live run refreshes its lock at each batch once a third of the TTL has
    passed, so the TTL must cover twice the longest gap between two batches.
    """
    pause = settings['pause'] if isinstance(settings.get('pause'), (int, float)) else 0
    # The tasks' own timeouts between two refreshes (roles/rollout/tasks): a drain, a switch (one
    # that installs, without pre-staging, may take the transfer's 1800 s), a ready with its probe
    # and the next drain, an analysis window, a pause.
    switch = 1800 if settings.get('prestage') is False else (settings['settle_seconds'] or 0) + 120
    gap = (settings['drain_timeout'] or 0) + 60 + switch + 2 * (settings['health_deadline'] or 0) \
        + (settings['drain_timeout'] or 0) + 60 \
        + (settings['analysis_interval'] or 0) * (settings['analysis_count'] or 0) + pause
    return int(max(settings['lock_ttl'] or 1, 2 * gap))


def new_state(settings, errors, app_hosts, balancers, identities, probe_host, now, check_mode=False, owner='',
              lock_info=None):
    """The state of a run that has checked its inputs and nothing else."""
    state = {
        'settings': settings,
        'check_mode': bool(check_mode),
        'app_hosts': list(app_hosts),
        'balancers': list(balancers),
        'probe_host': probe_host,
        'lock_host': balancers[0] if balancers else '',
        'lock_owner': owner,
        'lock_info': dict(lock_info or {}),
        'lock_held': False,
        'lock_refreshed': None,
        'identities': dict((h, dict(identities.get(h) or {})) for h in app_hosts),
        'started': now,
        'phase': 'preflight',
        'halt': None,
        'lost': {},
        # balancer -> pid of the HAProxy process that answered it first
        'lb_pids': {},
        'notes': [],
        'done_before': [],
        'previous_version': '',
        'plan': [],
        'plan_steps': [],
        'plan_lines': [],
        'initial_weights': {},
        'canary_weights': {},
        'repaired': [],
        # host -> what an operator set on its server (left alone); the run's own leftovers (servers, repaired)
        'held': {},
        'ours': [],
        'staged': [],
        'switched': [],
        'out': [],
        # hosts known drained on every live balancer; balancer lost -> the hosts it had drained then
        'drained': [],
        'drained_on_lost': {},
        # canary_routing: hosts serving in the canary backend, and where the users are routed
        'routed': [],
        'route': None,
        'batch_index': 0,
        'steps': [],
        'rollback': {'hosts': [], 'groups': [], 'index': 0, 'done': [], 'errors': []},
        'act': {},
        'decision': None,
        'finished': None,
        'final_versions': {},
        # host -> the version it is known to run, None when a failure left it uncertain
        'versions': {},
        'messages': [],
    }
    if errors:
        halt(state, 'preflight', 'bad input, nothing was changed: ' + '; '.join(errors))
    else:
        state['lock_ttl'] = lock_ttl(settings)
        state['act'] = {'phase': 'lock', 'lock': [state['lock_host']], 'force': False}
    return state


def halt(state, phase, reason, kind='failed'):
    """Stop the forward rollout; the first reason wins, later ones are noted."""
    if state['halt'] is None:
        state['halt'] = {'phase': phase, 'reason': reason, 'kind': kind}
    else:
        state['notes'].append('%s: %s' % (phase, reason))
    state['act'] = {}


def server_of(state, host):
    return state['identities'][host].get('server') or host


def servers_of(state, hosts):
    return [server_of(state, h) for h in hosts]


def live_balancers(state):
    return [b for b in state['balancers'] if b not in state['lost']]


def say(state, text):
    state['messages'].append(text)


def _result_error(result):
    """One line saying why an actor's task failed, or '' when it did not."""
    if result is None:
        return 'gone (unreachable or left the play)'
    if result.get('unreachable'):
        return 'unreachable: %s' % (result.get('msg') or 'no answer').strip()
    if result.get('failed'):
        msg = result.get('msg') or result.get('stderr') or result.get('exception') or 'failed'
        return ' '.join(str(msg).split())
    return ''


def collect(state, role, results, phase):
    """Split the results of one actor role into ok and failed; mark the lost."""
    ok, failed = {}, {}
    for host in state['act'].get(role, []):
        result = (results.get(role) or {}).get(host)
        error = _result_error(result)
        if error:
            failed[host] = error
            if result is None or result.get('unreachable') or any(words in error for words in TASK_TIMEOUTS) \
                    or any(words in str(result.get('module_stderr') or '') for words in HOST_GONE):
                state['lost'][host] = '%s during %s' % (error, phase)
                if role == 'balancers':
                    _note_drained_on_lost(state, host)
        elif role == 'balancers' and was_restarted(state, host, result):
            failed[host] = was_restarted(state, host, result)
            state['lb_pids'][host] = result['process']['pid']
        else:
            if role == 'balancers' and (result.get('process') or {}).get('pid'):
                state['lb_pids'][host] = result['process']['pid']
            ok[host] = result
    return ok, failed


def _note_drained_on_lost(state, balancer):
    """A balancer that stops answering may still route: what is known drained
    there is what was drained on every balancer before the act it was lost in,
    less what that act may have readied (or re-weighted) there. Nothing else
    may be restarted while it is gone (a rollback checks this)."""
    act = state['act']
    touched = set(act.get('servers', [])) | set(act.get('weights') or {}) if act.get('state') != 'drain' else set()
    state['drained_on_lost'][balancer] = [h for h in state['drained'] if server_of(state, h) not in touched]


def mark_drained(state, hosts, drained=True):
    """Note hosts as drained on every live balancer (or as back in rotation on some)."""
    kept = [h for h in state['drained'] if h not in hosts]
    state['drained'] = kept + (list(hosts) if drained else [])


def was_restarted(state, host, result):
    """Why a balancer is not the process the run started with, or ''.

    On a driver whose reload loses runtime drains and weights (HAProxy,
    unless server-state-file is set up) what this run set there can no longer
    be trusted, so the batch halts and the rollback sets it again. A driver
    that keeps them in a file (nginx) loses nothing.
    """
    if not state['settings'].get('capabilities', {}).get('reload_resets_runtime', True):
        return ''
    pid = (result.get('process') or {}).get('pid')
    known = state['lb_pids'].get(host)
    if pid and known and pid != known:
        return ('HAProxy was restarted or reloaded during the rollout (pid %s -> %s): the drains and weights set '
                'before may be lost (see docs/haproxy.md, server-state-file)' % (known, pid))
    return ''


def describe_failures(what, failed):
    return '; '.join('%s on %s: %s' % (what, host, why) for host, why in sorted(failed.items()))


def capacity_guard(state):
    """What every drain carries: each balancer refuses one that would leave more than
    canary_max_unavailable app servers out of rotation there, whoever put them there."""
    # Under canary_routing a host serving in the canary backend is not out of rotation.
    hosts = [h for h in state['app_hosts'] if h not in state.get('routed', [])]
    return {'max_out': state['capacity']['max_unavailable'], 'fleet': servers_of(state, hosts)}


def lock_due(state, now):
    return state['lock_held'] and now - state['lock_refreshed'] > state['lock_ttl'] / 3.0


def set_act(rollout, phase, now, **act):
    act['phase'] = phase
    rollout['act'] = act
    state = rollout
    batch = current_batch(state)
    if batch is not None:
        batch['timings'][phase] = {'started': now}


def current_batch(state):
    if state['phase'] != 'batches' or not state['steps'] or not state['steps'][-1]['batches']:
        return None
    return state['steps'][-1]['batches'][-1]


def timed(state, phase, now):
    batch = current_batch(state)
    timing = batch['timings'].setdefault(phase, {'started': now})
    timing['seconds'] = round(now - timing['started'], 2)
    return batch


def batch_failed(state, batch, now, reason):
    batch['errors'].append(reason)
    batch['outcome'] = 'failed'
    step = state['steps'][-1]
    step['errors'].append(reason)
    halt(state, 'step %d' % step['step'], 'step %d, batch %d: %s' % (step['step'], batch['batch'], reason))
    close_batch(state, batch, now)


def close_batch(state, batch, now):
    batch['finished'] = now
    batch['seconds'] = round(now - batch['started'], 2)
    step = state['steps'][-1]
    step['finished'] = now
    step['seconds'] = round(now - step['started'], 2)
    if batch['outcome'] == 'failed':
        step['outcome'] = 'failed'


def score_text(score):
    return 'none' if score is None else '%.4g' % score
