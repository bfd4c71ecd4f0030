# -*- coding: utf-8 -*-
"""The rollout engine's decisions, driven through a simulated fleet.

FakeFleet answers every act the way the real actors do (release, haproxy_server,
haproxy_info, health_check, http_sample results) and can be told to fail,
lose a host, or serve a bad canary. The playbook does nothing but pass those
results to engine.record(), so these tests cover every decision it makes.
"""
from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine
from ansible_collections.grayrelease.canary.plugins.module_utils._engine import dispatch as engine_dispatch

APPS = ['app1', 'app2', 'app3', 'app4', 'app5', 'app6']
LBS = ['lb1', 'lb2']


def settings(**over):
    raw = {'canary_version': 'v2', 'canary_artifact': '/tmp/v2.tar.gz', 'canary_backend': 'demoapp',
           'canary_service': 'demoapp', 'canary_analysis_count': 1}
    raw.update(over)
    result, errors = engine.check_settings(raw)
    return result, errors


def identities(apps=tuple(APPS), zones=None):
    return dict((h, {'server': h, 'zone': (zones or {}).get(h, ''), 'health_url': 'http://%s/healthz' % h,
                     'sample_url': 'http://%s/' % h}) for h in apps)


class FakeFleet(object):
    """Answers acts like the real actors; knobs inject faults."""

    def __init__(self, apps=tuple(APPS), versions=None, maint=(), drained=(), weights=None, held_drained=(),
                 held_weights=None):
        """drained / weights: left by a killed run (claimed, repaired); maint, held_drained /
        held_weights: an operator's (no claim)."""
        self.apps = list(apps)
        self.versions = dict(versions or dict((h, 'v1') for h in apps))
        self.admin = dict((h, 'maint' if h in maint else 'drain' if h in tuple(drained) + tuple(held_drained)
                           else 'ready') for h in apps)
        self.initial = dict((h, 1) for h in apps)
        self.weights = dict(self.initial, **(weights or {}))
        self.weights.update(held_weights or {})
        # What the balancers' claims file holds: the servers a run left off normal.
        self.claims = dict((h, {'admin_state': self.admin[h], 'weight': self.weights[h]})
                           for h in set(drained) | set(weights or {}))
        self.unhealthy = set()
        self.crash_on = set()      # release fails (did not stay up) on these hosts
        self.lose_on = {}          # phase -> host that vanishes in that phase
        self.fail_lb_on = {}       # phase -> balancer whose action fails
        self.bad_canary = False
        self.log = []              # (phase, max hosts out of rotation at that moment)
        self.staged = set()
        self.installed = dict((h, {v}) for h, v in self.versions.items())
        self.asked = []            # (phase, act) in the order they were asked
        self.fail_then_drain_on = None  # (balancer, server): that balancer's drain of it with the last batch fails
        self.unhealthy_from = {}   # balancer -> hosts it alone sees unhealthy
        self.sick_on_v2 = set()    # hosts whose health check fails once they run v2
        self.info_without = None   # a server the balancers' backend lacks
        self.ready_without_counters = False  # haproxy_server's read-back without req_tot / hrsp_5xx
        self.counters_before = 0   # requests every server had counted when the canary was readied
        self.bad_on_v2 = set()     # hosts that fail half their requests once they run v2
        self.hook_fails = {}       # hook phase (before_drain, after_ready) -> hosts where the user's task fails
        self.hooks_ran = []        # (hook phase, host, its admin state and version as the hook ran)

    def claim(self, servers):
        """haproxy_server's claims: what it left off normal is claimed, what it put back is not."""
        for server in servers:
            if self.admin[server] == 'ready' and self.weights[server] == self.initial[server]:
                self.claims.pop(server, None)
            else:
                self.claims[server] = {'admin_state': self.admin[server], 'weight': self.weights[server]}

    def refuses_drain(self, act, servers):
        """haproxy_server's capacity guard (max_unavailable, fleet)."""
        if act.get('max_out') is None:
            return None
        out = set(h for h in act['fleet'] if self.admin[h] != 'ready' or self.weights[h] == 0) | set(servers)
        if len(out) > act['max_out']:
            return {'failed': True, 'changed': False,
                    'msg': 'draining %s would leave %d servers out of rotation here, more than max_unavailable=%d'
                           % (', '.join(servers), len(out), act['max_out'])}
        return None

    def out_of_rotation(self):
        return sorted(h for h in self.apps if self.admin[h] != 'ready')

    def answer(self, state):
        act = state['act']
        phase = act['phase']
        lost = self.lose_on.get(phase)
        self.asked.append((phase, act))
        if phase == 'analysis':
            # The counters-at-start task is skipped when the canary's ready returned them.
            before = dict((b, {'skipped': True, 'changed': False} if act['counters_at_start'] else self.info())
                          for b in act['balancers'])
            return {'before': {'balancers': before},
                    'after': {'balancers': dict((b, self.info(after=True, canary=state)) for b in act['balancers'])},
                    'samples': {'probe': dict((p, self.samples(act, state)) for p in act['probe'])}}
        results = {}
        for role in ('apps', 'balancers', 'probe', 'lock'):
            if role not in act:
                continue
            results[role] = {}
            for host in act[role]:
                if host == lost:
                    results[role][host] = {'unreachable': True, 'msg': 'Failed to connect'}
                    continue
                results[role][host] = self.act_on(role, host, act, phase)
        self.log.append((phase, len(self.out_of_rotation())))
        return results

    def info(self, after=False, canary=None):
        table = {}
        for h in self.apps:
            if h == self.info_without:
                continue
            req = 0
            errors = 0
            if after:
                req = 200
                if self.bad_canary and canary is not None and h in engine.canary_hosts(canary):
                    errors = 100
                if h in self.bad_on_v2 and self.versions[h] == 'v2':
                    errors = 100
            table[h] = {'admin_state': self.admin[h], 'status': 'MAINT' if self.admin[h] == 'maint' else 'UP',
                        'weight': self.weights[h], 'initial_weight': self.initial[h],
                        'req_tot': req + self.counters_before,
                        'hrsp_5xx': errors, 'scur': 0}
        return {'backends': {'demoapp': table}}

    def probe(self, urls, also_unhealthy=()):
        sick = self.unhealthy | set(also_unhealthy) | set(h for h in self.sick_on_v2 if self.versions[h] == 'v2')
        bad = [u for u in urls if u.split('/')[2].rpartition('@')[2] in sick]
        # As health_check answers: every URL redacted (credentials hidden).
        return engine.redact({'healthy': [u for u in urls if u not in bad], 'unhealthy': bad, 'results': {},
                              'elapsed': 0.3, 'msg': 'unhealthy: %s' % ', '.join(bad) if bad else ''})

    def samples(self, act, state):
        canary_urls = ['http://%s/' % h for h in engine.canary_hosts(state)]
        rounds = []
        for _i in range(act['count']):
            samples = {}
            for url in act['urls']:
                bad = (self.bad_canary and url in canary_urls) or any(
                    url == 'http://%s/' % h and self.versions[h] == 'v2' for h in self.bad_on_v2)
                # Keyed like http_sample's results: by the redacted URL.
                samples[engine.redact(url)] = {'latencies_ms': [5.0 + i % 3 for i in range(20)],
                                               'errors': 20 if bad else 0, 'total': 20}
            rounds.append({'samples': samples})
        return {'results': rounds}

    def act_on(self, role, host, act, phase):
        if phase in self.fail_lb_on and self.fail_lb_on[phase] == host:
            return {'failed': True, 'msg': 'cannot connect to HAProxy socket /run/haproxy/admin.sock: '
                                           '[Errno 2] No such file or directory'}
        if role == 'lock':
            return {'changed': True, 'acquired': True}
        if role == 'balancers':
            if phase == 'survey':
                claims = {'claims': {'demoapp': json.loads(json.dumps(self.claims))}}
                if act.get('info_probe_from') == host:
                    # haproxy_info's probe: the checks come with the backend, URL credentials redacted.
                    return dict(self.info(), probe=engine.redact(self.probe(act['info_probe']['urls'])), **claims)
                return dict(self.info(), **claims)
            probe = None
            if act.get('ready_probe'):
                # haproxy_server's probe: checked from this balancer before anything changes.
                probe = self.probe(act['ready_probe']['urls'], self.unhealthy_from.get(host, set()))
                if probe['unhealthy']:
                    return {'failed': True, 'changed': False, 'probe': probe,
                            'msg': 'not readied: unhealthy as probed from this host: %s' % probe['msg']}
            if act.get('state') == 'drain':
                refused = self.refuses_drain(act, act['servers'])
                if refused:
                    return refused
            for server in act.get('servers', []):
                if act.get('state'):
                    self.admin[server] = act['state']
            for server, weight in (act.get('weights') or {}).items():
                self.weights[server] = weight
            self.claim(set(act.get('servers', [])) | set(act.get('weights') or {}))
            # haproxy_server reads back every server it named (the weights' too), counters included.
            table = self.info()['backends']['demoapp']
            if self.ready_without_counters:
                table = dict((h, dict((k, v) for k, v in row.items() if k not in ('req_tot', 'hrsp_5xx')))
                             for h, row in table.items())
            named = set(act.get('servers', [])) | set(act.get('weights') or {})
            result = {'changed': True, 'servers': dict((s, table[s]) for s in named if s in table)}
            if probe is not None:
                result['probe'] = probe
            if act.get('then_drain'):
                # haproxy_server refuses to ready and drain the same server in one call.
                assert act.get('state') != 'ready' or not set(act['then_drain']) & set(act['servers']), act
                if self.fail_then_drain_on in [(host, server) for server in act['then_drain']]:
                    return dict(result, failed=True, msg='readied; then draining failed: drain timeout',
                                then_drain={'failed': True, 'msg': 'drain timeout'})
                refused = self.refuses_drain(act, act['then_drain'])
                if refused:
                    return dict(result, failed=True, msg='readied; then ' + refused['msg'],
                                then_drain=dict(refused, changed=False))
                for server in act['then_drain']:
                    self.admin[server] = 'drain'
                self.claim(act['then_drain'])
                result['then_drain'] = {'changed': True, 'servers': {}, 'drain': {'waited': 0.5}, 'seconds': 0.6}
            return result
        if role == 'probe':
            return self.probe(act['urls'])
        # apps
        if phase in ('before_drain', 'after_ready'):
            # roles/rollout/tasks/hook.yml: the user's tasks, their outcome set as the act's result.
            self.hooks_ran.append((phase, host, self.admin[host], self.versions[host]))
            if host in self.hook_fails.get(phase, ()):
                return {'failed': True, 'msg': 'warm the cache: HTTP Error 500'}
            return {'changed': False, 'failed': False, 'hook': phase}
        if phase == 'releases' and host in act['stage'] and 'v2' not in self.installed[host] and self.versions[host]:
            # release state=staged, require_current: installed now on a host
            # with a current release, nothing switched.
            self.staged.add(host)
            self.installed[host].add('v2')
            return {'changed': True, 'installed_now': True, 'current': self.versions[host],
                    'installed': sorted(self.installed[host])}
        if phase in ('releases', 'final_versions'):
            return {'current': self.versions[host], 'installed': sorted(self.installed[host])}
        if phase == 'unstage':
            self.staged.discard(host)
            return {'changed': True}
        if phase == 'switch':
            if 'v2' not in self.installed[host] and host not in act['install']:
                # release state=current without src, as the real module answers it.
                return {'failed': True, 'msg': 'release v2 is not installed (/opt/demoapp/releases/v2 is '
                                               'missing) and src is not set'}
            self.installed[host].add('v2')
            self.versions[host] = 'v2'
            if host in self.crash_on:
                return {'failed': True, 'switched': True, 'msg': 'demoapp did not stay up after the restart'}
            return {'changed': True, 'switched': True, 'switched_from': 'v1'}
        if phase == 'rollback_switch':
            self.versions[host] = act['version']
            return {'changed': True, 'switched': True}
        raise AssertionError('unexpected act %s for %s' % (phase, host))


BATCH_TASK_ORDER = ('before_drain', 'drain', 'switch', 'health', 'ready', 'after_ready', 'analysis', 'restore',
                    'pause')


def run(fleet, check_mode=False, batch_order=None, **over):
    """Drive a whole run the way roles/rollout/tasks/main.yml does, each
    coordinator call through engine.advance() as the action plugin makes it.
    batch_order: the batch indexes in the order the play begins them (a
    play that got them out of order)."""
    clock = [1000.0]

    def now():
        clock[0] += 1.0
        return clock[0]

    probe_host = over.pop('probe_host', 'lb1')
    conf, errors = settings(**over)
    zones = over.pop('zones', None)
    state = engine.new_state(conf, errors, fleet.apps, LBS, identities(fleet.apps, zones), probe_host, now(),
                             check_mode=check_mode, owner='me')

    def call(op, step):
        engine.advance(state, op, step, now)

    def record():
        call('record', lambda s: engine.record(s, fleet.answer(s), now()))

    def drain_acts():
        while state['act'].get('phase'):
            record()

    def batch_acts(index):
        # batch.yml's tasks run in this order once per batch: an act that
        # comes earlier (a handed-over batch's switch) waits for the next one.
        last = -1
        while state['act'].get('phase') and BATCH_TASK_ORDER.index(state['act']['phase']) > last:
            last = BATCH_TASK_ORDER.index(state['act']['phase'])
            _assert_acts_within_batch(state, index)
            record()

    drain_acts()
    for index in range(len(state['plan'])) if batch_order is None else batch_order:
        # Every batch is included; a halted run's begin_batch leaves no act.
        call('batch', lambda s: engine.begin_batch(s, index, now()))
        batch_acts(index)
    call('rollback', lambda s: engine.begin_rollback(s, now()))
    view = engine.view(state)
    if view['rollback_groups'] or view['cleanup_due']:
        for index in range(len(state['rollback']['groups'])):
            call('rollback_group', lambda s: engine.begin_rollback_group(s, index, now()))
            drain_acts()
        call('cleanup', lambda s: engine.cleanup(s, now()))
        drain_acts()
    else:
        # main.yml skips the rollback's tasks: the clean-up would have had nothing to do.
        assert engine.cleanup(copy.deepcopy(state), now())['act'] == {}
    call('finish_survey', lambda s: engine.begin_finish(s, now()))
    drain_acts()
    call('finish', lambda s: engine.finish(s, now()))
    return state


def _assert_acts_within_batch(state, index):
    """main.yml includes the analysis only where its act's balancers and probe
    host are (and on the coordinator): an app host it named would never act."""
    assert state['act']['phase'] != 'analysis' or 'apps' not in state['act'], (index, state['act'])


def test_promoted_rolls_every_host_and_judges_the_first_step():
    fleet = FakeFleet()
    state = run(fleet)
    assert state['decision'] == 'promoted'
    assert fleet.versions == dict((h, 'v2') for h in APPS)
    assert fleet.out_of_rotation() == []
    assert fleet.weights == fleet.initial
    assert [s['hosts'] for s in state['steps']] == [['app1'], ['app2'], ['app3'], ['app4', 'app5', 'app6']]
    # Step 4 (3 hosts) is split by max_unavailable 25% of 6 = 1.
    assert [len(s['batches']) for s in state['steps']] == [1, 1, 1, 3]
    assert state['steps'][0]['canary'] and state['steps'][0]['judge']['verdict'] == 'pass'
    assert not any(s['canary'] for s in state['steps'][1:])
    doc = engine.report(state, str)
    assert doc['hosts'] == dict((h, 'v2') for h in APPS)
    assert doc['plan'] == [['app1'], ['app2'], ['app3'], ['app4'], ['app5'], ['app6']]
    # Never more than max_unavailable (1) out of rotation at once.
    assert max(out for dummy, out in fleet.log) == 1
    assert state['lock_held'] is False
    # The probe host lb1 probed the fleet in its backend read: no probe task.
    survey = [act for phase, act in fleet.asked if phase == 'survey']
    assert survey[0]['info_probe_from'] == 'lb1' and 'probe' not in survey[0]
    assert survey[0]['info_probe'] == {'urls': ['http://%s/healthz' % h for h in APPS], 'rise': 1, 'deadline': 15}
    # Nothing to put back or clean up: main.yml skips the rollback's tasks.
    assert engine.view(state)['rollback_groups'] == 0 and engine.view(state)['cleanup_due'] is False


def test_canary_weights_applied_at_ready_and_restored_after_a_pass():
    fleet = FakeFleet()
    conf, errors = settings(canary_traffic_percent=10)
    assert errors == []
    state = engine.new_state(conf, [], APPS, LBS, identities(), 'lb1', 1.0)
    while state['act'].get('phase'):
        engine.record(state, fleet.answer(state), 2.0)
    engine.begin_batch(state, 0, 3.0)
    for phase in ('drain', 'switch'):
        assert state['act']['phase'] == phase
        engine.record(state, fleet.answer(state), 4.0)
    # The probe host is a balancer: each balancer probes the canary before its ready.
    assert state['act']['phase'] == 'ready'
    assert state['act']['ready_probe'] == {'urls': ['http://app1/healthz'], 'rise': 2, 'interval': 0.25,
                                           'deadline': conf['health_deadline']}
    assert state['act']['servers'] == ['app1']
    weights = state['act']['weights']
    assert set(weights) == set(APPS) and weights['app1'] < weights['app2']
    engine.record(state, fleet.answer(state), 5.0)
    assert state['act']['phase'] == 'analysis'
    engine.record(state, fleet.answer(state), 6.0)
    assert state['act']['phase'] == 'restore' and state['act']['weights'] == dict((h, 1) for h in APPS)
    assert 'state' not in state['act']  # weights only: admin states stay as they are


def test_bad_canary_is_judged_and_only_the_canary_rolls_back():
    fleet = FakeFleet()
    fleet.bad_canary = True
    state = run(fleet)
    assert state['decision'] == 'rolled_back'
    assert 'judged fail' in state['halt']['reason']
    assert state['rollback']['done'] == ['app1']
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert fleet.weights == fleet.initial and fleet.out_of_rotation() == []
    # Releases staged on hosts that never switched are removed again.
    assert fleet.staged == {'app1'}


def test_prestaging_comes_with_the_release_read_and_skips_hosts_that_have_it():
    fleet = FakeFleet()
    fleet.installed['app3'].add('v2')   # e.g. left by an earlier, interrupted run
    state = run(fleet)
    assert state['decision'] == 'promoted'
    phases = [phase for phase, act in fleet.asked]
    assert phases[:3] == ['lock', 'survey', 'releases'] and 'stage' not in phases
    survey, releases = fleet.asked[1][1], fleet.asked[2][1]
    # The balancers are read first: no app host is asked in the survey.
    assert 'apps' not in survey and releases['apps'] == APPS and releases['stage'] == APPS
    # Only what this run installed counts as staged (and would be removed on a stop).
    assert state['staged'] == sorted(h for h in APPS if h != 'app3')
    assert engine.report(state, str)['staged'] == state['staged']
    # Every host has the release now: no switch ships the artifact.
    assert [act['install'] for phase, act in fleet.asked if phase == 'switch'] == [[]] * len(APPS)


def test_without_prestaging_every_switch_ships_the_artifact():
    fleet = FakeFleet()
    fleet.installed['app3'].add('v2')
    state = run(fleet, canary_prestage='false')
    assert state['decision'] == 'promoted' and state['staged'] == []
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [[]]
    installs = dict((act['apps'][0], act['install']) for phase, act in fleet.asked if phase == 'switch')
    assert installs == dict((h, [] if h == 'app3' else [h]) for h in APPS)


def test_nothing_counts_as_staged_when_every_host_has_the_release():
    fleet = FakeFleet()
    for host in APPS:
        fleet.installed[host].add('v2')
    state = run(fleet)
    assert state['decision'] == 'promoted'
    assert state['staged'] == [] and fleet.staged == set()
    assert 'unstage' not in [phase for phase, act in fleet.asked]
    assert fleet.versions == dict((h, 'v2') for h in APPS)


def test_a_failed_prestage_removes_what_was_staged_with_no_host_to_put_back():
    fleet = FakeFleet()
    answer = fleet.act_on

    def act_on(role, host, act, phase):
        if phase == 'releases' and host == 'app3':
            return {'failed': True, 'msg': 'No space left on device'}
        return answer(role, host, act, phase)
    fleet.act_on = act_on
    state = run(fleet)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    assert state['halt']['reason'] == ('pre-staging v2 failed, nothing was switched: stage on app3: '
                                       'No space left on device')
    # Nothing to put back, but staged releases to remove (app3's too: its
    # failure may have come after the rename): main.yml includes the rollback's tasks.
    unstage = [act for phase, act in fleet.asked if phase == 'unstage']
    assert len(unstage) == 1 and unstage[0]['apps'] == APPS
    assert state['rollback']['groups'] == [] and fleet.staged == set()
    assert engine.view(state)['cleanup_due'] is False
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_refusal_after_the_release_read_removes_what_it_staged():
    versions = dict((h, 'v1') for h in APPS)
    versions['app2'] = 'v0'
    fleet = FakeFleet(versions=versions)
    state = run(fleet)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    assert 'the fleet must run one version' in state['halt']['reason'] and 'app2=v0' in state['halt']['reason']
    assert [act['apps'] for phase, act in fleet.asked if phase == 'unstage'] == [APPS]
    assert fleet.staged == set() and fleet.versions == versions and fleet.out_of_rotation() == []


def test_a_fleet_not_adopted_is_refused_and_only_hosts_on_the_layout_were_staged_and_cleaned():
    versions = dict((h, 'v1') for h in APPS)
    versions['app1'] = ''   # installed by hand: no current release
    fleet = FakeFleet(versions=versions)
    state = run(fleet)
    assert state['halt']['reason'].startswith(
        'nothing was changed: no current release on app1 (see docs: adopting a fleet); ')
    assert state['staged'] == APPS[1:] and 'v2' not in fleet.installed['app1']
    assert [act['apps'] for phase, act in fleet.asked if phase == 'unstage'] == [APPS[1:]]
    assert fleet.staged == set()


def test_a_backend_that_lacks_a_server_is_refused_before_any_app_host_is_asked():
    fleet = FakeFleet()
    fleet.info_without = 'app4'
    state = run(fleet)
    assert state['halt']['phase'] == 'preflight'
    assert state['halt']['reason'] == 'nothing was changed: backend demoapp lacks servers: {"lb1": ["app4"], "lb2": ["app4"]}'
    # The finish only reads the versions the run never learned.
    assert [phase for phase, act in fleet.asked] == ['lock', 'survey', 'final_versions', 'unlock']
    assert fleet.staged == set()


def test_an_unhealthy_fleet_is_not_staged_on_and_a_run_that_goes_on_installs_at_the_switch():
    # A resume: app1 runs v2 already but fails its health check, so it is rolled again.
    versions = dict((h, 'v1') for h in APPS)
    versions['app1'] = 'v2'
    fleet = FakeFleet(versions=versions)
    fleet.installed['app1'].add('v2')
    fleet.unhealthy = {'app1'}
    answer = fleet.act_on

    def act_on(role, host, act, phase):
        if phase == 'switch':
            fleet.unhealthy.discard(host)   # the restart mends it
        return answer(role, host, act, phase)
    fleet.act_on = act_on
    state = run(fleet)
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [[]]
    assert state['staged'] == [] and fleet.staged == set()
    assert state['decision'] == 'promoted' and fleet.versions == dict((h, 'v2') for h in APPS)
    # Every switch but app1's (which has the release) ships the artifact itself.
    switches = [act for phase, act in fleet.asked if phase == 'switch']
    expected = [[h] if h != 'app1' else [] for act in switches for h in act['apps']]
    assert [act['install'] for act in switches] == expected
    assert sorted(h for act in switches for h in act['install']) == APPS[1:]
    assert any(n.startswith('not pre-staged (not healthy and UP at pre-flight: app1)') for n in state['notes'])


def test_the_canary_ready_returns_the_counters_the_analysis_starts_from():
    fleet = FakeFleet()
    fleet.bad_canary = True
    fleet.counters_before = 1000  # the judge must see deltas, not HAProxy's totals
    state = run(fleet)
    analysis = [act for phase, act in fleet.asked if phase == 'analysis']
    assert len(analysis) == 1 and analysis[0]['counters_at_start'] is True
    assert 'analysis_start' not in state
    http = state['steps'][0]['judge']['metrics']['http_5xx_ratio']
    assert http['failed'] and state['decision'] == 'rolled_back'
    # 200 requests per server and balancer during the analysis, not the 1000 before.
    share = state['steps'][0]['traffic_share']
    assert share['requests'] == 200 * len(LBS) * len(APPS) and share['canary_errors'] == 100 * len(LBS)


def test_without_counters_in_the_ready_the_analysis_reads_them_itself():
    fleet = FakeFleet()
    fleet.bad_canary = True
    fleet.ready_without_counters = True
    state = run(fleet)
    analysis = [act for phase, act in fleet.asked if phase == 'analysis']
    assert analysis[0]['counters_at_start'] is False
    assert state['steps'][0]['judge']['metrics']['http_5xx_ratio']['failed']
    assert state['decision'] == 'rolled_back'


def test_failure_in_a_later_batch_rolls_back_within_max_unavailable():
    fleet = FakeFleet()
    fleet.crash_on = {'app4'}
    state = run(fleet, canary_max_unavailable=2, canary_steps=[1, '50%', '100%'])
    assert state['decision'] == 'rolled_back'
    assert 'app4' in state['halt']['reason'] and 'did not stay up' in state['halt']['reason']
    assert sorted(state['rollback']['done']) == ['app1', 'app2', 'app3', 'app4', 'app5']
    # The failed batch was already out; the rest went back two at a time.
    assert all(len(g) <= 2 for g in state['rollback']['groups'])
    assert max(out for dummy, out in fleet.log) <= 2
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert fleet.out_of_rotation() == []
    assert 'app6' not in fleet.staged


HOOKS = {'canary_before_drain_tasks': '/srv/hooks/before-drain.yml', 'canary_after_ready_tasks': '/srv/hooks/ready.yml'}


def test_the_drain_and_ready_hooks_run_on_each_host_serving_old_then_new_and_nothing_is_handed_over():
    fleet = FakeFleet()
    state = run(fleet, **HOOKS)
    assert state['decision'] == 'promoted' and fleet.versions == dict((h, 'v2') for h in APPS)
    # Before the drain each host still served v1; after the ready it served v2.
    assert fleet.hooks_ran == [(phase, h, 'ready', version) for h in APPS
                               for phase, version in (('before_drain', 'v1'), ('after_ready', 'v2'))]
    phases = [phase for phase, act in fleet.asked]
    for h in APPS:
        mine = [p for p, act in fleet.asked if h in (act.get('apps') or []) + (act.get('servers') or [])
                and p in ('before_drain', 'drain', 'switch', 'ready', 'after_ready')]
        assert mine == ['before_drain', 'drain', 'switch', 'ready', 'after_ready'], (h, mine)
    # No ready drains the next batch: its before-drain hook comes first.
    assert not any(act.get('then_drain') for dummy, act in fleet.asked)
    # The canary's analysis still starts from the ready's counters, taken before the hook, as without hooks.
    without = FakeFleet()
    run(without)
    analysis = [act['counters_at_start'] for phase, act in fleet.asked if phase == 'analysis']
    assert analysis[0] is True and analysis == [act['counters_at_start'] for p, act in without.asked if p == 'analysis']
    assert state['steps'][0]['judge']['verdict'] == 'pass'
    assert phases.count('before_drain') == phases.count('after_ready') == len(APPS)
    batch = state['steps'][0]['batches'][0]
    assert set(batch['timings']) >= {'before_drain', 'drain', 'switch', 'ready', 'after_ready', 'analysis'}
    assert max(out for dummy, out in fleet.log) == 1


def test_a_failing_before_drain_hook_halts_before_its_batch_is_drained():
    fleet = FakeFleet()
    fleet.hook_fails = {'before_drain': {'app3'}}
    state = run(fleet, canary_before_drain_tasks='/srv/hooks/before-drain.yml')
    assert state['decision'] == 'rolled_back' and state['lost'] == {}
    assert 'before-drain hook on app3: warm the cache: HTTP Error 500' in state['halt']['reason']
    # app3 was never drained nor switched; app1 and app2 went back.
    assert not any(p == 'drain' and 'app3' in act['servers'] for p, act in fleet.asked)
    assert sorted(state['rollback']['done']) == ['app1', 'app2']
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_failing_after_ready_hook_rolls_its_host_back():
    fleet = FakeFleet()
    fleet.hook_fails = {'after_ready': {'app1'}}
    state = run(fleet, canary_after_ready_tasks='/srv/hooks/ready.yml')
    assert state['decision'] == 'rolled_back' and state['lost'] == {}
    assert 'after-ready hook on app1: warm the cache: HTTP Error 500' in state['halt']['reason']
    # The canary failed before its analysis: no verdict, and app1 went back.
    assert not any(p == 'analysis' for p, act in fleet.asked)
    assert state['rollback']['done'] == ['app1']
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []
    assert fleet.weights == fleet.initial


@pytest.mark.parametrize('name', sorted(HOOKS))
@pytest.mark.parametrize('bad', [['a.yml'], '  ', 'a.yml\nb.yml', 3])
def test_a_hook_that_is_no_task_file_path_is_refused_naming_it(name, bad):
    dummy, errors = settings(**{name: bad})
    assert errors == ['%s=%r must be the path of a task file (e.g. /srv/deploy/hooks/%s.yml), or empty for none'
                      % (name, bad, 'before-drain' if 'drain' in name else 'after-ready')]


def test_partial_rollback_when_a_host_is_lost_is_failed_and_says_so():
    fleet = FakeFleet()
    fleet.lose_on = {'rollback_switch': 'app2'}
    fleet.crash_on = {'app3'}
    state = run(fleet)
    assert state['decision'] == 'failed'
    doc = engine.report(state, str)
    assert 'app2' in doc['lost']
    assert any('app2' in line for line in doc['lost_may_hold'])
    assert 'app1' in state['rollback']['done']


def test_lost_balancer_halts_and_the_rest_is_still_restored():
    fleet = FakeFleet()
    fleet.lose_on = {'drain': 'lb2'}
    state = run(fleet)
    assert state['decision'] == 'failed'
    assert 'lb2' in state['lost'] and 'unreachable' in state['halt']['reason']
    # Nothing was switched: the canary never left the old release.
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert fleet.out_of_rotation() == []
    # lb2 is never asked again.
    doc = engine.report(state, str)
    assert any('lb2' in line and 'repairs' in line for line in doc['lost_may_hold'])


def test_balancer_failure_keeps_the_real_cause():
    fleet = FakeFleet()
    fleet.fail_lb_on = {'drain': 'lb1'}
    state = run(fleet)
    assert 'No such file or directory' in state['halt']['reason']
    assert 'lb1' in state['halt']['reason']


def test_unhealthy_batch_halts_before_ready():
    fleet = FakeFleet()
    fleet.unhealthy = {'app1'}
    fleet.versions  # app1 becomes unhealthy only after its switch in real life; here from the start
    state = run(fleet)
    # app1 was unhealthy in pre-flight already: nothing is touched at all.
    assert state['halt']['phase'] == 'preflight' and 'unhealthy' in state['halt']['reason']
    assert state['decision'] == 'failed' and fleet.log[0][0] == 'lock'
    assert all(p in ('lock', 'survey', 'releases', 'final_versions', 'unlock') for p, dummy in fleet.log)
    # A fleet that is not all healthy is not written to: nothing staged.
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [[]] and fleet.staged == set()


def test_manual_pause_stops_after_each_step_not_each_batch():
    fleet = FakeFleet()
    state = run(fleet, canary_pause='manual', canary_steps=[2, '100%'], canary_max_unavailable=1)
    assert state['decision'] == 'paused'
    assert [b['hosts'] for b in state['steps'][0]['batches']] == [['app1'], ['app2']]
    assert len(state['steps']) == 1
    assert fleet.out_of_rotation() == [] and fleet.weights == fleet.initial
    # Paused is not a failure: nothing goes back.
    assert state['rollback']['hosts'] == []


def test_seconds_pause_acts_after_each_step():
    fleet = FakeFleet()
    state = run(fleet, canary_pause=5, canary_steps=[1, '100%'], canary_max_unavailable=3)
    pauses = [p for p, dummy in fleet.log if p == 'pause']
    assert len(pauses) == 1  # between step 1 and step 2, not between step 2's batches
    assert state['decision'] == 'promoted'


def test_resume_counts_done_hosts_and_repairs_what_the_killed_run_left():
    versions = dict((h, 'v1') for h in APPS)
    versions.update(app1='v2', app2='v2')
    fleet = FakeFleet(versions=versions, drained=['app3'], weights={'app1': 0})
    state = run(fleet)
    assert state['done_before'] == ['app1', 'app2']
    assert sorted(state['repaired']) == ['app1', 'app3']
    assert [h for b in state['plan'] for h in b] == ['app3', 'app4', 'app5', 'app6']
    assert state['decision'] == 'promoted'
    assert fleet.versions == dict((h, 'v2') for h in APPS)


def test_operator_maintenance_counts_against_the_cap_and_refuses_without_room():
    # 25% of 6 hosts: 1 out at once, and app6 is out already (an operator's MAINT).
    fleet = FakeFleet(maint=['app6'])
    state = run(fleet)
    assert state['decision'] == 'failed'
    reason = state['halt']['reason']
    assert 'canary_max_unavailable=25%' in reason and 'app6 (maint on lb1, maint on lb2)' in reason, reason
    # Refused before the releases are read: nothing staged, drained or switched.
    assert [p for p, dummy in fleet.log] == ['lock', 'survey', 'final_versions', 'unlock']
    assert not fleet.staged and fleet.admin == dict((h, 'maint' if h == 'app6' else 'ready') for h in APPS)


def test_five_of_six_in_maintenance_never_drain_the_last_serving_host():
    fleet = FakeFleet(maint=APPS[1:])
    state = run(fleet, canary_max_unavailable='1')
    assert state['decision'] == 'failed' and 'no room' in state['halt']['reason']
    assert fleet.admin['app1'] == 'ready' and fleet.versions['app1'] == 'v1'


def test_operator_maintenance_is_left_alone_with_room():
    fleet = FakeFleet(maint=['app6'])
    state = run(fleet, canary_max_unavailable='2')
    assert state['held'] == {'app6': 'maint on lb1, maint on lb2'}
    assert 'app6' not in [h for b in state['plan'] for h in b]
    # The room left is 1: one host out at a time, app6 included, never more than 2.
    assert max(len(b) for b in state['plan']) == 1
    assert max(out for dummy, out in fleet.log) <= 2
    assert fleet.admin['app6'] == 'maint' and fleet.versions['app6'] == 'v1'
    assert state['decision'] == 'promoted'
    # Nothing is written to it either: not staged on.
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [APPS[:5]]
    assert 'app6' not in fleet.staged and 'v2' not in fleet.installed['app6']
    doc = engine.report(state, str)
    assert doc['operator_held'] == {'app6': 'maint on lb1, maint on lb2'} and doc['maintenance'] == ['app6']
    assert doc['capacity'] == {'max_unavailable': 2, 'out_before': {'app6': 'maint on lb1, maint on lb2'},
                               'room': 1}


def test_an_operators_drain_and_weight_are_left_alone_not_repaired():
    # app3 drained by hand, app4 re-weighted by hand: no claim of a run, so
    # neither is readied nor rolled; the drained one counts against the cap.
    fleet = FakeFleet(held_drained=['app3'], held_weights={'app4': 5})
    state = run(fleet, canary_max_unavailable='2')
    assert state['decision'] == 'promoted', state['halt']
    assert state['repaired'] == []
    assert state['held'] == {'app3': 'drain on lb1, drain on lb2',
                             'app4': 'weight 5 (initial 1) on lb1, weight 5 (initial 1) on lb2'}
    assert fleet.admin['app3'] == 'drain' and fleet.weights['app4'] == 5
    assert fleet.versions['app3'] == fleet.versions['app4'] == 'v1'
    assert state['capacity']['out_before'] == {'app3': 'drain on lb1, drain on lb2'}
    # The canary's weights leave the operator's servers alone.
    assert not [act for phase, act in fleet.asked if set(act.get('weights') or {}) & {'app3', 'app4'}]


def test_a_server_changed_after_the_run_left_it_is_the_operators():
    # A killed run left app3 drained (claimed); an operator then put it in
    # maintenance: the claim no longer matches, and it is left alone.
    fleet = FakeFleet(drained=['app3'])
    fleet.admin['app3'] = 'maint'
    state = run(fleet, canary_max_unavailable='2')
    assert state['repaired'] == [] and 'app3' in state['held']
    assert fleet.admin['app3'] == 'maint'


def test_every_drain_carries_the_capacity_guard():
    fleet = FakeFleet(maint=['app6'])
    run(fleet, canary_max_unavailable='2')
    drains = [act for phase, act in fleet.asked if act.get('state') == 'drain' or act.get('then_drain')]
    assert drains and all(act['max_out'] == 2 and act['fleet'] == APPS for act in drains)


def test_a_balancer_refusing_a_drain_for_capacity_halts_with_nothing_more_out():
    # An operator takes app5 out during the run: the next drain would pass the cap there.
    class Fleet(FakeFleet):
        def act_on(self, role, host, act, phase):
            if phase == 'ready' and self.admin['app5'] == 'ready':
                self.admin['app5'] = 'maint'
            return FakeFleet.act_on(self, role, host, act, phase)

    fleet = Fleet()
    state = run(fleet, canary_max_unavailable='1')
    assert state['decision'] == 'failed'
    assert 'max_unavailable=1' in state['halt']['reason'], state['halt']
    assert max(out for dummy, out in fleet.log) <= 2  # app5 (the operator's) and at most one of ours, once
    assert fleet.out_of_rotation() == ['app5']


def test_canary_limit_rolls_exactly_those_hosts():
    fleet = FakeFleet()
    state = run(fleet, canary_limit='app2, app3')
    assert state['decision'] == 'promoted', state['halt']
    assert [h for b in state['plan'] for h in b] == ['app2', 'app3']
    assert dict((h, v) for h, v in fleet.versions.items() if v == 'v2') == {'app2': 'v2', 'app3': 'v2'}
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [['app2', 'app3']]
    # The canary is judged against the hosts outside the limit.
    analysis = [act for phase, act in fleet.asked if phase == 'analysis'][0]
    assert analysis['canary'] == ['app2'] and analysis['baseline'] == ['app1', 'app3', 'app4', 'app5', 'app6']
    assert engine.report(state, str)['limit'] == ['app2', 'app3']


def test_canary_limit_names_only_app_hosts():
    conf, errors = settings(canary_limit=['app2', 'nosuch'])
    assert errors == []
    assert engine.check_hosts(APPS, LBS, identities(APPS), 'lb1', APPS + LBS, conf['limit']) == [
        'canary_limit names nosuch, not in the app group (%s)' % ', '.join(APPS)]
    conf, errors = settings(canary_limit=[3])
    assert errors == ["canary_limit=[3] must be app host names, a list or separated by commas"]


def test_check_mode_plans_and_touches_nothing():
    fleet = FakeFleet()
    state = run(fleet, check_mode=True)
    assert state['decision'] == 'promoted'
    assert all(p in ('lock', 'survey', 'releases', 'final_versions') for p, dummy in fleet.log)
    assert [act['stage'] for phase, act in fleet.asked if phase == 'releases'] == [[]]
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert state['plan_lines'][0] == 'Rolling demoapp from v1 to v2 on 6 hosts'


def test_no_auto_rollback_restores_weights_and_readies_hosts_not_switched():
    fleet = FakeFleet()
    fleet.bad_canary = True
    state = run(fleet, canary_auto_rollback='false')
    assert state['decision'] == 'failed'
    assert fleet.versions['app1'] == 'v2'
    assert fleet.weights == fleet.initial
    assert any('canary_auto_rollback=false' in n for n in state['notes'])


def test_bad_input_halts_before_the_lock_naming_every_bad_value():
    conf, errors = settings(canary_version='../x', canary_traffic_percent='0', canary_steps=[3, 1],
                            canary_max_unavailable='0', canary_pause='soon', canary_backend='a/b',
                            canary_on_marginal='maybe')
    text = '; '.join(errors)
    for needle in ("'../x'", "canary_traffic_percent=0 must be > 0", 'non-decreasing', "'soon'", "'a/b'",
                   "canary_on_marginal='maybe' must be 'rollback' or 'promote'"):
        assert needle in text
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 1.0)
    assert state['act'] == {} and state['halt']['phase'] == 'preflight'


@pytest.mark.parametrize('name,value', [
    ('canary_version', 'v2\n'), ('canary_backend', 'demoapp\n'), ('canary_service', 'demoapp\n'),
])
def test_a_trailing_newline_passes_no_validator(name, value):
    # '$' matches before a final newline; the validators are anchored with \\Z. (A checksum
    # or a step is stripped of surrounding blanks first, and used stripped.)
    conf, errors = settings(**{name: value})
    assert errors and any(name in e or repr(value) in e or 'steps' in e for e in errors), errors


def test_server_and_haproxy_names_with_a_trailing_newline_are_refused():
    ident = identities()
    ident['app1']['server'] = 'app1\n'
    assert any("canary_server='app1\\n'" in e for e in engine.check_hosts(APPS, LBS, ident, 'lb1', APPS + LBS))
    from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import BalancerError, validate_name
    with pytest.raises(BalancerError):
        validate_name('server', 'app1\n')


@pytest.mark.parametrize('raw,expected', [
    ('1,25%,100%', [1, '25%', '100%']),
    ('[1, "25%"]', [1, '25%']),
    ("[1, '25%']", [1, '25%']),
    (['1', '50%'], [1, '50%']),
    ([2, '100%'], [2, '100%']),
])
def test_survey_strings_for_steps(raw, expected):
    assert engine.coerce_steps(raw) == expected


def test_survey_string_max_unavailable_and_bools():
    conf, errors = settings(canary_max_unavailable='2', canary_auto_rollback='no', canary_analysis_count='3')
    assert errors == []
    assert conf['max_unavailable'] == 2 and conf['auto_rollback'] is False and conf['analysis_count'] == 3


def test_hosts_check_names_duplicates_and_bad_server_names():
    ident = identities()
    ident['app2']['server'] = 'app1'
    ident['app3']['server'] = 'bad name;shutdown'
    errors = engine.check_hosts(APPS, LBS, ident, 'nowhere', APPS + LBS)
    text = '; '.join(errors)
    assert "'app1' is used by both app1 and app2" in text
    assert 'bad name;shutdown' in text
    assert "canary_probe_from='nowhere'" in text


def test_record_refuses_without_a_pending_act():
    state = engine.new_state(settings()[0], [], APPS, LBS, identities(), 'lb1', 1.0)
    state['act'] = {}
    with pytest.raises(engine.EngineError):
        engine.record(state, {}, 2.0)


def test_report_markdown_has_steps_and_judgement():
    fleet = FakeFleet()
    state = run(fleet)
    text = engine.report_markdown(engine.report(state, str))
    assert '# Canary rollout of demoapp: PROMOTED' in text
    assert '### Canary judgement (step 1): pass' in text
    assert '| 4 | 6 | app6 |' in text


def test_final_versions_are_read_only_where_a_failure_left_them_uncertain():
    fleet = FakeFleet()
    state = run(fleet)
    assert 'final_versions' not in [p for p, dummy in fleet.log]
    assert state['final_versions'] == dict((h, 'v2') for h in APPS)

    fleet = FakeFleet()
    fleet.crash_on = {'app1'}
    fleet.lose_on = {'rollback_switch': 'app1'}
    state = run(fleet)
    assert state['final_versions']['app1'] == 'unknown'  # lost: not asked, not guessed
    assert state['final_versions']['app2'] == 'v1'


def test_a_failed_switch_is_read_back_at_the_end():
    fleet = FakeFleet()
    fleet.crash_on = {'app1'}
    fleet.fail_lb_on = {'rollback_drain': 'lb1'}
    state = run(fleet, canary_auto_rollback=False)
    assert 'final_versions' in [p for p, dummy in fleet.log]
    assert state['final_versions']['app1'] == 'v2'


def test_lost_balancer_at_ready_the_host_it_may_route_to_is_not_restarted():
    # lb2 vanishes during the canary's ready: it may have put app1 back in
    # rotation, and it may still route to it. Restarting app1 would drop
    # what lb2 sends, so app1 stays on v2, readied again on lb1, and the
    # report says why; nothing is ever restarted while in rotation.
    class Fleet(FakeFleet):
        def act_on(self, role, host, act, phase):
            if phase == 'rollback_switch':
                self.restarted = getattr(self, 'restarted', []) + [host]
            return FakeFleet.act_on(self, role, host, act, phase)

    fleet = Fleet()
    fleet.lose_on = {'ready': 'lb2'}
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'failed' and list(state['lost']) == ['lb2']
    assert getattr(fleet, 'restarted', []) == []
    assert fleet.versions == dict((h, 'v2' if h == 'app1' else 'v1') for h in APPS)
    assert fleet.admin['app1'] == 'ready'
    errors = engine.report(state, str)['rollback_errors']
    assert any('not rolled back' in e and 'app1 (lb2 unreachable, it had not drained it)' in e for e in errors), errors


def test_rollback_restarts_only_hosts_drained_on_every_balancer():
    # The rollback's drain of the canary fails on lb2 (its socket): lb2 may
    # still send app1 traffic, so app1 is not restarted.
    fleet = FakeFleet()
    fleet.bad_canary = True
    fleet.fail_lb_on = {'rollback_drain': 'lb2'}
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'failed'
    assert fleet.versions['app1'] == 'v2' and state['rollback']['done'] == []
    errors = engine.report(state, str)['rollback_errors']
    assert any('app1 (not drained on every live balancer)' in e for e in errors), errors
    # The same run with the drain through: app1 goes back.
    fleet = FakeFleet()
    fleet.bad_canary = True
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'rolled_back' and fleet.versions['app1'] == 'v1'


def test_next_run_repairs_what_a_lost_balancer_left_drained():
    # The run that lost lb2 left app2 drained there (ready on lb1); the report
    # says "the next run repairs it": the balancers disagree, and that is
    # repaired, not refused.
    class Fleet(FakeFleet):
        def act_on(self, role, host, act, phase):
            answer = FakeFleet.act_on(self, role, host, act, phase)
            if role == 'balancers' and phase == 'survey' and host == 'lb2':
                answer['backends']['demoapp']['app2']['admin_state'] = 'drain'
                if self.claimed:
                    # Drained there by the run, which claimed it there first.
                    answer['claims']['demoapp']['app2'] = {'admin_state': 'drain', 'weight': 1}
            return answer

    fleet = Fleet()
    fleet.claimed = True
    state = run(fleet)
    assert state['decision'] == 'promoted', state['halt']
    assert state['repaired'] == ['app2']
    # Without the run's claim there, the same drain is an operator's: it counts, and there is no room.
    fleet = Fleet()
    fleet.claimed = False
    state = run(fleet)
    assert state['repaired'] == [] and 'app2 (drain on lb2)' in state['halt']['reason'], state['halt']


def _held(state, gone=False):
    lock = {'owner': 'bob@ctl pid 42 run abc', 'controller': 'ctl', 'controller_pid': 42, 'version': 'v2'}
    return {'lock': {state['lock_host']: {'failed': True, 'msg': 'lock is held by bob', 'lock': lock,
                                          'holder_gone': gone}}}


def test_a_live_holder_refuses_the_run_and_is_named():
    conf, errors = settings()
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    engine.record(state, _held(state), 2.0)
    assert state['halt']['phase'] == 'preflight' and 'held by bob' in state['halt']['reason']
    assert state['act'] == {} and state['lock_held'] is False


@pytest.mark.parametrize('gone,takeover', [(True, False), (False, True)])
def test_a_gone_holder_or_an_explicit_takeover_takes_the_lock_over(gone, takeover):
    conf, errors = settings(canary_lock_takeover=takeover)
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    engine.record(state, _held(state, gone=gone), 2.0)
    assert state['halt'] is None
    assert state['act'] == {'phase': 'lock', 'lock': ['lb1'], 'force': True}
    assert 'took over the lock' in state['notes'][0]
    # A forced attempt that fails too stops the run.
    engine.record(state, _held(state, gone=gone), 3.0)
    assert state['halt'] is not None


def test_the_lock_ttl_covers_the_longest_gap_and_is_refreshed_during_the_run():
    conf, errors = settings(canary_lock_ttl=60, canary_pause=100)
    assert engine.lock_ttl(conf) >= 2 * (100 + 30 + 60 * 2)
    fleet = FakeFleet()
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 0.0, owner='me')
    while state['act'].get('phase'):
        engine.record(state, fleet.answer(state), 1.0)
    engine.begin_batch(state, 0, 2.0)
    assert 'lock' not in state['act']  # fresh
    state['lock_refreshed'] = 2.0 - state['lock_ttl']  # a third of the TTL has long passed
    state['act'] = {}
    state['batch_index'] = 0
    state['steps'] = []
    engine.begin_batch(state, 0, 3.0)
    assert state['act']['lock'] == ['lb1']
    lost = fleet.answer(state)
    lost['lock'] = {'lb1': {'failed': True, 'msg': 'lock is held by someone else'}}
    engine.record(state, lost, 4.0)
    assert 'lost the rollout lock' in state['halt']['reason']


def test_a_long_rollback_keeps_its_lock_fresh_and_goes_on_if_it_cannot():
    class Fleet(FakeFleet):
        def answer(self, state):
            if state['act'].get('phase') == 'analysis':
                # The analysis took long: a third of the TTL has passed by the rollback.
                state['lock_refreshed'] -= state['lock_ttl']
            return FakeFleet.answer(self, state)

        def act_on(self, role, host, act, phase):
            if role == 'lock' and phase == 'rollback_drain' and self.refuse:
                return {'failed': True, 'msg': 'lock is held by bob'}
            return FakeFleet.act_on(self, role, host, act, phase)

    for refuse in (False, True):
        fleet = Fleet()
        fleet.bad_canary = True
        fleet.refuse = refuse
        state = run(fleet, canary_max_unavailable=1)
        refreshes = [act for phase, act in fleet.asked if phase == 'rollback_drain' and 'lock' in act]
        assert len(refreshes) == 1, fleet.asked
        assert fleet.versions == dict((h, 'v1') for h in APPS)
        errors = engine.report(state, str)['rollback_errors']
        if refuse:
            assert state['decision'] == 'failed' and any('could not refresh the rollout lock' in e for e in errors)
        else:
            assert state['decision'] == 'rolled_back' and errors == []


def _at_the_first_drain():
    """A fleet and a run whose pre-flight is done and whose first batch's drain is asked for."""
    fleet = FakeFleet()
    conf, errors = settings()
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    while state['act'].get('phase'):
        engine.record(state, fleet.answer(state), 2.0)
    engine.begin_batch(state, 0, 3.0)
    return fleet, state


@pytest.mark.parametrize('message,stderr', [
    # ansible-core <= 2.18
    ('The haproxy_server action failed to execute in the expected time frame (90) and was terminated', ''),
    # ansible-core 2.19 (seen on the nginx fleet with a paused balancer)
    ('Task failed: Timed out after 90 second(s).', ''),
    # the docker connection when the task starts after the pause (seen on the nginx fleet)
    ('Module result deserialization failed: No start of json char found',
     'Error response from daemon: Container ngx-lb2 is paused, unpause the container before exec\n'),
])
def test_a_host_that_freezes_mid_task_is_lost_after_the_task_timeout(message, stderr):
    fleet, state = _at_the_first_drain()
    frozen = fleet.answer(state)
    frozen['balancers']['lb2'] = {'failed': True, 'msg': message, 'module_stderr': stderr}
    engine.record(state, frozen, 4.0)
    assert 'lb2' in state['lost'] and state['halt'] is not None


def test_a_module_that_fails_on_a_live_host_is_not_a_lost_host():
    fleet, state = _at_the_first_drain()
    broken = fleet.answer(state)
    broken['balancers']['lb2'] = {'failed': True, 'msg': 'Module result deserialization failed: No start of json char found',
                                  'module_stderr': 'Traceback (most recent call last):\nSyntaxError\n'}
    engine.record(state, broken, 4.0)
    assert 'lb2' not in state['lost'] and state['halt'] is not None


def test_haproxy_restarted_mid_rollout_halts_and_the_rollback_sets_the_state_again():
    fleet = FakeFleet()
    conf, errors = settings()
    state = engine.new_state(conf, errors, APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    engine.record(state, fleet.answer(state), 2.0)  # lock
    survey = fleet.answer(state)
    for lb in LBS:
        survey['balancers'][lb]['process'] = {'pid': 100, 'uptime_sec': 50}
    engine.record(state, survey, 3.0)
    assert state['lb_pids'] == {'lb1': 100, 'lb2': 100}
    while state['act'].get('phase'):
        engine.record(state, fleet.answer(state), 4.0)
    engine.begin_batch(state, 0, 5.0)
    drained = fleet.answer(state)
    drained['balancers']['lb1']['process'] = {'pid': 100}
    drained['balancers']['lb2']['process'] = {'pid': 222}  # reloaded since the survey
    engine.record(state, drained, 6.0)
    assert 'lb2' in state['halt']['reason'] and 'pid 100 -> 222' in state['halt']['reason']
    assert state['act'] == {} and 'app1' in state['out']  # drained on lb1: the rollback readies it
    engine.begin_rollback(state, 7.0)
    assert state['rollback']['groups'] == [['app1']]


def test_a_lost_app_host_counts_against_max_unavailable_in_the_rollback():
    # 6 hosts, at most 2 out: app3 is lost during its batch (step 3), so only
    # one serving host at a time may be drained to go back.
    fleet = FakeFleet()
    fleet.lose_on = {'switch': 'app3'}
    state = run(fleet, canary_max_unavailable=2, canary_steps=[1, 2, 3, '100%'])
    assert 'app3' in state['lost']
    assert state['rollback']['groups'] == [['app1'], ['app2']]
    assert state['decision'] == 'failed'

    fleet = FakeFleet()
    fleet.lose_on = {'switch': 'app2'}
    state = run(fleet, canary_max_unavailable=1, canary_steps=[1, 2, '100%'])
    # The budget of 1 is used by the lost host: app1 stays on v2 and serving.
    assert state['rollback']['groups'] == []
    assert fleet.versions['app1'] == 'v2' and fleet.admin['app1'] == 'ready'
    assert fleet.out_of_rotation() == ['app2']  # only the lost host, drained before it vanished
    assert any('within canary_max_unavailable=1 while app2 cannot serve: app1' in e for e in state['rollback']['errors'])


def test_a_host_left_out_by_a_failed_rollback_health_check_leaves_no_room_for_more():
    fleet = FakeFleet()
    fleet.crash_on = {'app2'}
    state = run(fleet, canary_max_unavailable=1, canary_steps=[1, 2, '100%'])
    assert state['decision'] == 'rolled_back'  # healthy case: both go back one at a time

    fleet = FakeFleet()
    fleet.crash_on = {'app2'}
    original = fleet.act_on

    def still_sick(role, host, act, phase):
        if phase == 'rollback_health':
            return {'healthy': [u for u in act['urls'] if 'app2' not in u],
                    'unhealthy': [u for u in act['urls'] if 'app2' in u], 'results': {}}
        return original(role, host, act, phase)
    fleet.act_on = still_sick
    state = run(fleet, canary_max_unavailable=1, canary_steps=[1, 2, '100%'])
    # app2 (out, still sick after going back) uses the budget: app1 is not drained.
    assert state['decision'] == 'failed'
    assert fleet.versions['app1'] == 'v2' and fleet.admin['app1'] == 'ready'
    assert max(out for dummy, out in fleet.log) == 1
    errors = [e for r in state['rollback']['records'] for e in r['errors']]
    assert any('still unhealthy after the rollback' in e for e in errors)
    assert any('while app2 cannot serve: app1' in e for e in errors)


def test_url_credentials_never_reach_the_report():
    fleet = FakeFleet()
    fleet.unhealthy = {'app1'}
    conf, errors = settings()
    ident = identities()
    for host in APPS:
        ident[host]['health_url'] = 'http://probe:s3cret@%s/healthz' % host
    state = engine.new_state(conf, errors, APPS, LBS, ident, 'lb1', 1.0, owner='me')
    while state['act'].get('phase'):
        answer = fleet.answer(state)
        if state['act']['phase'] == 'survey':
            # lb1 probes in its backend read, and reports the URLs redacted.
            urls = state['act']['urls']
            answer['balancers']['lb1']['probe'] = engine.redact({
                'healthy': urls[1:], 'unhealthy': urls[:1],
                'results': dict((u, {'ok': u != urls[0], 'last_error': 'status 500'}) for u in urls)})
        engine.record(state, answer, 2.0)
    engine.finish(state, 3.0)
    doc = engine.report(state, str)
    text = json.dumps(doc) + engine.report_markdown(doc)
    assert 's3cret' not in text and 'unhealthy before the rollout: app1 (status 500)' in doc['reason']
    assert engine.redact({'http://u:p@h/x': ['https://a:b@c:1/']}) == {'http://***@h/x': ['https://***@c:1/']}


def test_credentials_in_the_health_and_sample_urls_judge_and_roll_back_like_any_other():
    # The modules key their results by the redacted URL; the run still finds each host's.
    fleet = FakeFleet()
    fleet.bad_canary = True
    conf, errors = settings(canary_max_unavailable=1)
    ident = identities()
    for host in APPS:
        ident[host]['health_url'] = 'http://probe:s3cret@%s/healthz?token=t0k' % host
        ident[host]['sample_url'] = 'http://probe:s3cret@%s/' % host
    state = engine.new_state(conf, errors, APPS, LBS, ident, 'lb1', 1.0, owner='me')
    clock = [2.0]

    def step():
        while state['act'].get('phase'):
            clock[0] += 1
            engine.record(state, fleet.answer(state), clock[0])

    step()
    for index in range(len(state['plan'])):
        engine.begin_batch(state, index, clock[0])
        step()
    engine.begin_rollback(state, clock[0])
    for index in range(len(state['rollback']['groups'])):
        engine.begin_rollback_group(state, index, clock[0])
        step()
    engine.cleanup(state, clock[0])
    step()
    engine.begin_finish(state, clock[0])
    step()
    engine.finish(state, clock[0])
    assert state['steps'][0]['judge']['verdict'] == 'fail'
    # The rollback's health check found app1 healthy again (by its redacted URL) and readied it.
    assert state['decision'] == 'rolled_back', (state['halt'], state['rollback'])
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []
    text = json.dumps(engine.report(state, str))
    assert 's3cret' not in text and 't0k' not in text


def test_a_host_that_was_never_restarted_gets_a_short_rollback_health_deadline():
    fleet = FakeFleet()
    fleet.fail_lb_on = {'drain': 'lb2'}  # app1 drained on lb1, never switched
    deadlines = []
    original = fleet.act_on

    def spy(role, host, act, phase):
        if phase == 'rollback_health':
            deadlines.append(act['deadline'])
        return original(role, host, act, phase)
    fleet.act_on = spy
    run(fleet, canary_health_deadline=60)
    assert deadlines == [engine.NOT_RESTARTED_DEADLINE]

    fleet = FakeFleet()
    fleet.bad_canary = True
    deadlines.clear()
    original = fleet.act_on
    fleet.act_on = spy
    run(fleet, canary_health_deadline=60)
    assert deadlines == [60]


# ---------------------------------------------------------------- hand-over

def _acts(fleet, phase):
    return [act for p, act in fleet.asked if p == phase]


def test_each_ready_drains_the_next_batch_when_nothing_comes_between():
    fleet = FakeFleet()
    # Only the canary judged: no analysis between the later steps.
    state = run(fleet, canary_max_unavailable=1, canary_judge_every_step=False)
    assert state['decision'] == 'promoted'
    assert state['plan'] == [['app1'], ['app2'], ['app3'], ['app4'], ['app5'], ['app6']]
    # Drained by a drain act: the canary (first) only. The batch after the
    # analysis by the canary's weights restore, every later batch by the
    # ready of the one before it, across step boundaries too.
    assert [act['servers'] for act in _acts(fleet, 'drain')] == [['app1']]
    assert [act.get('then_drain') for act in _acts(fleet, 'restore')] == [['app2']]
    assert [act.get('then_drain') for act in _acts(fleet, 'ready')] == [
        None, ['app3'], ['app4'], ['app5'], ['app6'], None]
    handed = [(b['batch'], b['drained_with']) for step in state['steps'] for b in step['batches']
              if b.get('handed_over')]
    assert handed == [(2, 'restore'), (3, 'ready'), (4, 'ready'), (5, 'ready'), (6, 'ready')]
    batch = state['steps'][-1]['batches'][-1]
    assert batch['timings']['drain']['seconds'] == 0.6 and batch['drain']['lb1']['drain'] == {'waited': 0.5}
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v2') for h in APPS) and fleet.out_of_rotation() == []


def test_no_hand_over_across_a_pause_or_into_the_analysis():
    fleet = FakeFleet()
    state = run(fleet, canary_pause=5, canary_steps=[2, 4, '100%'], canary_max_unavailable=1)
    assert state['decision'] == 'promoted'
    # app1 -> app2 inside the canary step, app3 -> app4 inside step 2; none into
    # an analysis (steps 1 and 2 are judged), none across a pause.
    assert [act.get('then_drain') for act in _acts(fleet, 'ready')] == [
        ['app2'], None, ['app4'], None, ['app6'], None]
    assert [act['servers'] for act in _acts(fleet, 'drain')] == [['app1'], ['app3'], ['app5']]
    assert [s['judged'] for s in state['steps']] == [True, True, False]


@pytest.mark.parametrize('server,by,outcomes,rolled_back', [
    # app2's drain comes with the canary's weights restore, app3's with app2's ready.
    ('app2', 'restore', ['ok', 'failed'], ['app1']),
    ('app3', 'ready', ['ok', 'ok', 'failed'], ['app1', 'app2']),
])
def test_a_failed_drain_of_the_next_batch_fails_that_batch_and_everything_goes_back(server, by, outcomes, rolled_back):
    fleet = FakeFleet()
    fleet.fail_then_drain_on = ('lb2', server)
    state = run(fleet, canary_max_unavailable=1, canary_judge_every_step=False)
    assert state['decision'] == 'rolled_back'
    batches = [b for step in state['steps'] for b in step['batches']]
    # The batches before finished; the next one failed in its drain, before any switch.
    assert [b['outcome'] for b in batches] == outcomes
    assert batches[-1]['hosts'] == [server] and batches[-1]['drained_with'] == by
    assert 'drain on lb2' in state['halt']['reason'] and 'batch %d' % len(outcomes) in state['halt']['reason']
    assert server not in state['switched']
    assert sorted(state['rollback']['done']) == rolled_back
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert fleet.out_of_rotation() == [] and fleet.weights == fleet.initial


def test_a_failed_weights_restore_with_a_hand_over_puts_everything_back():
    fleet = FakeFleet()
    fleet.fail_lb_on = {'restore': 'lb1'}  # lb2 restored the weights and drained app2
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'rolled_back'
    assert 'restoring the initial weights on lb1' in state['halt']['reason']
    assert [b['batch'] for step in state['steps'] for b in step['batches']] == [1]
    # app2 was drained (on lb2) but never switched: the rollback readies it, app1 goes back.
    assert 'app2' in state['rollback']['hosts'] and 'app2' not in state['switched']
    assert sorted(state['rollback']['done']) == ['app1']
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v1') for h in APPS)
    assert fleet.out_of_rotation() == [] and fleet.weights == fleet.initial


def _fleet_whose_lb2_fails_app3s_ready():
    """lb2 fails the second ready that hands over (app3's); lb1 drained app4 meanwhile."""
    fleet = FakeFleet()
    calls = []
    answer = fleet.act_on

    def act_on(role, host, act, phase):
        if role == 'balancers' and phase == 'ready' and act.get('then_drain'):
            calls.append(host)
            if host == 'lb2' and calls.count('lb2') == 2:
                return {'failed': True, 'msg': 'health timeout: app3 DOWN'}
        return answer(role, host, act, phase)
    fleet.act_on = act_on
    return fleet


def test_a_failed_ready_with_a_hand_over_keeps_the_fleet_within_max_unavailable():
    fleet = _fleet_whose_lb2_fails_app3s_ready()
    state = run(fleet, canary_max_unavailable=1, canary_judge_every_step=False)
    assert state['decision'] == 'rolled_back'
    assert 'ready on lb2: health timeout' in state['halt']['reason']
    assert sorted(state['rollback']['done']) == ['app1', 'app2', 'app3']
    assert 'app4' in state['rollback']['hosts'] and 'app4' not in state['switched']
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_every_balancer_probes_the_batch_before_its_ready_and_readies_nothing_unhealthy():
    fleet = FakeFleet()
    fleet.sick_on_v2 = {'app3'}
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'rolled_back'
    # No separate health act: the probe came with each ready, on both balancers.
    assert _acts(fleet, 'health') == []
    probes = [act['ready_probe'] for act in _acts(fleet, 'ready')]
    assert [p['urls'] for p in probes] == [['http://app1/healthz'], ['http://app2/healthz'], ['http://app3/healthz']]
    assert all(p['rise'] == 2 and p['interval'] == 0.25 and p['deadline'] == 60 for p in probes)
    batch = state['steps'][-1]['batches'][-1]
    assert batch['hosts'] == ['app3'] and batch['outcome'] == 'failed'
    assert batch['health']['unhealthy'] == ['http://app3/healthz'] and batch['health']['probed_from'] == ['lb1', 'lb2']
    reason = state['halt']['reason']
    assert reason == 'step 3, batch 3: unhealthy: http://app3/healthz (probed from lb1, lb2)', reason
    assert 'ready on' not in reason  # a health failure, not a failed ready
    # Nothing readied app3 and nothing drained app4: one host out at most, all back at the end.
    assert 'app4' not in state['switched'] and fleet.admin['app4'] == 'ready'
    assert sorted(state['rollback']['done']) == ['app1', 'app2', 'app3']
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_server_only_one_balancer_sees_unhealthy_fails_its_batch_as_unhealthy():
    fleet = FakeFleet()
    fleet.unhealthy_from = {'lb2': {'app2'}}
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'rolled_back'
    reason = state['halt']['reason']
    assert reason.startswith('step 2, batch 2: unhealthy: http://app2/healthz (probed from lb2)'), reason
    assert '(probed from lb1)' not in reason
    batch = state['steps'][-1]['batches'][-1]
    # lb1 saw it healthy and readied it; the report shows what the probe host saw and the failure.
    assert batch['health']['unhealthy'] == ['http://app2/healthz'] and batch['health']['healthy'] == []
    assert sorted(state['rollback']['done']) == ['app1', 'app2']
    assert max(out for dummy, out in fleet.log) <= 1
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_probe_host_that_is_no_balancer_keeps_its_own_health_check():
    fleet = FakeFleet()
    fleet.sick_on_v2 = {'app2'}
    state = run(fleet, canary_max_unavailable=1, probe_host='localhost')
    assert state['decision'] == 'rolled_back'
    assert [act['urls'] for act in _acts(fleet, 'health')] == [['http://app1/healthz'], ['http://app2/healthz']]
    assert all(act['probe'] == ['localhost'] and act['rise'] == 2 and act['interval'] == 0.25
               for act in _acts(fleet, 'health'))
    assert not any(act.get('ready_probe') for act in _acts(fleet, 'ready'))
    assert 'unhealthy: http://app2/healthz' in state['halt']['reason']
    assert [len(_acts(fleet, 'ready')), sorted(state['rollback']['done'])] == [1, ['app1', 'app2']]
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_probe_host_whose_health_check_task_fails_is_named_in_the_reason():
    fleet = FakeFleet()
    fleet.fail_lb_on = {'health': 'localhost'}
    state = run(fleet, canary_max_unavailable=1, probe_host='localhost')
    assert state['decision'] == 'rolled_back'
    reason = state['halt']['reason']
    assert reason.startswith('step 1, batch 1: probing health on localhost: cannot connect'), reason
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []


def test_a_failed_ready_before_any_hand_over_leaves_the_next_batch_in_rotation():
    fleet = FakeFleet()
    fleet.fail_lb_on = {'ready': 'lb1'}
    state = run(fleet, canary_max_unavailable=1, canary_steps=[2, '100%'])
    # The canary's first ready (handing over to app2) fails on lb1 and succeeds on
    # lb2, which drains app2 there: app2 counts as out and is put back.
    assert state['decision'] == 'rolled_back'
    assert 'app2' in state['rollback']['hosts'] and fleet.out_of_rotation() == []
    fleet = FakeFleet()
    fleet.fail_lb_on = {'ready': 'lb1'}
    original = fleet.act_on
    fleet.act_on = lambda role, host, act, phase: (
        {'failed': True, 'msg': 'cannot connect'} if role == 'balancers' and phase == 'ready'
        else original(role, host, act, phase))
    state = run(fleet, canary_max_unavailable=1, canary_steps=[2, '100%'])
    # No balancer got to the drain: app2 never left rotation and is not rolled back.
    assert state['decision'] == 'rolled_back'
    assert 'app2' not in state['rollback']['hosts'] and state['rollback']['done'] == ['app1']


def test_every_step_that_leaves_hosts_behind_is_judged_against_them():
    fleet = FakeFleet()
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'promoted'
    # Steps 1, 2, 4, 6 hosts... of 6: targets 1, 2, 3, 6; the last leaves no baseline.
    assert [s['judged'] for s in state['steps']] == [True, True, True, False]
    assert [s['canary'] for s in state['steps']] == [True, False, False, False]
    analyses = _acts(fleet, 'analysis')
    assert [(a['canary'], a['baseline']) for a in analyses] == [
        (['app1'], ['app2', 'app3', 'app4', 'app5', 'app6']),
        (['app2'], ['app3', 'app4', 'app5', 'app6']),
        (['app3'], ['app4', 'app5', 'app6'])]
    # Each look probes its two sides only.
    assert analyses[2]['urls'] == ['http://app3/', 'http://app4/', 'http://app5/', 'http://app6/']
    looks = [s['look'] for s in state['steps'][:3]]
    assert [(l['look'], l['looks']) for l in looks] == [(1, 3), (2, 3), (3, 3)]
    # The three looks' alphas together are at most one look's at canary_confidence.
    assert sum(1 - l['confidence'] for l in looks) <= 1 - 0.995 + 1e-12
    assert all(s['judge']['verdict'] == 'pass' for s in state['steps'][:3])
    # Later steps are at full weight: only the canary's weights are ever changed.
    assert len(_acts(fleet, 'restore')) == 1
    assert any('steps 2, 3 judged too' in line for line in state['plan_lines']), state['plan_lines']


def test_a_release_that_fails_only_from_the_third_step_is_rolled_back():
    fleet = FakeFleet()
    fleet.bad_on_v2 = {'app3'}
    state = run(fleet, canary_max_unavailable=1)
    assert state['decision'] == 'rolled_back', state['halt']
    assert state['halt']['reason'].startswith('step 3, batch 3: step 3 judged fail'), state['halt']['reason']
    assert [s['judge'].get('verdict') for s in state['steps']] == ['pass', 'pass', 'fail']
    assert sorted(state['rollback']['done']) == ['app1', 'app2', 'app3']
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []
    assert max(out for dummy, out in fleet.log) <= 1
    # Only the canary with canary_judge_every_step=false: promoted.
    fleet = FakeFleet()
    fleet.bad_on_v2 = {'app3'}
    assert run(fleet, canary_max_unavailable=1, canary_judge_every_step=False)['decision'] == 'promoted'


def test_a_resumed_run_spends_only_the_looks_the_earlier_run_left():
    fleet = FakeFleet()
    first = run(fleet, canary_max_unavailable=1, canary_pause='manual')
    assert first['decision'] == 'paused' and first['steps'][0]['look']['look'] == 1
    assert first['steps'][0]['look']['looks'] == 3
    again = run(fleet, canary_max_unavailable=1, canary_pause='manual')
    # app1 is done: this run's first judged step is the whole rollout's second look.
    assert again['done_before'] == ['app1']
    assert [(s['look']['look'], s['look']['looks']) for s in again['steps'] if s.get('look')] == [(2, 3)]
    assert sum(1 - look for look in [first['steps'][0]['look']['confidence'],
                                     again['steps'][0]['look']['confidence']]) <= 0.005 * 2 / 3 + 1e-12


def test_no_judged_step_when_no_host_would_stay_behind():
    fleet = FakeFleet(apps=['app1', 'app2'])
    state = run(fleet, canary_steps=['100%'], canary_max_unavailable=1)
    assert state['decision'] == 'promoted'
    assert [s['judged'] for s in state['steps']] == [False] and _acts(fleet, 'analysis') == []


# ---------------------------------------------------------------- the coordinator's own errors

def _everything_back(fleet, state):
    assert fleet.out_of_rotation() == [] and set(fleet.versions.values()) == {'v1'}
    assert fleet.weights == fleet.initial and state['out'] == [] and not state['lock_held']
    # What was staged and never switched to is removed.
    assert sorted(set(state['staged']) - set(state['switched']) - set(state['rollback']['done'])) == \
        sorted(state['unstaged'])


def test_a_batch_begun_out_of_order_halts_and_the_run_still_rolls_back_and_reports():
    # The play bug CI met once: batch 3 included before batch 2.
    fleet = FakeFleet()
    state = run(fleet, canary_steps=[1, 1, '100%'], canary_analysis_count=1, batch_order=[0, 2, 1, 3])
    # Batch 2 had begun (the canary's restore drained it): it fails, and goes back in.
    assert state['halt']['reason'].startswith('step 2, batch 2: internal error in the coordinator (batch): '
                                              'EngineError: batch 3 started out of order (expected 2)')
    assert state['decision'] == 'rolled_back' and state['rollback']['hosts'] == ['app2', 'app1']
    assert state['rollback']['done'] == ['app1']  # app2 never switched: only readied again
    _everything_back(fleet, state)
    assert [p for p, dummy in fleet.asked if p == 'unlock'] == ['unlock']
    doc = engine.report(state, str)
    assert doc['decision'] == 'rolled_back' and 'started out of order' in doc['reason']


def test_an_error_while_recording_a_switch_counts_its_hosts_as_switched(monkeypatch):
    fleet = FakeFleet()
    after_switch = engine.HANDLERS['switch']
    calls = []

    def second_switch_breaks(state, results, now):
        calls.append(1)
        if len(calls) == 2:
            raise KeyError('current')
        after_switch(state, results, now)

    monkeypatch.setitem(engine.HANDLERS, 'switch', second_switch_breaks)
    state = run(fleet, canary_steps=[1, 1, '100%'])
    step2 = state['steps'][1]
    assert step2['outcome'] == 'failed' and step2['batches'][0]['outcome'] == 'failed'
    assert "internal error in the coordinator (record): KeyError: 'current'" in state['halt']['reason']
    # app2 was switched although the engine never took its result: it goes back too, and its version is read.
    assert state['decision'] == 'rolled_back' and sorted(state['rollback']['done']) == ['app1', 'app2']
    assert state['final_versions'] == dict((h, 'v1') for h in APPS)
    _everything_back(fleet, state)
    assert max(out for dummy, out in fleet.log) <= 1


def test_an_error_in_a_rollback_group_is_noted_and_the_run_still_finishes(monkeypatch):
    fleet = FakeFleet()
    fleet.crash_on = {'app4'}
    begin_group = engine.begin_rollback_group

    def second_group_breaks(state, index, now):
        if index == 1:
            raise IndexError('list index out of range')
        return begin_group(state, index, now)

    monkeypatch.setattr(engine, 'begin_rollback_group', second_group_breaks)
    state = run(fleet, canary_max_unavailable=2, canary_steps=[1, '50%', '100%'])
    assert state['rollback']['groups'] == [['app4', 'app5'], ['app1', 'app2'], ['app3']]
    errors = state['rollback']['errors']
    assert errors == ['internal error in the coordinator (rollback_group): IndexError: list index out of range '
                      '(please report it with report.json)']
    # The broken group stays as it was (serving, on v2); the groups around it went back.
    assert sorted(state['rollback']['done']) == ['app3', 'app4', 'app5']
    assert fleet.out_of_rotation() == [] and [h for h in APPS if fleet.versions[h] == 'v2'] == ['app1', 'app2']
    assert state['decision'] == 'failed' and not state['lock_held'] and state['out'] == []
    assert max(out for dummy, out in fleet.log) <= 2
    assert 'internal error in the coordinator' in engine.report_markdown(engine.report(state, str))


def test_an_error_after_the_lock_was_taken_still_releases_it(monkeypatch):
    fleet = FakeFleet()

    def lock_breaks(state, results, now):
        raise TypeError('unhashable')

    monkeypatch.setitem(engine.HANDLERS, 'lock', lock_breaks)
    state = run(fleet)
    assert state['halt']['phase'] == 'preflight' and 'TypeError: unhashable' in state['halt']['reason']
    # Nothing was changed; the versions are read for the report, the lock released by owner.
    assert [p for p, dummy in fleet.asked] == ['lock', 'final_versions', 'unlock']
    assert state['decision'] == 'failed' and not state['lock_held'] and fleet.out_of_rotation() == []


def test_an_error_in_the_finish_is_raised():
    state = engine.new_state(settings()[0], [], APPS, LBS, identities(), 'lb1', 1.0)

    def broken(dummy):
        raise ValueError('no report')

    with pytest.raises(ValueError, match='no report'):
        engine.advance(state, 'finish', broken, lambda: 2.0)


def test_without_a_rollback_plan_the_hosts_never_switched_still_go_back_in(monkeypatch):
    # A double fault: app3's ready fails on lb2 after lb1 drained app4 (the
    # hand-over), then the rollback's own planning breaks.
    fleet = _fleet_whose_lb2_fails_app3s_ready()

    def broken_plan(state, now):
        raise ZeroDivisionError('division by zero')

    monkeypatch.setattr(engine, 'begin_rollback', broken_plan)
    state = run(fleet, canary_max_unavailable=1, canary_judge_every_step=False)
    assert state['rollback']['groups'] == [['app4']] and state['rollback']['done'] == []
    assert state['rollback']['errors'] == [
        'internal error in the coordinator (rollback): ZeroDivisionError: division by zero (please report it '
        'with report.json); not rolled back: app1, app2, app3']
    # app4 (drained, never switched) is back in rotation; the switched hosts serve v2.
    assert fleet.out_of_rotation() == [] and fleet.versions['app4'] == 'v1' and state['out'] == []
    assert [h for h in APPS if fleet.versions[h] == 'v2'] == ['app1', 'app2', 'app3']
    assert state['decision'] == 'failed' and not state['lock_held']
    assert max(out for dummy, out in fleet.log) <= 1


def test_an_error_after_a_promotion_is_a_note_and_the_run_stays_promoted(monkeypatch):
    fleet = FakeFleet()

    def broken(state, now):
        raise RuntimeError('clean-up broke')

    monkeypatch.setattr(engine, 'cleanup', broken)
    # view() (the dispatch) tells the play that a clean-up is due.
    monkeypatch.setattr(engine_dispatch, 'cleanup_due', lambda state: True)
    state = run(fleet)
    assert state['decision'] == 'promoted' and state['rollback']['errors'] == []
    assert state['notes'][-1:] == ['internal error in the coordinator (cleanup): RuntimeError: clean-up broke '
                                   '(please report it with report.json)']
    assert set(fleet.versions.values()) == {'v2'} and fleet.out_of_rotation() == [] and not state['lock_held']


class OldPythonFleet(FakeFleet):
    """app2's modules run under Python 3.8, below what the collection's host-side code needs."""

    def act_on(self, role, host, act, phase):
        result = super(OldPythonFleet, self).act_on(role, host, act, phase)
        if role == 'apps' and phase == 'releases':
            result = dict(result, python='3.8.10' if host == 'app2' else '3.11.2')
        return result


def test_a_host_python_below_the_minimum_is_refused_at_preflight_naming_it():
    fleet = OldPythonFleet()
    state = run(fleet)
    assert state['decision'] == 'failed' and state['halt']['phase'] == 'preflight'
    reason = state['halt']['reason']
    assert 'needs Python 3.9 or newer' in reason and 'app2 (Python 3.8.10)' in reason and 'app1' not in reason
    assert reason.startswith('nothing was changed')
    assert fleet.versions == dict((h, 'v1') for h in APPS) and fleet.out_of_rotation() == []
    # A module that does not say (an older collection's) is not refused for it.
    assert run(FakeFleet())['decision'] == 'promoted'
