# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rollout's balancer act under user routing (docs/routing.md): which backend
it acts on and where the user routing moves around it.

Private to grayrelease.canary. Stdlib only. Under ``canary_routing`` the hosts
on the new release serve in the canary backend, the others in the stable
backend, and the maps (grayrelease.canary.haproxy_route) say which users go
where. One act of the engine is then several module calls on the balancer,
made here in the order that never sends a user to a backend with nothing to
serve them:

    route_before   the maps first (a drain that empties the stable backend
                   moves every user to the canary before it; a rollback moves
                   every user back to stable before it drains the canary)
    the act        the driver's module (ready, drain, weights) on the stable
                   backend, or on the canary backend with ``on: canary``
    retire         servers put in maintenance in the canary backend (a host
                   rolled back serves in the stable backend again)
    route_after    the maps after a ready (the share of users follows the
                   hosts on the canary backend)
    normalize      the end of a promoted run: every server ready in the stable
                   backend, every user there, the canary backend emptied
    then_drain     the next batch drained in the stable backend (the hand-over)

``execute(module, args)`` runs one module on the balancer and returns its
result (``failed`` set when it failed). The result is the act's own, with
``routing``: what each call did, and on a failure ``msg`` naming the call.
"""

from __future__ import annotations

import time

from ansible_collections.grayrelease.canary.plugins.module_utils._routing import canary_backend_of as canary_backend

ROUTE_MODULE = 'grayrelease.canary.haproxy_route'
# The canary backend is the collection's own (rendered by routing_config), not an
# operator's: its servers carry no claims and no capacity check of their own.
_STABLE_ONLY = ('max_unavailable', 'fleet', 'claims', 'owner')


class _CallFailed(Exception):
    def __init__(self, what, result):
        super(_CallFailed, self).__init__(what)
        self.what = what
        self.result = result


def route_args(spec, route, socket=None):
    """haproxy_route's arguments for a route ({state, step, percent})."""
    args = {'routing': spec, 'state': route['state']}
    for key in ('step', 'percent'):
        if route.get(key) is not None:
            args[key] = route[key]
    if socket:
        args['socket'] = socket
    return args


def _args(base, leave_out=(), **extra):
    """A module call's arguments: ``base`` without ``leave_out``, with ``extra``; None means unset."""
    merged = dict((k, v) for k, v in base.items() if k not in leave_out)
    merged.update(extra)
    return dict((k, v) for k, v in merged.items() if v is not None)


def _on_canary(args, spec, **extra):
    return _args(args, _STABLE_ONLY, backend=canary_backend(spec), **extra)


def routed_act(execute, module, args, routing, socket=None, clock=time.monotonic):
    """Run one balancer act under user routing; returns the task's result."""
    spec = routing['spec']
    calls = []

    def call(what, name, call_args):
        result = execute(name, call_args)
        calls.append({'call': what, 'changed': bool(result.get('changed')), 'failed': bool(result.get('failed'))})
        if result.get('failed'):
            raise _CallFailed(what, result)
        return result

    def route(what, wanted):
        return call(what, ROUTE_MODULE, route_args(spec, wanted, socket))

    then_drain = args.get('then_drain')
    act = _on_canary(args, spec, then_drain=None) if routing.get('on') == 'canary' else _args(args, ('then_drain',))
    try:
        if routing.get('route_before'):
            before = 'routing the users (%s) before the %s' % (_route_text(routing['route_before']),
                                                               act.get('state') or 'weights')
            route(before, routing['route_before'])
        result = dict(call('%s on backend %s' % (act.get('state') or 'weights', act['backend']), module, act))
        if routing.get('retire'):
            call('maint in backend %s' % canary_backend(spec), module,
                 _on_canary(args, spec, servers=routing['retire'], state='maint', weights=None, weight=None,
                            probe=None, then_drain=None))
        if routing.get('route_after'):
            result['route'] = route('routing the users (%s)' % _route_text(routing['route_after']),
                                    routing['route_after'])
        if routing.get('normalize'):
            _normalize(call, route, module, args, spec, routing['normalize'])
            result['route'] = {'state': 'stable'}
    except _CallFailed as failed:
        partial = dict(failed.result)
        partial['failed'] = True
        partial['changed'] = any(c['changed'] for c in calls)
        partial['msg'] = '%s: %s' % (failed.what, failed.result.get('msg') or 'failed')
        partial['routing'] = calls
        return partial
    result['changed'] = any(c['changed'] for c in calls)
    if then_drain:
        start = clock()
        drained = execute(module, _args(args, servers=then_drain, state='drain', weights=None, weight=None, probe=None,
                                        then_drain=None))
        calls.append({'call': 'drain on backend %s' % args['backend'], 'changed': bool(drained.get('changed')),
                      'failed': bool(drained.get('failed'))})
        part = dict(drained, seconds=round(clock() - start, 3))
        result['then_drain'] = part
        result['changed'] = result['changed'] or bool(drained.get('changed'))
        if drained.get('failed'):
            result['failed'] = True
            result['msg'] = 'readied %s; then draining %s failed: %s' % (
                ', '.join(args.get('servers') or []), ', '.join(then_drain), drained.get('msg') or 'failed')
    result['routing'] = calls
    return result


def _normalize(call, route, module, args, spec, normalize):
    """Every server of a promoted run ready in the stable backend, then every user
    there in one commit, then the canary backend emptied (its requests in flight end)."""
    servers = normalize['servers']
    call('ready on backend %s' % args['backend'], module,
         _args(args, ('then_drain', 'probe', 'max_unavailable', 'fleet'), servers=servers, state='ready',
               weights=normalize.get('weights') or None))
    route('every user on the stable backend', {'state': 'stable'})
    call('maint in backend %s' % canary_backend(spec), module,
         _on_canary(args, spec, servers=servers, state='maint', weights=None, probe=None, then_drain=None))


def _route_text(route):
    if route['state'] != 'step':
        return 'everyone on %s' % route['state']
    return 'step %s, %s%% of the users' % (route.get('step'), route.get('percent'))


def prepare(execute, module, spec, servers, socket=None):
    """Pre-flight under user routing: HAProxy has the maps and both backends
    (haproxy_route refuses naming what is missing), every user is on the stable
    backend and the canary backend serves nothing. Returns (ok, what happened)."""
    calls = []
    for what, name, call_args in (
            ('the user routing on stable', ROUTE_MODULE, route_args(spec, {'state': 'stable'}, socket)),
            ('maint in backend %s' % canary_backend(spec), module,
             dict({'backend': canary_backend(spec), 'servers': servers, 'state': 'maint', 'wait': False},
                  **({'socket': socket} if socket else {})))):
        result = execute(name, call_args)
        calls.append({'call': what, 'changed': bool(result.get('changed')), 'failed': bool(result.get('failed'))})
        if result.get('failed'):
            return False, {'msg': '%s: %s' % (what, result.get('msg') or 'failed'), 'calls': calls}
    return True, {'calls': calls}
