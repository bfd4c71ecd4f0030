# -*- coding: utf-8 -*-
"""The coordinator's action plugin around the engine: an engine error halts
the run (the play goes on to its rollback and report), and an error in the
finish still leaves a short report naming it. The plugin is called the way
Ansible calls it, with the task, connection and play context it reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))

from test_engine import APPS, LBS, FakeFleet, identities, run, settings  # noqa: E402  pylint: disable=wrong-import-position
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import VENV_BIN, ansible_env  # noqa: E402  pylint: disable=wrong-import-position

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


PLAYBOOK = """
- name: One coordinator call in a real run
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Pre-flight | check every input and name the participants
      grayrelease.canary.rollout_state:
        op: start
    - name: What the play reads afterwards
      ansible.builtin.debug:
        msg: "halted {{ grayrelease_rollout_view.halted }}"
"""


def run_verbose(tmp_path, verbosity):
    (tmp_path / 'play.yml').write_text(PLAYBOOK)
    (tmp_path / 'hosts').write_text('[app]\napp1 ansible_connection=local\n[balancers]\nlb1 ansible_connection=local\n'
                                    '[all:vars]\ncanary_version=v2\n')
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'hosts', '-c', 'local', 'play.yml',
                           '-e', 'ansible_python_interpreter=%s' % sys.executable, '-' + 'v' * verbosity],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=180, check=False,
                          env=ansible_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split('TASK [What the play reads afterwards]')


@pytest.mark.parametrize('verbosity,printed', [(1, False), (2, False), (3, True)])
def test_the_state_is_not_printed_after_every_coordinator_call_below_vvv(tmp_path, verbosity, printed):
    coordinator_call, after = run_verbose(tmp_path, verbosity)
    # The call worked (no artifact: a halt, the state returned as the fact the next task reads).
    assert 'ok: [localhost]' in coordinator_call and 'halted True' in after
    # -v dumped the whole state (16 KB for 6 hosts) after each of a rollout's
    # 30-odd coordinator tasks, in AWX's job output too.
    assert ('"grayrelease_rollout"' in coordinator_call) is printed, coordinator_call[-2000:]
