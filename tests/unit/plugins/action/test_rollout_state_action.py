# -*- coding: utf-8 -*-
"""The coordinator's action plugin around the engine: an engine error halts
the run (the play goes on to its rollback and report), and an error in the
finish still leaves a short report naming it. The plugin is called the way
Ansible calls it, with the task, connection and play context it reads."""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))

from test_engine import APPS, LBS, FakeFleet, identities, run, settings  # noqa: E402  pylint: disable=wrong-import-position

from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.action import rollout_state as coordinator  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils import _engine as engine  # noqa: E402


def call(state, **args):
    task = SimpleNamespace(args=args, async_val=0, check_mode=False, action='grayrelease.canary.rollout_state')
    action = coordinator.ActionModule(task, SimpleNamespace(_shell=SimpleNamespace(tmpdir='/nowhere')),
                                      SimpleNamespace(check_mode=False), None, None)
    return action.run(task_vars={coordinator.FACT: state})


def test_a_batch_begun_out_of_order_comes_back_as_a_halt_not_a_task_failure():
    fleet = FakeFleet()
    state = engine.new_state(settings()[0], [], APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    while state['act'].get('phase'):  # the pre-flight, answered by the fake fleet
        engine.record(state, fleet.answer(state), 2.0)
    assert state['phase'] == 'batches' and state['halt'] is None
    result = call(state, op='batch', index=2)
    new = result['ansible_facts'][coordinator.FACT]
    assert new['halt'] == {'phase': 'batches', 'kind': 'failed', 'reason': (
        'internal error in the coordinator (batch): EngineError: batch 3 started out of order (expected 1) '
        '(please report it with report.json)')}
    assert result['halt'] == new['halt'] and result['act'] == '' and new['act'] == {}
    assert result['ansible_facts'][coordinator.VIEW]['halted'] is True
    # Nothing had begun: the rollback has nothing to put back, the lock is still to be released.
    assert engine.begin_rollback(new, 3.0)['rollback']['groups'] == [] and new['lock_held']


def test_an_error_in_the_finish_fails_the_task_and_leaves_a_short_report(monkeypatch, tmp_path):
    state = run(FakeFleet(), canary_report_dir=str(tmp_path / 'reports'))
    state['decision'] = None

    def broken(state, iso):
        raise KeyError('judge')

    monkeypatch.setattr(engine, 'report', broken)
    with pytest.raises(AnsibleActionFail) as failure:
        call(state, op='finish')
    report_path = tmp_path / 'reports' / 'report.json'
    assert str(failure.value) == ("internal error in the coordinator (finish): 'judge'; a short report is in %s"
                                  % report_path)
    doc = json.loads(report_path.read_text())
    assert doc['decision'] == 'promoted' and doc['version'] == 'v2' and doc['steps'] == []
    assert doc['reason'] == "internal error in the coordinator (report): 'judge' (please report it)"
    assert doc['hosts'] == dict(('app%d' % i, 'v2') for i in range(1, 7))
    assert '<pre>&#x27;judge&#x27;</pre>' in (tmp_path / 'reports' / 'report.html').read_text()
