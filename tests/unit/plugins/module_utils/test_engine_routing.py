# -*- coding: utf-8 -*-
"""Gray release by user (canary_routing) through the engine and the balancer
act's module calls (_routed), on a simulated fleet whose balancers hold a
stable backend, a canary backend and the user routing's maps.

After every module call the fleet checks what a user would meet: a route to a
backend with no server ready there is a request that fails.
"""
from __future__ import annotations

import os
import sys

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import routing as engine_routing
from ansible_collections.grayrelease.canary.plugins.module_utils._routed import ROUTE_MODULE, prepare, routed_act

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engine import APPS, FakeFleet, run, settings  # noqa: E402  pylint: disable=wrong-import-position

ROUTING = {'key': {'cookie': 'uid'},
           'opt_in': [{'name': 'staff', 'header': {'X-Canary': '1'}}],
           'opt_out': [{'name': 'vip', 'users': ['carol']}],
           'steps': [{'group': 'staff'}, {'users': '10%'}, {'users': '50%'}, '100%']}
SERVER_MODULE = 'grayrelease.canary.haproxy_server'


class RoutedFleet(FakeFleet):
    """Both backends and the route, as the balancers hold them; a balancer act with
    ``routing`` is carried out by _routed's module calls against this model."""

    def __init__(self, **kwargs):
        super(RoutedFleet, self).__init__(**kwargs)
        # The canary backend starts as the operator left it (all ready: the prepare puts them in maint).
        self.canary_admin = dict((h, 'ready') for h in self.apps)
        self.route = {'state': 'stable'}
        self.calls = []
        self.violations = []
        self.out_log = []
        self.routes = []

    def info(self, after=False, canary=None):
        stable = super(RoutedFleet, self).info(after=after, canary=canary)['backends']['demoapp']
        canary_rows = {}
        for host, row in stable.items():
            serving_canary = self.canary_admin[host] == 'ready'
            # The counters are where the host serves: its stable row counts nothing while it is on the canary.
            canary_rows[host] = dict(row, admin_state=self.canary_admin[host],
                                     req_tot=row['req_tot'] if serving_canary else 0,
                                     hrsp_5xx=row['hrsp_5xx'] if serving_canary else 0)
            if serving_canary:
                stable[host] = dict(row, req_tot=0, hrsp_5xx=0)
        return {'backends': {'demoapp': stable, 'demoapp_canary': canary_rows}}

    def execute(self, module, args):
        self.calls.append((module, dict(args)))
        if module == ROUTE_MODULE:
            assert args['routing']['backend'] == 'demoapp'
            self.route = dict((k, args[k]) for k in ('state', 'step', 'percent') if k in args)
            self.routes.append(dict(self.route))
            self.check()
            return {'changed': True, 'state': args['state']}
        assert module == SERVER_MODULE, module
        table = self.canary_admin if args['backend'] == 'demoapp_canary' else self.admin
        if args['backend'] == 'demoapp_canary':
            assert 'max_unavailable' not in args and 'claims' not in args, args
        if args.get('state') in ('drain', 'maint') and args.get('max_unavailable') is not None:
            out = set(h for h in args['fleet'] if self.admin[h] != 'ready') | set(args['servers'])
            if len(out) > args['max_unavailable']:
                return {'failed': True, 'changed': False, 'msg': 'would leave %d out' % len(out)}
        for server in args['servers']:
            if args.get('state'):
                table[server] = args['state']
        rows = self.info()['backends'][args['backend']]
        self.check()
        return {'changed': True, 'servers': dict((s, rows[s]) for s in args['servers'])}

    def serving(self):
        """Hosts a user can reach: ready in a backend the route sends users to."""
        stable = set(h for h in self.apps if self.admin[h] == 'ready')
        canary = set(h for h in self.apps if self.canary_admin[h] == 'ready')
        if self.route['state'] == 'stable':
            return stable, stable, set()
        if self.route['state'] == 'canary':
            return canary, set(), canary
        return stable | canary, stable, canary

    def check(self):
        everyone, stable, canary = self.serving()
        state = self.route['state']
        if state in ('stable', 'step') and not stable:
            self.violations.append(('no server ready in the stable backend', dict(self.route)))
        if state in ('canary', 'step') and not canary:
            self.violations.append(('no server ready in the canary backend', dict(self.route)))
        self.out_log.append(len(self.apps) - len(everyone))

    def act_on(self, role, host, act, phase):
        if role != 'balancers' or 'routing' not in act or (phase in self.fail_lb_on and self.fail_lb_on[phase] == host):
            return super(RoutedFleet, self).act_on(role, host, act, phase)
        routing = dict(act['routing'], spec=dict(ROUTING, backend='demoapp'))
        if phase == 'survey':
            result = super(RoutedFleet, self).act_on(role, host, act, phase)
            ok, done = prepare(self.execute, SERVER_MODULE, routing['spec'], act['routing']['prepare'])
            return result if ok else dict(result, failed=True, msg=done['msg'])
        if phase == 'analysis':
            raise AssertionError('the analysis reads are answered by answer()')
        # The act's module arguments as the task passes them.
        args = {'backend': 'demoapp', 'servers': act['servers'], 'state': act.get('state'),
                'weights': act.get('weights'), 'then_drain': act.get('then_drain'),
                'max_unavailable': act.get('max_out'), 'fleet': act.get('fleet'), 'claims': '/x', 'owner': 'me'}
        probe = None
        if act.get('ready_probe'):
            probe = self.probe(act['ready_probe']['urls'], self.unhealthy_from.get(host, set()))
            if probe['unhealthy']:
                return {'failed': True, 'changed': False, 'probe': probe, 'msg': 'not readied: unhealthy'}
        if host != act['balancers'][0]:
            # One model for both balancers: the second one finds it done and says so.
            rows = self.info()['backends']['demoapp_canary' if routing.get('on') == 'canary' else 'demoapp']
            result = {'changed': False, 'servers': dict((s, rows[s]) for s in act['servers'])}
            if act.get('then_drain'):
                result['then_drain'] = {'changed': False, 'servers': {}, 'seconds': 0.1}
            return result
        result = routed_act(self.execute, SERVER_MODULE, dict((k, v) for k, v in args.items() if v is not None),
                            routing, clock=lambda: 1.0)
        if probe is not None:
            result['probe'] = probe
        return result


def routed_run(fleet, **over):
    over.setdefault('canary_routing', dict(ROUTING))
    return run(fleet, **over)


def test_settings_refuse_what_the_routed_rollout_cannot_run():
    for over, wanted in (
            ({'canary_routing': dict(ROUTING, steps=[{'group': 'nobody'}, '100%'])}, "not an opt-in group"),
            ({'canary_routing': dict(ROUTING, steps=['120%'])}, '120'),
            ({'canary_routing': dict(ROUTING, steps=[{'users': '10%'}, '100%'])}, 'has 2 steps and canary_steps 4'),
            ({'canary_routing': dict(ROUTING, backend='other')}, "canary_routing.backend='other'"),
            ({'canary_routing': ROUTING, 'canary_pause': 'manual'}, "canary_pause='manual'"),
            ({'canary_routing': ROUTING, 'canary_limit': 'app1'}, 'canary_limit'),
            ({'canary_routing': ROUTING, 'canary_balancer_driver': 'nginx'}, 'canary_balancer_driver=haproxy'),
            ({'canary_routing': dict(ROUTING, opt_in=[{'name': 'office', 'networks': ['10.0.0.0/33']}])},
             '10.0.0.0/33'),
            ({'canary_routing': 'staff first'}, 'must be a mapping')):
        conf, errors = settings(**over)
        assert any(wanted in e for e in errors), (over, errors)
    conf, errors = settings(canary_routing=ROUTING)
    assert errors == [] and conf['routing']['backend'] == 'demoapp'
    assert settings()[0]['routing'] is None


def test_bad_routing_input_changes_nothing():
    fleet = RoutedFleet()
    state = routed_run(fleet, canary_routing=dict(ROUTING, steps=[{'users': '-5'}, '10%', '50%', '100%']))
    assert state['decision'] == 'failed' and 'canary_routing' in state['halt']['reason']
    assert fleet.calls == [] and fleet.versions == dict((h, 'v1') for h in APPS)


def test_promoted_moves_users_with_the_hosts_and_ends_with_everyone_on_stable():
    fleet = RoutedFleet()
    state = routed_run(fleet)
    assert state['decision'] == 'promoted', state['halt']
    assert fleet.violations == []
    assert fleet.versions == dict((h, 'v2') for h in APPS)
    # The end: every host ready in the stable backend, none in the canary one, everyone on stable.
    assert fleet.admin == dict((h, 'ready') for h in APPS)
    assert fleet.canary_admin == dict((h, 'maint') for h in APPS)
    assert fleet.route == {'state': 'stable'} and state['routed'] == []
    # The route over the run: staff first, a share that follows the hosts (never above the step's),
    # everyone on the canary before the last stable host is drained, then everyone back on stable.
    shares = [r.get('percent') for r in fleet.routes if r['state'] == 'step']
    assert shares == sorted(shares) and shares[0] == 0.0 and 10.0 in shares and 50.0 in shares
    assert [r['state'] for r in fleet.routes][-2:] == ['canary', 'stable']
    assert fleet.routes[0] == {'state': 'stable'}  # the pre-flight's prepare
    # Never more than max_unavailable (1 of 6) hosts out of what users can reach.
    assert max(fleet.out_log) <= 1
    # The canary step is judged on the canary backend's counters, with no weights involved.
    assert state['steps'][0]['judge']['verdict'] == 'pass'
    assert all(not s.get('weights') for s in state['steps'])
    assert not any(phase == 'restore' for phase, _act in fleet.asked)


def test_bad_canary_under_user_routing_sends_everyone_back_before_the_rollback():
    fleet = RoutedFleet()
    fleet.bad_canary = True
    state = routed_run(fleet)
    assert state['decision'] == 'rolled_back'
    assert 'judged fail' in state['halt']['reason']
    assert fleet.violations == []
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    # The first thing the rollback did was send every user to the stable backend.
    rollback_calls = [c for phase, act in fleet.asked if phase.startswith('rollback') for c in [act]]
    assert rollback_calls and rollback_calls[0]['routing']['route_before'] == {'state': 'stable'}
    assert fleet.route == {'state': 'stable'}
    assert fleet.admin == dict((h, 'ready') for h in APPS)
    assert fleet.canary_admin == dict((h, 'maint') for h in APPS)
    assert state['routed'] == []


def test_a_share_above_the_hosts_on_the_canary_is_refused_at_preflight():
    fleet = RoutedFleet()
    state = routed_run(fleet, canary_routing=dict(ROUTING, steps=[{'group': 'staff'}, '40%', '50%', '100%']))
    assert state['decision'] == 'failed'
    assert 'canary_routing.steps[1] sends 40' in state['halt']['reason']
    assert 'nothing was changed' in state['halt']['reason']
    assert fleet.versions == dict((h, 'v1') for h in APPS)


def test_a_missing_canary_backend_is_refused_at_preflight():
    fleet = RoutedFleet()
    real = fleet.execute

    def execute(module, args):
        if module == ROUTE_MODULE:
            return {'failed': True, 'msg': 'HAProxy on /run/haproxy/admin.sock has no backend demoapp_canary'}
        return real(module, args)
    fleet.execute = execute
    state = routed_run(fleet)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    assert 'the user routing on stable: HAProxy on /run/haproxy/admin.sock has no backend demoapp_canary' \
        in state['halt']['reason']
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.admin == dict((h, 'ready') for h in APPS)


def test_routed_act_orders_the_calls_and_names_the_one_that_failed():
    calls = []

    def execute(module, args):
        calls.append((module, args.get('backend'), args.get('state'), tuple(args.get('servers') or ())))
        if module == SERVER_MODULE and args.get('state') == 'drain' and args['servers'] == ['app3']:
            return {'failed': True, 'msg': 'drain timeout'}
        return {'changed': True, 'servers': {}}
    spec = dict(ROUTING, backend='demoapp')
    result = routed_act(execute, SERVER_MODULE,
                        {'backend': 'demoapp', 'servers': ['app2'], 'state': 'ready', 'then_drain': ['app3'],
                         'max_unavailable': 1, 'fleet': ['app1'], 'claims': '/c', 'owner': 'me'},
                        {'spec': spec, 'on': 'canary', 'route_after': {'state': 'step', 'step': 2, 'percent': 10}},
                        clock=lambda: 5.0)
    assert calls == [(SERVER_MODULE, 'demoapp_canary', 'ready', ('app2',)),
                     (ROUTE_MODULE, None, 'step', ()),
                     (SERVER_MODULE, 'demoapp', 'drain', ('app3',))]
    assert result['failed'] and result['then_drain']['failed']
    assert 'then draining app3 failed: drain timeout' in result['msg']
    calls[:] = []
    result = routed_act(lambda m, a: {'failed': True, 'msg': 'no map loaded'} if m == ROUTE_MODULE else execute(m, a),
                        SERVER_MODULE, {'backend': 'demoapp', 'servers': ['app3'], 'state': 'drain'},
                        {'spec': spec, 'on': 'stable', 'route_before': {'state': 'canary'}})
    assert result['failed'] and result['msg'].startswith('routing the users (everyone on canary) before the drain')
    # Nothing was drained after the route failed.
    assert calls == []


def test_routed_counters_take_the_canary_rows_of_the_hosts_serving_there():
    conf, errors = settings(canary_routing=ROUTING)
    state = {'settings': conf, 'routed': ['app1'], 'identities': dict((h, {'server': h}) for h in APPS)}
    snap = {'lb1': {'backends': {'demoapp': {'app1': {'req_tot': 0}, 'app2': {'req_tot': 7}},
                                 'demoapp_canary': {'app1': {'req_tot': 5}, 'app2': {'req_tot': 0}}}}}
    merged = engine_routing.routed_counters(state, snap)
    assert merged['lb1']['backends']['demoapp'] == {'app1': {'req_tot': 5}, 'app2': {'req_tot': 7}}


def test_an_interrupted_routed_run_is_put_back_in_the_stable_backend_then_refused():
    # What a run killed at its second step leaves: app1 on v2, drained (claimed) in the stable backend.
    fleet = RoutedFleet(versions=dict((h, 'v2' if h == 'app1' else 'v1') for h in APPS), drained=('app1',))
    fleet.canary_admin['app1'] = 'ready'
    fleet.route = {'state': 'step', 'step': 2, 'percent': 10}
    state = routed_run(fleet)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    assert 'resuming under canary_routing is not supported yet' in state['halt']['reason']
    assert 'app1' in state['halt']['reason']
    # Everyone on stable, where every host serves again; nothing switched.
    assert fleet.route == {'state': 'stable'}
    assert fleet.admin == dict((h, 'ready') for h in APPS)
    assert fleet.canary_admin == dict((h, 'maint') for h in APPS)
    assert fleet.versions['app1'] == 'v2' and fleet.violations == []


def test_the_judge_counts_only_users_routed_by_bucket_and_reports_opt_in_apart():
    logs = {'app1': {'routes': {'canary/bucket': {'requests': 100, 'errors_5xx': 40, 'response_ms': [9, 9]},
                                'canary/optin:staff': {'requests': 50, 'errors_5xx': 0, 'response_ms': [1]}}},
            'app2': {'routes': {'stable/bucket': {'requests': 400, 'errors_5xx': 0, 'response_ms': [2]},
                                'stable/optout:vip': {'requests': 30, 'errors_5xx': 3, 'response_ms': [7]}}}}
    metrics = [{'name': 'http_5xx_ratio', 'kind': 'ratio', 'source': 'haproxy',
                'canary': {'total': 150, 'errors': 40}, 'baseline': {'total': 430, 'errors': 3}},
               {'name': 'traffic_latency_ms', 'kind': 'samples', 'canary': [9, 9, 1], 'baseline': [2, 7]},
               {'name': 'probe_error_ratio', 'kind': 'ratio', 'canary': {'total': 5, 'errors': 0}}]
    judged = engine_routing.judged_by_bucket(metrics, logs, ['app1'], ['app2'])
    assert judged[0]['canary'] == {'total': 100, 'errors': 40} and judged[0]['baseline'] == {'total': 400, 'errors': 0}
    assert judged[0]['source'] == 'haproxy_log, routed by bucket'
    assert judged[1]['canary'] == [9, 9] and judged[1]['baseline'] == [2]
    assert judged[2] == metrics[2]
    assert engine_routing.by_route(logs, ['app1'], ['app2'])['canary/optin:staff'] == {'requests': 50, 'errors_5xx': 0}
    # A log without routes (rules not rendered by routing_config) changes nothing.
    assert engine_routing.judged_by_bucket(metrics, {'app1': {}, 'app2': {}}, ['app1'], ['app2']) == metrics


def test_the_report_gives_the_canarys_measured_share_of_the_users_requests_per_step():
    from ansible_collections.grayrelease.canary.plugins.module_utils._engine import report as engine_report
    by_route = {'canary/bucket': {'requests': 90, 'errors_5xx': 1}, 'canary/optin:staff': {'requests': 10, 'errors_5xx': 0},
                'stable/bucket': {'requests': 880, 'errors_5xx': 0}, 'stable/optout:vip': {'requests': 20, 'errors_5xx': 0}}
    assert engine_report.canary_share(by_route) == {'requests': 100, 'of': 1000, 'percent': 10.0}
    assert engine_report.canary_share({}) is None and engine_report.canary_share(None) is None
    assert engine_report.canary_share({'stable/all': {'requests': 0, 'errors_5xx': 0}}) == {
        'requests': 0, 'of': 0, 'percent': None}
    lines = engine_report._route_lines(engine_report.canary_share(by_route), by_route)
    assert lines[1] == '#### Users by route (HAProxy request log): 100 of 1000 requests on the canary backend (10%)'
    assert '| canary/optin:staff | 10 | 0 |' in lines and '| stable/bucket | 880 | 0 |' in lines
    assert engine_report._route_lines(None, {}) == []
