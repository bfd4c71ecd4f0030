# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole rollout through the engine, recorded the way the progress callback sees it.

The engine is driven with test_engine.FakeFleet's answers, on a clock that
moves as a real run does (drain, switch, health, ready take their seconds,
the analysis its intervals), with probe latencies that vary and HAProxy
counters that give the canary about its share of the traffic. The
recording is the sequence of what reaches the callback: the state after
every coordinator call, the probe result of every analysis interval as it
completes, and the finish result. Used by test_progress.py and
test_report_html.py.
"""
from __future__ import annotations

import copy
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'module_utils'))

from test_engine import APPS, BATCH_TASK_ORDER, LBS, FakeFleet, identities, settings  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine  # noqa: E402

# Seconds each act takes on the local fleet (measured in `make rollout` runs).
SECONDS = {'lock': 0.4, 'survey': 0.6, 'releases': 1.9, 'drain': 0.8, 'switch': 1.5, 'health': 0.8, 'ready': 0.6,
           'restore': 0.5, 'final_versions': 0.5, 'unlock': 0.4, 'rollback_drain': 0.8, 'rollback_switch': 1.4,
           'rollback_health': 0.8, 'rollback_ready': 0.6, 'cleanup_weights': 0.5, 'unstage': 0.6}


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


class RealisticFleet(FakeFleet):
    """FakeFleet with noisy probe latencies and HAProxy counters in proportion to the weights."""

    def __init__(self, bad_canary=False, seed=7, **kwargs):
        super(RealisticFleet, self).__init__(**kwargs)
        self.bad_canary = bad_canary
        self.random = random.Random(seed)

    def info(self, after=False, canary=None):
        info = super(RealisticFleet, self).info(after=after, canary=canary)
        table = info['backends']['demoapp']
        total = sum(self.weights.values())
        for host, row in table.items():
            # 30 req/s for 30 s through the balancer, split by weight.
            row['req_tot'] = int(900 * self.weights[host] / total) if after else 0
            bad = self.bad_canary and canary is not None and host in engine.canary_hosts(canary)
            row['hrsp_5xx'] = row['req_tot'] // 3 if after and bad else 0
        return info

    def samples(self, act, state):
        canary_urls = ['http://%s/' % h for h in engine.canary_hosts(state)]
        rounds = []
        for dummy in range(act['count']):
            samples = {}
            for url in act['urls']:
                canary = url in canary_urls
                centre = 7.6 if canary else 6.8
                errors = self.random.randint(5, 9) if canary and self.bad_canary else 0
                samples[url] = {'total': 20, 'errors': errors,
                                'latencies_ms': [round(self.random.gauss(centre, 0.9), 3) for dummy2 in range(20)]}
            rounds.append({'samples': samples})
        return {'results': rounds}


def record_run(fleet, report_dir='/tmp/canary-reports', **over):
    """(events, final state): events are ('state', state), ('item', samples), ('finish', result)."""
    clock = [1796400000.0]
    events = []
    over.setdefault('canary_analysis_count', 3)
    over.setdefault('canary_analysis_interval', 10)
    over.setdefault('canary_report_dir', report_dir)
    conf, errors = settings(**over)

    def now(seconds=0.3):
        clock[0] += seconds
        return clock[0]

    def snapshot():
        events.append(('state', copy.deepcopy(state)))

    state = engine.new_state(conf, errors, fleet.apps, LBS, identities(fleet.apps), 'lb1', now(), owner='me')
    snapshot()

    def drain_acts(in_batch=False):
        last = -1
        while state['act'].get('phase'):
            phase = state['act']['phase']
            if in_batch:
                # batch.yml's task order: a handed-over batch's switch waits for the next iteration.
                if BATCH_TASK_ORDER.index(phase) <= last:
                    break
                last = BATCH_TASK_ORDER.index(phase)
            answer = fleet.answer(state)
            seconds = SECONDS.get(phase, 0.3)
            if state['act'].get('ready_probe'):
                # The balancers' probe before the ready takes a health check's time.
                seconds += SECONDS['health']
                for result in answer['balancers'].values():
                    if 'probe' in result:
                        result['probe']['elapsed'] = SECONDS['health']
            if state['act'].get('then_drain'):
                # And the next batch's drain at the end of the call, a drain's time.
                seconds += SECONDS['drain']
                for result in answer['balancers'].values():
                    if 'then_drain' in result:
                        result['then_drain']['seconds'] = SECONDS['drain']
            if phase == 'analysis':
                for interval in answer['samples']['probe']['lb1']['results']:
                    now(float(state['act']['interval']))
                    events.append(('item', interval['samples']))
                seconds = 0.3
            engine.record(state, answer, now(seconds))
            snapshot()

    drain_acts()
    for index in range(len(state['plan'])):
        if state['halt'] is not None:
            break
        engine.begin_batch(state, index, now())
        snapshot()
        drain_acts(in_batch=True)
    engine.begin_rollback(state, now())
    view = engine.view(state)
    if view['rollback_groups'] or view['cleanup_due']:  # main.yml's condition for the rollback's tasks
        for index in range(len(state['rollback']['groups'])):
            engine.begin_rollback_group(state, index, now())
            snapshot()
            drain_acts()
        engine.cleanup(state, now())
        drain_acts()
    engine.begin_finish(state, now())
    snapshot()
    drain_acts()
    engine.finish(state, now())
    snapshot()
    doc = engine.report(state, iso)
    events.append(('finish', {'report': doc, 'report_path': os.path.join(report_dir, 'report.json'),
                              'report_html': os.path.join(report_dir, 'report.html')}))
    return events, state


__all__ = ['APPS', 'RealisticFleet', 'record_run', 'iso']
