# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gray release by user (canary_routing, docs/routing.md): where each act works
and where the users go around it.

The hosts on the new release serve in the canary backend, the others in the
stable backend, and HAProxy's maps send each user to one of them. Step N moves
the hosts of canary_steps[N] to the canary backend, batch by batch, and the
share of users follows the hosts (never more than the step's share, never
more than the share of hosts already there), so neither backend carries more
users than its hosts. The drain that would leave the stable backend with no
host sends every user to the canary backend first; the end of a promoted run
puts every host back in the stable backend and every user with them; a
rollback sends every user to the stable backend before anything else.

What this module decides goes into the acts as ``routing`` (see
plugins/module_utils/_routed.py for how a balancer carries it out).
"""

from __future__ import annotations

import math

from ansible_collections.grayrelease.canary.plugins.module_utils._routing import canary_backend_of, parse_spec

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import server_of, servers_of


def routing_on(state):
    return bool(state['settings'].get('routing'))


def _shares(state):
    """Each step's share of users (parsed once, at pre-flight)."""
    if 'route_shares' not in state:
        state['route_shares'] = [s['percent'] for s in parse_spec(state['settings']['routing'])['steps']]
    return state['route_shares']


def _fleet(state):
    return [h for h in state['app_hosts'] if h not in state['held']]


def host_share(state, hosts):
    """The share of the fleet (operators' hosts aside) ``hosts`` are, in percent, 2 decimals, rounded down."""
    return math.floor(10000.0 * len(hosts) / max(len(_fleet(state)), 1)) / 100.0


def check_plan(state):
    """Pre-flight: why this plan cannot run under the routing ('' when it can)."""
    shares = _shares(state)
    if state['done_before']:
        # Refused once the pre-flight's repair has readied them (resume_refused).
        return ''
    if len(state['plan_steps']) != len(shares):
        return ('canary_steps %s gives %d steps of hosts on this fleet of %d, canary_routing.steps has %d: each '
                'step moves hosts, give steps that each add at least one host'
                % (state['settings']['steps'], len(state['plan_steps']), len(_fleet(state)), len(shares)))
    moved = []
    for index, (hosts, share) in enumerate(zip(state['plan_steps'], shares)):
        moved += [h for batch in hosts for h in batch]
        if share > host_share(state, moved):
            return ('canary_routing.steps[%d] sends %s%% of the users to the canary backend, where step %d has %d of '
                    '%d hosts (%s%%): the canary backend would carry more users than its hosts; raise canary_steps[%d] '
                    'or lower the share' % (index, share, index + 1, len(moved), len(_fleet(state)),
                                            host_share(state, moved), index))
    return ''


def resume_refused(state):
    """After the pre-flight's repair: why a run that finds hosts on its version cannot go on ('' when it can)."""
    if not state['done_before']:
        return ''
    return ('%s already run %s (an interrupted run?): resuming under canary_routing is not supported yet; every '
            'user is on the stable backend and those hosts serve there again; put them back with '
            'grayrelease.canary.rollback, then roll again' % (', '.join(state['done_before']),
                                                              state['settings']['version']))


def survey_routing(state):
    """The pre-flight's read of every balancer also makes it ready for the run."""
    return {'prepare': servers_of(state, state['app_hosts'])}


def _stable_left(state, leaving):
    """The hosts still serving in the stable backend once ``leaving`` is drained from it."""
    return [h for h in _fleet(state) if h not in state['routed'] and h not in state['out'] and h not in leaving
            and h not in state['lost']]


def drain_routing(state, hosts):
    """A batch's drain in the stable backend: when it leaves nothing there, every user goes to the canary first."""
    routing = {'on': 'stable'}
    if not _stable_left(state, hosts):
        routing['route_before'] = {'state': 'canary'}
    return routing


def ready_routing(state, hosts, step_index, following, last):
    """A batch's ready in the canary backend, then the users that follow it; at the end of
    the plan, every host and user back in the stable backend."""
    routing = {'on': 'canary'}
    routed = state['routed'] + [h for h in hosts if h not in state['routed']]
    if last:
        servers = servers_of(state, [h for h in _fleet(state) if h in routed])
        routing['normalize'] = {'servers': servers,
                                'weights': dict((s, state['initial_weights'][s]) for s in servers
                                                if s in state['initial_weights'])}
        return routing
    if following and not [h for h in _stable_left(state, following) if h not in hosts]:
        routing['route_after'] = {'state': 'canary'}
        return routing
    routing['route_after'] = {'state': 'step', 'step': step_index + 1,
                              'percent': min(_shares(state)[step_index], host_share(state, routed))}
    return routing


def after_routed_ready(state, hosts, routing):
    """The ready went through: the hosts serve in the canary backend (or, at the end, all in the stable one)."""
    if routing.get('normalize'):
        state['routed'] = []
        state['route'] = {'state': 'stable'}
        return
    state['routed'] += [h for h in hosts if h not in state['routed']]
    state['route'] = routing.get('route_after') or state.get('route')


def rollback_drain_routing(state):
    """A rollback group's drain: every user on the stable backend first, then the hosts drained in the canary one."""
    return {'on': 'canary', 'route_before': {'state': 'stable'}}


def rollback_ready_routing(state, hosts):
    """A rolled-back group ready in the stable backend, out of the canary one."""
    return {'on': 'stable', 'route_before': {'state': 'stable'},
            'retire': servers_of(state, [h for h in hosts if h in state['routed']])}


def after_rollback_ready(state, hosts):
    state['routed'] = [h for h in state['routed'] if h not in hosts]
    state['route'] = {'state': 'stable'}


def routed_counters(state, snapshots):
    """Each balancer's read with the canary backend's rows standing in for the hosts
    serving there: the judge reads one backend, the canary's counters are in the other."""
    backend = state['settings']['backend']
    canary = canary_backend_of(state['settings']['routing'])
    merged = {}
    for balancer, snapshot in snapshots.items():
        backends = dict(snapshot.get('backends') or {})
        rows = dict(backends.get(backend) or {})
        for host in state['routed']:
            server = server_of(state, host)
            row = (backends.get(canary) or {}).get(server)
            if row is not None:
                rows[server] = row
        backends[backend] = rows
        merged[balancer] = dict(snapshot, backends=backends)
    return merged


# The requests that make the canary's sample and the baseline's: users picked by their
# bucket (or, keyless, by share), on either side. Opt-in groups (staff, testers) are a
# biased sample and opt-out users are chosen: both are reported, not judged.
CANARY_SAMPLE = ('canary/bucket', 'canary/share')
BASELINE_SAMPLE = ('stable/bucket', 'stable/share')


def log_backend(state):
    """The second backend the request log is read for: the canary backend."""
    return canary_backend_of(state['settings']['routing'])


def _side(logs, servers, routes):
    side = {'requests': 0, 'errors_5xx': 0, 'response_ms': []}
    for server in servers:
        for route, part in ((logs.get(server) or {}).get('routes') or {}).items():
            if route in routes:
                side['requests'] += part['requests']
                side['errors_5xx'] += part['errors_5xx']
                side['response_ms'].extend(part['response_ms'])
    return side


def by_route(logs, canary_servers, baseline_servers):
    """Requests and 5xx per route over the analysis window, every judged server together."""
    totals = {}
    for server in list(canary_servers) + list(baseline_servers):
        for route, part in ((logs.get(server) or {}).get('routes') or {}).items():
            into = totals.setdefault(route, {'requests': 0, 'errors_5xx': 0})
            into['requests'] += part['requests']
            into['errors_5xx'] += part['errors_5xx']
    return totals


def judged_by_bucket(metrics, logs, canary_servers, baseline_servers):
    """The request-level metrics from the bucket-routed requests only (the request log's
    routes), when the log carries them; the metrics unchanged otherwise."""
    canary = _side(logs, canary_servers, CANARY_SAMPLE)
    baseline = _side(logs, baseline_servers, BASELINE_SAMPLE)
    if not canary['requests'] and not baseline['requests']:
        return metrics
    out = []
    for metric in metrics:
        if metric['name'] == 'http_5xx_ratio':
            metric = dict(metric, source='haproxy_log, routed by bucket',
                          canary={'total': canary['requests'], 'errors': canary['errors_5xx']},
                          baseline={'total': baseline['requests'], 'errors': baseline['errors_5xx']})
        elif metric['name'] == 'traffic_latency_ms':
            metric = dict(metric, source='haproxy_log, routed by bucket', canary=canary['response_ms'],
                          baseline=baseline['response_ms'])
        out.append(metric)
    return out
