# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The batches: drain -> switch -> health -> ready for each batch (with the
user's before-drain and after-ready hooks around them when set), the canary's
weights, the hand-over (the act that ends a batch drains the next), and what
a failed act means (the batch fails, the run halts and rolls back).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._weights import WeightsError, canary_weights

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import EngineError
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import (
    batch_failed,
    capacity_guard,
    close_batch,
    collect,
    current_batch,
    describe_failures,
    halt,
    live_balancers,
    lock_due,
    mark_drained,
    say,
    servers_of,
    set_act,
    timed,
    was_restarted,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.steps import canary_hosts, is_judged, position, sides
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.routing import (
    after_routed_ready,
    drain_routing,
    ready_routing,
    routing_on,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.analysis import (
    analysis_act,
    counters_from,
    judge_step,
)


def begin_batch(state, index, now):
    """Start plan batch `index`: drain its servers on every live balancer."""
    state['messages'] = []
    if state['halt'] is not None or state['phase'] != 'batches':
        state['act'] = {}
        return state
    if index != state['batch_index']:
        raise EngineError('batch %d started out of order (expected %d)' % (index + 1, state['batch_index'] + 1))
    current = current_batch(state)
    if current is not None and current['batch'] == index + 1:
        # Begun already: the last batch's ready handed over and drained it.
        return state
    if not _open_batch(state, index, now):
        return state
    hosts = state['plan'][index]
    if state['check_mode']:
        _end_batch(state, now)
        return state
    if has_hook(state, 'before_drain'):
        # The hosts still serve while the user's hook runs; nothing is drained yet.
        set_act(state, 'before_drain', now, apps=list(hosts))
        return state
    _drain_act(state, hosts, now)
    return state


def has_hook(state, phase):
    """Whether the user set the hook of batch phase ``phase`` (before_drain, after_ready)."""
    return phase in (state['settings'].get('hooks') or [])


def _drain_act(state, hosts, now):
    state['out'] = sorted(set(state['out']) | set(hosts))
    act = dict(capacity_guard(state), balancers=live_balancers(state), servers=servers_of(state, hosts), state='drain')
    if routing_on(state):
        act['routing'] = drain_routing(state, hosts)
    if lock_due(state, now):
        # The live run keeps its short-lived lock fresh, alongside the drain.
        act['lock'] = [state['lock_host']]
    set_act(state, 'drain', now, **act)


def after_before_drain(state, results, now):
    """The before-drain hook ran on the batch's hosts: drain them, unless it failed on one
    (then nothing of this batch was touched, and the run halts)."""
    batch, ok = _phase_results(state, 'before_drain', 'apps', results, now, 'before-drain hook')
    if ok is not None:
        _drain_act(state, batch['hosts'], now)


def _open_batch(state, index, now):
    """The step (when batch `index` opens one) and batch records; False when it cannot start."""
    step_index, in_step = position(state, index)
    hosts = state['plan'][index]
    if in_step == 0:
        state['steps'].append({
            'step': step_index + 1, 'hosts': [h for b in state['plan_steps'][step_index] for h in b],
            # canary: the first step, at canary_traffic_percent; judged: an analysis ends the step.
            'canary': step_index == 0 and is_judged(state, 0), 'judged': is_judged(state, step_index),
            'started': now, 'finished': None,
            'seconds': None, 'outcome': 'running', 'batches': [], 'judge': {}, 'weights': {}, 'errors': [],
        })
        if state['steps'][-1]['canary'] and not routing_on(state):
            # Under canary_routing the share is the users', set by the maps, not by weights.
            try:
                state['canary_weights'] = canary_weights(state['initial_weights'], servers_of(state, canary_hosts(state)),
                                                         float(state['settings']['traffic_percent']))
            except WeightsError as exc:
                halt(state, 'step %d' % (step_index + 1), str(exc))
                state['act'] = {}
                return False
            state['steps'][-1]['weights'] = state['canary_weights']
    step = state['steps'][-1]
    step['batches'].append({
        'batch': index + 1, 'hosts': list(hosts), 'servers': servers_of(state, hosts), 'started': now,
        'finished': None, 'seconds': None, 'outcome': 'running', 'errors': [], 'timings': {},
        'drain': {}, 'release': {}, 'health': {}, 'ready': {},
    })
    say(state, 'step %d/%d, batch %d/%d: %s -> %s' % (
        step_index + 1, len(state['plan_steps']), index + 1, len(state['plan']), ', '.join(hosts),
        state['settings']['version']))
    return True


def _balancer_view(ok):
    return dict((b, {'changed': r.get('changed', False), 'servers': r.get('servers', {}),
                     'drain': r.get('drain'), 'health': r.get('health')}) for b, r in ok.items())


def after_drain(state, results, now):
    batch = timed(state, 'drain', now)
    ok, failed = collect(state, 'balancers', results, 'the drain')
    batch['drain'] = _balancer_view(ok)
    if 'lock' in state['act']:
        refreshed, lost_lock = collect(state, 'lock', results, 'the lock refresh')
        if lost_lock:
            # Another run may hold it now: this one must not go on.
            batch_failed(state, batch, now, 'lost the rollout lock: %s' % describe_failures('refresh', lost_lock))
            return
        state['lock_refreshed'] = now
    if failed:
        batch_failed(state, batch, now, describe_failures('drain', failed))
        return
    mark_drained(state, batch['hosts'])
    _switch_act(state, batch, now)


def _switch_act(state, batch, now):
    # Only a host without the release needs the artifact (and the long timeout of a transfer).
    set_act(state, 'switch', now, apps=list(batch['hosts']),
            install=[h for h in batch['hosts'] if h in state.get('lacking', [])],
            ready_urls=dict((h, _local_url(state['identities'][h]['health_url'])) for h in batch['hosts']))


def _local_url(url):
    """The health URL as the host itself reaches it (loopback, same port and path)."""
    parts = urlsplit(url)
    port = ':%d' % parts.port if parts.port else ''
    return urlunsplit((parts.scheme, '127.0.0.1' + port, parts.path, parts.query, ''))


def after_switch(state, results, now):
    batch = timed(state, 'switch', now)
    ok, failed = collect(state, 'apps', results, 'the switch')
    # Whatever the outcome, current may have moved (a service that did not
    # stay up was switched first): every host of the batch counts as
    # switched. The rollback names the old version explicitly, so a host
    # that never moved is only made sure to run.
    state['switched'] += [h for h in batch['hosts'] if h not in state['switched']]
    for host in batch['hosts']:
        state['versions'][host] = (ok[host].get('current') or state['settings']['version']) if host in ok else None
    batch['release'] = dict((h, {'switched': r.get('switched'), 'from': r.get('switched_from'),
                                 'service': r.get('service', {})}) for h, r in ok.items())
    if failed:
        batch_failed(state, batch, now, describe_failures('release', failed))
        return
    urls = [state['identities'][h]['health_url'] for h in batch['hosts']]
    if state['probe_host'] in live_balancers(state):
        # The probe host is a balancer: every balancer probes the batch
        # itself, in the call that readies it (and readies only what it saw
        # healthy): a task and a note less per batch.
        _ready_act(state, batch, now, probe=dict(PROBE, urls=urls, deadline=state['settings']['health_deadline']))
        return
    set_act(state, 'health', now, probe=[state['probe_host']], urls=urls, **PROBE)


# The fresh health check of a switched batch: rise 2, a round every 0.25 s.
PROBE = {'rise': 2, 'interval': 0.25}


def _phase_results(state, phase, role, results, now, what):
    """Time a batch phase and take its actors' results; ok is None when one failed (the batch halts)."""
    batch = timed(state, phase, now)
    ok, failed = collect(state, role, results, 'the %s' % phase)
    if failed:
        batch_failed(state, batch, now, describe_failures(what, failed))
        return batch, None
    return batch, ok


def after_health(state, results, now):
    batch, ok = _phase_results(state, 'health', 'probe', results, now, 'probing health')
    if ok is None:
        return
    health = ok[state['probe_host']]
    batch['health'] = {'healthy': health.get('healthy', []), 'unhealthy': health.get('unhealthy', []),
                       'results': health.get('results', {})}
    if health.get('unhealthy'):
        batch_failed(state, batch, now, health.get('msg') or 'unhealthy: %s' % ', '.join(health['unhealthy']))
        return
    _ready_act(state, batch, now)


def _ready_act(state, batch, now, probe=None):
    """Ready the batch on every live balancer (after the probe, when it comes with it)."""
    step = state['steps'][-1]
    act = {'balancers': live_balancers(state), 'servers': list(batch['servers']), 'state': 'ready'}
    if step['canary'] and not routing_on(state):
        # Weights first (the module orders it), so the canary never takes
        # more than its share, not even for a moment.
        act['weights'] = state['canary_weights']
    else:
        act['weights'] = dict((s, state['initial_weights'][s]) for s in batch['servers'])
    act = _with_hand_over(state, now, act)
    if probe:
        act['ready_probe'] = probe
    if routing_on(state):
        step_index, _in_step = position(state, state['batch_index'])
        act['routing'] = ready_routing(state, batch['hosts'], step_index, act.get('next_hosts') or [],
                                       last=state['batch_index'] == len(state['plan']) - 1)
        if 'fleet' in act:
            # By the time the next batch is drained this one serves in the canary backend: not out.
            act['fleet'] = [s for s in act['fleet'] if s not in batch['servers']]
    set_act(state, 'ready', now, **act)


def _with_hand_over(state, now, act, judged=False):
    """The balancer act that ends a batch (its ready, or the canary's weights
    restore once judged), draining the next batch in the same call when
    nothing comes between the two."""
    following = _hand_over_to(state, now, judged)
    if following:
        act.update(capacity_guard(state))
        act['then_drain'] = servers_of(state, following)
        act['next_hosts'] = following
        # Out from here on: should the run halt, the rollback puts it back.
        state['out'] = sorted(set(state['out']) | set(following))
    return act


def _hand_over_to(state, now, judged=False):
    """The hosts of the next batch when the act that ends this batch can drain them
    in the same call: nothing (analysis, pause, lock refresh) comes between the two."""
    index = state['batch_index']
    if state['check_mode'] or index + 1 >= len(state['plan']) or lock_due(state, now):
        return []
    if has_hook(state, 'before_drain') or has_hook(state, 'after_ready'):
        # A hook comes between the two: the next batch's own before-drain
        # hook, or this batch's after-ready one (which must run before
        # anything else is taken out).
        return []
    step_index, in_step = position(state, index)
    # The step ends here: the analysis (unless judged already) or a pause
    # (as _end_batch reads canary_pause) comes next.
    if in_step == len(state['plan_steps'][step_index]) - 1 and (
            (state['steps'][-1]['judged'] and not judged) or state['settings']['pause']):
        return []
    return list(state['plan'][index + 1])


def _next_batch_drain_failures(state, raw, ok, failed, following):
    """Where the act went through but the next batch's drain did not, that batch
    fails, not this one: such balancers move from failed to ok. Returns them."""
    drain_failed = {}
    for host in list(failed) if following else []:
        result = raw.get(host) or {}
        if (result.get('then_drain') or {}).get('failed') and not was_restarted(state, host, result):
            drain_failed[host] = failed.pop(host)
            ok[host] = result
    return drain_failed


def _then_drain_seconds(ok):
    """How long the drain of the next batch took at the end of the call (the slowest balancer)."""
    return max([float((r.get('then_drain') or {}).get('seconds') or 0) for r in ok.values()] or [0.0])


def _next_batch_untouched(state, raw, following):
    """No balancer got as far as draining the next batch: it never left rotation."""
    if following and not any('then_drain' in (r or {}) for r in raw.values()):
        state['out'] = [h for h in state['out'] if h not in following]


def _batch_closing_results(state, phase, results, now):
    """The balancers' results of the act that ends a batch (its ready, or the
    canary's weights restore), which may have drained the next batch too:
    (batch, raw, ok, failed, drain_failed, end)."""
    following = state['act'].get('next_hosts') or []
    raw = results.get('balancers') or {}
    ok, failed = collect(state, 'balancers', results, 'the %s' % phase)
    drain_failed = _next_batch_drain_failures(state, raw, ok, failed, following)
    # The next batch's drain at the end of the call is that batch's time, not this one's.
    end = now - _then_drain_seconds(ok) if following and not failed else now
    return timed(state, phase, end), raw, ok, failed, drain_failed, end


def after_ready(state, results, now):
    following = state['act'].get('next_hosts') or []
    batch, raw, ok, failed, drain_failed, end = _batch_closing_results(state, 'ready', results, now)
    unhealthy, refused = _probed_health(state, batch, raw, failed) if 'ready_probe' in state['act'] else ('', [])
    batch['ready'] = _balancer_view(ok)
    if ok or set(failed) - set(refused):
        # Readied on some balancers at least: the rollback drains it before it goes back.
        state['out'] = [h for h in state['out'] if h not in batch['hosts']]
        mark_drained(state, batch['hosts'], False)
        if 'routing' in state['act']:
            # A failed call may have readied them in the canary backend: the rollback drains them there.
            after_routed_ready(state, batch['hosts'], {} if failed else state['act']['routing'])
            batch['route'] = state['route']
    if failed:
        _next_batch_untouched(state, raw, following)
        batch_failed(state, batch, now, unhealthy or describe_failures('ready', failed))
        return
    if has_hook(state, 'after_ready'):
        judged_step = _judged_step_ending(state)
        if judged_step is not None:
            # The ready's read-back (the analysis's starting snapshot) is kept for after the hook.
            canary, baseline = sides(state, judged_step)
            _keep_analysis_start(state, ok, canary + baseline)
        set_act(state, 'after_ready', now, apps=list(batch['hosts']))
        return
    _after_batch_ready(state, ok, end, following, drain_failed, now)


def after_after_ready(state, results, now):
    """The after-ready hook ran on the batch's hosts (serving the new version):
    on to the analysis or the next batch, unless it failed on one."""
    batch, ok = _phase_results(state, 'after_ready', 'apps', results, now, 'after-ready hook')
    if ok is not None:
        _after_batch_ready(state, None, now, [], {}, now)


def _judged_step_ending(state):
    """The index of the step this batch ends when that step is judged, else None."""
    step_index, in_step = position(state, state['batch_index'])
    if state['steps'][-1]['judged'] and in_step == len(state['plan_steps'][step_index]) - 1:
        return step_index
    return None


def _keep_analysis_start(state, ok, hosts):
    """The ready's read-back of ``hosts``' traffic counters as the analysis's starting snapshot."""
    state.pop('analysis_start', None)
    start = counters_from(state, ok, hosts)
    if start is not None:
        state['analysis_start'] = start


def _after_batch_ready(state, ok, end, following, drain_failed, now):
    """The batch is ready on every balancer: the step's analysis when it ends a
    judged step, else the batch ends (and the next one, when this ready drained
    it, goes on to its switch). ok: the ready's results, or None when the
    analysis's starting snapshot was kept already (after the after-ready hook)."""
    step_index = _judged_step_ending(state)
    if step_index is not None:
        settings = state['settings']
        analysis = analysis_act(state, step_index)
        if ok is not None:
            # The ready's read-back, with every server's traffic counters, is the
            # analysis's starting snapshot: taken with the canary live at its share.
            _keep_analysis_start(state, ok, analysis['canary'] + analysis['baseline'])
        set_act(state, 'analysis', now, balancers=live_balancers(state), probe=[state['probe_host']],
                count=settings['analysis_count'], interval=settings['analysis_interval'],
                urls=[state['identities'][h]['sample_url'] for h in analysis['canary'] + analysis['baseline']],
                counters_at_start='analysis_start' in state, **analysis)
        if routing_on(state):
            # The canary's counters are in the canary backend: every read takes it too.
            state['act']['routing'] = {'read_canary': True}
        return
    _end_batch(state, end)
    if following:
        _take_over(state, following, ok, drain_failed, now, 'ready')


def _probed_health(state, batch, raw, failed):
    """The health check that came with the ready: the batch's health record
    (as the probe host saw it); why it failed ('' if it did not) and the
    balancers that refused to ready the batch for it.

    A balancer that found a server unhealthy readied nothing; its failure is
    the batch's health failure, named as such. Other failures are described
    as failed readies.
    """
    probes = dict((b, r['probe']) for b, r in raw.items() if isinstance((r or {}).get('probe'), dict))
    seen = probes.get(state['probe_host']) or (probes[sorted(probes)[0]] if probes else {})
    unhealthy = sorted(set(url for p in probes.values() for url in p.get('unhealthy', [])))
    batch['health'] = {'healthy': [u for u in seen.get('healthy', []) if u not in unhealthy],
                       'unhealthy': unhealthy, 'results': seen.get('results', {}),
                       'probed_from': sorted(probes)}
    if seen.get('elapsed') is not None:
        # The call's seconds, split: the probe first, then the ready.
        ready = batch['timings']['ready']
        probed = min(float(seen['elapsed']), ready['seconds'])
        batch['timings']['health'] = {'started': ready['started'], 'seconds': round(probed, 2)}
        ready['started'] += probed
        ready['seconds'] = round(ready['seconds'] - probed, 2)
    refused = [b for b in sorted(failed) if b in probes and probes[b].get('unhealthy')]
    if not refused:
        return '', []
    # Balancers that saw the same are named together, in one reason.
    seen_as = {}
    for balancer in refused:
        msg = probes[balancer].get('msg') or 'unhealthy: %s' % ', '.join(probes[balancer]['unhealthy'])
        seen_as.setdefault(msg, []).append(balancer)
    reasons = ['%s (probed from %s)' % (msg, ', '.join(names)) for msg, names in sorted(seen_as.items())]
    others = dict((b, why) for b, why in failed.items() if b not in refused)
    return '; '.join(reasons + ([describe_failures('ready', others)] if others else [])), refused


def _take_over(state, hosts, ok, drain_failed, now, by):
    """The next batch begins with its drain done, by the act (``by``: its ready,
    or the canary's weights restore) that ended the last one."""
    index = state['batch_index']
    if state['plan'][index] != hosts:
        raise EngineError('handed over to %s, but batch %d is %s' % (hosts, index + 1, state['plan'][index]))
    seconds = _then_drain_seconds(ok)
    if not _open_batch(state, index, now - seconds):
        return
    batch = current_batch(state)
    batch['timings']['drain'] = {'started': now - seconds, 'seconds': round(seconds, 2)}
    batch['drain'] = _balancer_view(dict((b, r.get('then_drain') or {}) for b, r in ok.items()))
    batch['handed_over'] = True
    batch['drained_with'] = by
    if drain_failed:
        batch_failed(state, batch, now, describe_failures('drain', drain_failed))
        return
    mark_drained(state, hosts)
    _switch_act(state, batch, now)


def after_analysis(state, results, now):
    batch = timed(state, 'analysis', now)
    step = state['steps'][-1]
    why = judge_step(state, step, batch, results, now)
    if why:
        batch_failed(state, batch, now, why)
        return
    if not step['canary'] or routing_on(state):
        # A later step is at full weight already (under canary_routing, every step): it ends here.
        _end_batch(state, now)
        return
    # Judged: the weights go back, and the same call can drain the next batch.
    act = _with_hand_over(state, now, {'balancers': live_balancers(state), 'servers': sorted(state['initial_weights']),
                                       'weights': dict(state['initial_weights'])}, judged=True)
    set_act(state, 'restore', now, **act)


def after_restore(state, results, now):
    following = state['act'].get('next_hosts') or []
    batch, raw, ok, failed, drain_failed, end = _batch_closing_results(state, 'restore', results, now)
    if failed:
        _next_batch_untouched(state, raw, following)
        batch_failed(state, batch, now, describe_failures('restoring the initial weights', failed))
        return
    state['canary_weights'] = {}
    _end_batch(state, end)
    if following:
        _take_over(state, following, ok, drain_failed, now, 'restore')


def _end_batch(state, now):
    batch = current_batch(state)
    batch['outcome'] = 'ok'
    close_batch(state, batch, now)
    step_index, in_step = position(state, state['batch_index'])
    state['batch_index'] += 1
    state['act'] = {}
    step = state['steps'][-1]
    if in_step == len(state['plan_steps'][step_index]) - 1:
        step['outcome'] = 'ok' if step['outcome'] == 'running' else step['outcome']
        more = step_index + 1 < len(state['plan_steps'])
        pause = state['settings']['pause']
        if more and pause == 'manual' and not state['check_mode']:
            halt(state, 'paused', 'paused after step %d of %d (canary_pause=manual); run the same command again '
                 'to continue' % (step_index + 1, len(state['plan_steps'])), kind='paused')
        elif more and pause and not state['check_mode']:
            state['act'] = {'phase': 'pause', 'seconds': pause}


def after_pause(state, results, now):
    state['act'] = {}
