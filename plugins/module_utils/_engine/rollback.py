# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback after a halt: the touched hosts back to the old release in groups
within the room (a host is restarted only when every balancer that may route
to it has drained it), the initial weights restored, and staged releases no
host switched to removed.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.routing import (
    after_rollback_ready as after_routed_rollback_ready,
    rollback_drain_routing,
    rollback_ready_routing,
    routing_on,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import (
    capacity_guard,
    collect,
    describe_failures,
    live_balancers,
    lock_due,
    mark_drained,
    say,
    server_of,
    servers_of,
)


def begin_rollback(state, now):
    """After the batches: decide what goes back, in groups within max_unavailable."""
    state['messages'] = []
    state['phase'] = 'rollback'
    state['act'] = {}
    halted = state['halt']
    if halted is None or halted['kind'] == 'paused' or halted['phase'] == 'preflight' or state['check_mode']:
        return state
    rollback = state['rollback']
    limit = max(1, state.get('max_unavailable') or 1)
    if state['settings']['auto_rollback']:
        hosts = [h for h in state['app_hosts'] if h in state['switched'] or h in state['done_before']
                 or h in state['out']]
    else:
        # No rollback asked for: hosts left out of rotation on the old
        # release go back in; switched hosts stay as they are for inspection.
        hosts = [h for h in state['out'] if h not in state['switched']]
        if state['switched']:
            state['notes'].append('canary_auto_rollback=false: %s left on %s' % (
                ', '.join(state['switched']), state['settings']['version']))
    hosts = [h for h in hosts if h not in state['lost']]
    lost = [h for h in state['app_hosts'] if h in state['lost'] and (h in state['switched'] or h in state['out'])]
    if lost:
        rollback['errors'].append('not rolled back, unreachable: %s' % ', '.join(lost))
    # Hosts already out of rotation go first: putting them back costs no capacity.
    out = [h for h in hosts if h in state['out']]
    groups = [out[i:i + limit] for i in range(0, len(out), limit)]
    # A lost app host serves nothing: it counts against canary_max_unavailable,
    # so fewer serving hosts may be drained at once; none when it uses it all.
    down = [h for h in state['app_hosts'] if h in state['lost']]
    size = limit - len(down)
    serving = [h for h in hosts if h not in state['out']]
    if serving and size <= 0:
        rollback['errors'].append(
            'not rolled back, to keep the fleet within canary_max_unavailable=%d while %s cannot serve: %s '
            '(still on %s and serving; run the rollback or the rollout again once the lost hosts are back)'
            % (limit, ', '.join(down), ', '.join(serving), state['settings']['version']))
        serving = []
    groups += [serving[i:i + size] for i in range(0, len(serving), max(size, 1))]
    rollback['hosts'] = out + serving
    rollback['groups'] = groups
    return state


def begin_rollback_group(state, index, now):
    state['messages'] = []
    rollback = state['rollback']
    group = rollback['groups'][index]
    rollback['index'] = index
    record_ = {'group': index + 1, 'hosts': group, 'started': now, 'errors': []}
    rollback.setdefault('records', []).append(record_)
    in_rotation = [h for h in group if h not in state['out']]
    # What cannot serve right now (lost, or left out by an earlier group whose
    # health check failed) leaves less room to drain serving hosts.
    unavailable = [h for h in state['app_hosts'] if h not in group and (h in state['lost'] or h in state['out'])]
    room = max(1, state.get('max_unavailable') or 1) - len(unavailable) - (len(group) - len(in_rotation))
    if len(in_rotation) > max(room, 0):
        kept = in_rotation[max(room, 0):]
        record_['errors'].append(
            'not rolled back, to keep the fleet within canary_max_unavailable while %s cannot serve: %s (still on %s '
            'and serving; run the rollback or the rollout again once they are back)'
            % (', '.join(unavailable), ', '.join(kept), state['settings']['version']))
        group = [h for h in group if h not in kept]
        in_rotation = [h for h in in_rotation if h not in kept]
        record_['hosts'] = group
        if not group:
            state['act'] = {}
            return state
    state['out'] = sorted(set(state['out']) | set(group))
    say(state, 'rollback %d/%d: %s -> %s' % (
        index + 1, len(rollback['groups']), ', '.join(group), state['previous_version']))
    if in_rotation:
        state['act'] = dict(capacity_guard(state), phase='rollback_drain', balancers=live_balancers(state),
                            servers=servers_of(state, in_rotation), state='drain')
        if routing_on(state):
            state['act']['routing'] = rollback_drain_routing(state)
    else:
        _rollback_switch(state)
    if state['act'].get('phase') in ('rollback_drain', 'rollback_switch') and lock_due(state, now):
        # A long rollback keeps its lock too, so that no other run takes it over meanwhile.
        state['act']['lock'] = [state['lock_host']]
    return state


def _rollback_lock(state, results, now):
    """The lock refresh that came with a rollback group's first act."""
    if 'lock' not in state['act']:
        return
    refreshed, lost_lock = collect(state, 'lock', results, 'the lock refresh')
    if lost_lock:
        # Going back matters more: the rollback goes on, and says so.
        _rollback_record(state)['errors'].append('could not refresh the rollout lock (another run may take it '
                                                 'over): %s' % describe_failures('refresh', lost_lock))
    else:
        state['lock_refreshed'] = now


def _rollback_record(state):
    return state['rollback']['records'][-1]


def _rollback_switch(state):
    record_ = _rollback_record(state)
    group = record_['hosts']
    switch = [h for h in group if h in state['switched'] or h in state['done_before']]
    # A restart drops what a balancer still sends: only hosts drained on
    # every balancer that may route to them go back. A lost balancer routes
    # on for all we know, unless it had the host drained before it was lost.
    unsafe = dict((h, _routes_to(state, h)) for h in switch if _routes_to(state, h))
    if unsafe:
        record_['errors'].append(
            'not rolled back, a balancer may still send them traffic (their restart would drop it): %s; still on %s, '
            'readied again where they were drained; run the rollback or the rollout again once every balancer '
            'answers' % ('; '.join('%s (%s)' % (h, why) for h, why in sorted(unsafe.items())),
                         state['settings']['version']))
        switch = [h for h in switch if h not in unsafe]
    if switch:
        state['act'] = {'phase': 'rollback_switch', 'apps': switch, 'version': state['previous_version']}
    else:
        _rollback_health(state, group)


def _routes_to(state, host):
    """Which balancers may still route to host (why it must not restart), or ''."""
    gone = sorted(b for b, hosts in state['drained_on_lost'].items() if host not in hosts)
    where = (['not drained on every live balancer'] if host not in state['drained'] else []) + \
        ['%s unreachable, it had not drained it' % b for b in gone]
    return ', '.join(where)


# Seconds a host that was drained but never restarted has to answer: it ran
# all along, so silence means it is gone, not starting.
NOT_RESTARTED_DEADLINE = 10


def _rollback_health(state, hosts, restarted=()):
    if not hosts:
        state['act'] = {}
        return
    deadline = state['settings']['health_deadline']
    if not restarted:
        deadline = min(deadline, NOT_RESTARTED_DEADLINE)
    state['act'] = {'phase': 'rollback_health', 'probe': [state['probe_host']], 'deadline': deadline,
                    'urls': [state['identities'][h]['health_url'] for h in hosts], 'hosts': hosts}


def after_rollback_drain(state, results, now):
    _rollback_lock(state, results, now)
    ok, failed = collect(state, 'balancers', results, 'the rollback')
    if failed:
        _rollback_record(state)['errors'].append(describe_failures('drain', failed))
    else:
        mark_drained(state, [h for h in _rollback_record(state)['hosts'] if server_of(state, h) in state['act']['servers']])
    _rollback_switch(state)


def after_rollback_switch(state, results, now):
    _rollback_lock(state, results, now)
    ok, failed = collect(state, 'apps', results, 'the rollback')
    record_ = _rollback_record(state)
    for host in ok:
        if host in state['switched']:
            state['switched'].remove(host)
        state['rollback']['done'].append(host)
        state['versions'][host] = ok[host].get('current') or state['previous_version']
    for host in failed:
        state['versions'][host] = None
    if failed:
        record_['errors'].append(describe_failures('switch back', failed))
    group = [h for h in record_['hosts'] if h not in failed]
    _rollback_health(state, group, restarted=list(ok))


def after_rollback_health(state, results, now):
    ok, failed = collect(state, 'probe', results, 'the rollback')
    record_ = _rollback_record(state)
    hosts = state['act']['hosts']
    if failed:
        record_['errors'].append(describe_failures('probing health', failed))
        healthy = []
    else:
        health = ok[state['probe_host']]
        # The probe reports URLs redacted (credentials hidden).
        good = set(redact(health.get('healthy', [])))
        healthy = [h for h in hosts if redact(state['identities'][h]['health_url']) in good]
        sick = [h for h in hosts if h not in healthy]
        if sick:
            record_['errors'].append('still unhealthy after the rollback, left out of rotation: %s' % ', '.join(sick))
    if not healthy:
        state['act'] = {}
        return
    # Only this group's weights: every server named gets readied, and other
    # groups may still be out. The clean-up restores the rest.
    servers = servers_of(state, healthy)
    state['act'] = {'phase': 'rollback_ready', 'balancers': live_balancers(state), 'servers': servers,
                    'state': 'ready', 'weights': dict((s, state['initial_weights'][s]) for s in servers),
                    'hosts': healthy}
    if routing_on(state):
        state['act']['routing'] = rollback_ready_routing(state, healthy)


def after_rollback_ready(state, results, now):
    ok, failed = collect(state, 'balancers', results, 'the rollback')
    record_ = _rollback_record(state)
    if failed:
        record_['errors'].append(describe_failures('ready', failed))
    if ok:
        mark_drained(state, state['act']['hosts'], False)
    if not failed:
        state['out'] = [h for h in state['out'] if h not in state['act']['hosts']]
        if routing_on(state):
            after_routed_rollback_ready(state, state['act']['hosts'])
    state['act'] = {}


def cleanup(state, now):
    """After the rollback: weights back, staged-but-never-switched releases removed."""
    state['messages'] = []
    if state['check_mode']:
        state['act'] = {}
        return state
    if _weights_to_restore(state):
        state['act'] = {'phase': 'cleanup_weights', 'balancers': live_balancers(state),
                        'servers': sorted(state['initial_weights']), 'weights': dict(state['initial_weights'])}
        return state
    _cleanup_staged(state)
    return state


def after_cleanup_weights(state, results, now):
    ok, failed = collect(state, 'balancers', results, 'the clean-up')
    if failed:
        state['rollback']['errors'].append(describe_failures('restoring the initial weights', failed))
    else:
        state['canary_weights'] = {}
    _cleanup_staged(state)


def _weights_to_restore(state):
    return bool(state['canary_weights'] and live_balancers(state))


def _staged_never_switched(state):
    return [h for h in state['staged'] if h not in state['switched'] and h not in state['rollback']['done']
            and h not in state['lost'] and h not in state.get('unstaged', [])]


def cleanup_due(state):
    """Will cleanup() have anything to do (weights back, staged releases removed)?"""
    return not state['check_mode'] and (_weights_to_restore(state) or bool(_staged_never_switched(state)))


def _cleanup_staged(state):
    never = _staged_never_switched(state)
    if never:
        state['act'] = {'phase': 'unstage', 'apps': never}
    else:
        state['act'] = {}


def after_unstage(state, results, now):
    ok, failed = collect(state, 'apps', results, 'the clean-up')
    state['unstaged'] = sorted(ok)
    if failed:
        state['notes'].append('could not remove the staged release: %s' % describe_failures('remove', failed))
    state['act'] = {}
