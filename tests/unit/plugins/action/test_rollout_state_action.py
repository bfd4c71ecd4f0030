# -*- coding: utf-8 -*-
"""The coordinator's action plugin around the engine: an engine error halts
the run (the play goes on to its rollback and report), and an error in the
finish still leaves a short report naming it. The plugin is called the way
Ansible calls it, with the task, connection and play context it reads."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))

from test_engine import APPS, LBS, FakeFleet, identities, run, settings  # noqa: E402  pylint: disable=wrong-import-position
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import VENV_BIN, ansible_env  # noqa: E402  pylint: disable=wrong-import-position

from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._lock import run_identity  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.action import rollout_state as coordinator  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils import _state_file as state_file  # noqa: E402


def call(state, directory=None, ref=None, **args):
    """The coordinator called with `state` in a state file (as an earlier call left it) in `directory`,
    by default where a run keeps it (state_dir())."""
    task = SimpleNamespace(args=args, async_val=0, check_mode=False, action='grayrelease.canary.rollout_state')
    # shared_loader_obj given: ansible-core before 2.19 requires it.
    action = coordinator.ActionModule(task, SimpleNamespace(_shell=SimpleNamespace(tmpdir='/nowhere')),
                                      SimpleNamespace(check_mode=False), None, None, None)
    if ref is None:
        ref = state_file.new_ref(str(directory) if directory else state_file.state_dir())
        state_file.write(ref, state)
    return action.run(task_vars={coordinator.FACT: ref})


def test_a_batch_begun_out_of_order_comes_back_as_a_halt_not_a_task_failure(tmp_path):
    fleet = FakeFleet()
    state = engine.new_state(settings()[0], [], APPS, LBS, identities(), 'lb1', 1.0, owner='me')
    while state['act'].get('phase'):  # the pre-flight, answered by the fake fleet
        engine.record(state, fleet.answer(state), 2.0)
    assert state['phase'] == 'batches' and state['halt'] is None
    result = call(state, tmp_path, op='batch', index=2)
    new = state_file.read(result['ansible_facts'][coordinator.FACT])
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
        call(state, tmp_path, op='finish')
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
    # The call worked (no artifact: a halt, the view returned as the fact the next task reads).
    assert 'ok: [localhost]' in coordinator_call and 'halted True' in after
    # -v dumped the whole state (16 KB for 6 hosts) after each of a rollout's
    # 30-odd coordinator tasks, in AWX's job output too. The state is no fact
    # any more; -vvv prints the view and the path of the state file.
    assert '"grayrelease_rollout"' not in coordinator_call
    assert ('"grayrelease_rollout_state_file"' in coordinator_call) is printed, coordinator_call[-2000:]
    if printed:
        path = re.search(r'"path": "([^"]+)"', coordinator_call).group(1)
        assert os.path.isfile(path) and path.startswith(tempfile.gettempdir())
        assert json.load(open(path, encoding='utf-8'))['state']['halt']['phase'] == 'preflight'


def test_the_facts_are_the_view_and_the_state_files_reference_only(tmp_path):
    state = run(FakeFleet(), canary_report_dir=str(tmp_path / 'reports'))
    state['decision'] = None
    directory = tmp_path / 'state'
    directory.mkdir(mode=0o700)
    result = call(state, directory, op='finish')
    facts = result['ansible_facts']
    assert sorted(facts) == [coordinator.FACT, coordinator.VIEW]
    ref = facts[coordinator.FACT]
    assert sorted(ref) == ['path', 'run'] and os.path.dirname(ref['path']) == str(directory)
    assert len(json.dumps(facts)) < 4000 < len(json.dumps(state))
    # The finish returns the report's headline (the role's set_stats reads it); the whole is report.json.
    doc = json.loads((tmp_path / 'reports' / 'report.json').read_text())
    assert result['report'] == dict((k, doc[k]) for k in coordinator.REPORT_SUMMARY)
    assert result['report']['decision'] == 'promoted' and len(json.dumps(result)) < 6000 < len(json.dumps(doc))
    written = state_file.read(ref)
    assert written['decision'] == 'promoted' and written['phase'] == state['phase']
    assert oct(os.stat(ref['path']).st_mode & 0o777) == oct(0o600)
    # No temporary file is left beside it.
    assert os.listdir(str(directory)) == [os.path.basename(ref['path'])]


def test_a_state_file_of_another_run_or_none_fails_naming_the_path(tmp_path):
    state = run(FakeFleet(), canary_report_dir=str(tmp_path / 'reports'))
    ref = state_file.new_ref(str(tmp_path))
    state_file.write(ref, state)
    other = dict(ref, run='0' * 32)
    with pytest.raises(AnsibleActionFail) as failure:
        call(state, tmp_path, ref=other, op='cleanup')
    assert str(failure.value) == ("the rollout state file %s is not this run's (run %r in the file, %r expected)"
                                  % (ref['path'], ref['run'], '0' * 32))
    os.unlink(ref['path'])
    with pytest.raises(AnsibleActionFail) as failure:
        call(state, tmp_path, ref=ref, op='cleanup')
    assert str(failure.value) == ('the rollout state file %s is missing (removed while the run was going on?)'
                                  % ref['path'])
    with pytest.raises(AnsibleActionFail) as failure:
        call(state, tmp_path, ref={}, op='cleanup')
    assert 'op=start must run first' in str(failure.value)


def test_the_state_directory_is_private_to_its_user(tmp_path):
    path = state_file.state_dir(str(tmp_path))
    assert path == str(tmp_path / ('grayrelease-canary-state-%d' % os.getuid()))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    os.chmod(path, 0o755)
    assert state_file.state_dir(str(tmp_path)) == path and oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    # A link planted in a shared /tmp, or another user's directory, is refused.
    os.rmdir(path)
    os.symlink(str(tmp_path), path)
    with pytest.raises(state_file.StateFileError) as refused:
        state_file.state_dir(str(tmp_path))
    assert str(refused.value).startswith('the rollout state directory %s is not a directory of this user' % path)
    if os.getuid() == 0:
        os.unlink(path)
        os.mkdir(path, 0o700)
        os.chown(path, 65534, 65534)
        with pytest.raises(state_file.StateFileError):
            state_file.state_dir(str(tmp_path))


def test_the_start_removes_old_state_files_of_ended_runs_only(tmp_path):
    now = 1796400000.0
    day = state_file.STALE_SECONDS

    def made(age, identity=None, name=None):
        ref = state_file.new_ref(str(tmp_path), now - age)
        path = state_file.write(dict(ref, path=os.path.join(str(tmp_path), name)) if name else ref,
                                {'act': {}}, identity)
        os.utime(path, (now - age, now - age))
        return os.path.basename(path)

    me = state_file.identity_of(run_identity(os.getpid())[1])
    gone = dict(me, controller_start=me['controller_start'] + 1)  # this pid, started at another time: ended
    fresh = made(3600, gone)
    ended = made(day + 60, gone)
    unknown = made(day + 60)
    live = made(3 * day, me)
    other = made(2 * day, name='notes.json')
    tmp = made(0, name='.rollout-x.tmp')
    os.utime(os.path.join(str(tmp_path), tmp), (now - day - 1, now - day - 1))
    removed = state_file.prune(str(tmp_path), now)
    assert sorted(removed) == sorted([ended, unknown, tmp])
    assert sorted(os.listdir(str(tmp_path))) == sorted([fresh, live, other])
