# -*- coding: utf-8 -*-
"""The rollout_progress callback in real runs: ansible-playbook in a terminal, and ansible-runner as AWX runs it.

A playbook on localhost replays recorded engine states (each in a state file,
named by a set_fact of the grayrelease_rollout_state_file fact, as the
rollout_state tasks write and return them), waits in a
task while a drain is pending (the countdown: batch 2's, with the canary's
weights restore), and ends with the real
rollout_state op=finish, which writes the reports and returns the summary.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _decisions_helpers import REPO, VENV_BIN, ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from _rollout_recording import RealisticFleet, record_run  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils import _state_file as state_file  # noqa: E402

PYTHON = os.path.join(VENV_BIN, 'python')
PLAYBOOK = """
- name: Replay a rollout's states
  hosts: localhost
  gather_facts: false
  vars:
    recorded: "{{ lookup('ansible.builtin.file', 'states.json') | from_json }}"
  tasks:
    - name: A state with the canary's analysis pending
      ansible.builtin.set_fact:
        grayrelease_rollout_state_file: "{{ recorded.analysis }}"

    - name: Canary | probe canary and stable hosts, interval by interval (each item returns `samples`)
      ansible.builtin.debug:
        var: samples
      vars:
        samples: "{{ recorded.intervals[item] }}"
      loop: [0, 1, 2]

    - name: A state with the weights restore and the drain of batch 2 pending
      ansible.builtin.set_fact:
        grayrelease_rollout_state_file: "{{ recorded.drain }}"

    - name: Canary | restore the initial weights on every balancer, then drain batch 2 (waits)
      ansible.builtin.command: sleep 2.6
      changed_when: false

    - name: The state when every batch is done and the lock is released
      ansible.builtin.set_fact:
        grayrelease_rollout_state_file: "{{ recorded.finish }}"

    - name: Finish | decide and write report.json, report.md and report.html
      grayrelease.canary.rollout_state:
        op: finish
"""


def project(tmp_path):
    """The playbook and its recorded states: one with a drain pending, one ready to finish."""
    reports = tmp_path / 'reports'
    events, dummy = record_run(RealisticFleet(), report_dir=str(reports))
    states = [data for kind, data in events if kind == 'state']
    # Batch 2's drain comes with the canary's weights restore (nothing between the two).
    drain = [s for s in states if s['act'].get('phase') == 'restore' and s['act'].get('then_drain') == ['app2']][0]
    finish = [s for s in states if s['phase'] == 'finish' and not s['act']][0]
    analysis = [s for s in states if s['act'].get('phase') == 'analysis'][0]
    intervals = [data for kind, data in events if kind == 'item']
    folder = tmp_path / 'project'
    folder.mkdir()
    (tmp_path / 'state').mkdir(mode=0o700)
    refs = {}
    for name, state in (('analysis', analysis), ('drain', drain), ('finish', finish)):
        refs[name] = state_file.new_ref(str(tmp_path / 'state'))
        state_file.write(refs[name], state)
    recorded = dict(refs, intervals=intervals)
    (folder / 'states.json').write_text(json.dumps(recorded))
    (folder / 'replay.yml').write_text(PLAYBOOK)
    return folder, reports


def env(**more):
    out = ansible_env()
    out['GRAYRELEASE_PROGRESS_WAIT_INTERVAL'] = '1'
    out.update(more)
    return out


def check_view(lines, reports):
    """The view's lines among `lines`, in order: plan, batches, verdict, countdown, summary."""
    view = [line.split('] ', 1)[1] for line in lines if line.startswith('[rollout ')]
    assert 'Rolling demoapp from v1 to v2 on 6 hosts' in view
    assert 'step 1/4 (canary): app1, 10.0% of the traffic at weights app1=5, the other 5 servers 9 each' in view
    assert any(v.startswith('step 1/4, batch 1/6: app1 -> v2: drained 0.8 s') for v in view)
    assert 'verdict: pass, score 100 (score 100 reaches pass_score 95)' in view
    # The intervals as the loop's items completed, once each, before the verdict.
    intervals = [v for v in view if v.startswith('analysis interval ')]
    assert [v[:22] for v in intervals] == ['analysis interval %d/3:' % n for n in (1, 2, 3)]
    assert view.index(intervals[-1]) < view.index('verdict: pass, score 100 (score 100 reaches pass_score 95)')
    drain = 'waiting: initial weights back, then drain app2, '
    waits = [v for v in view if v.startswith(drain)]
    # Every second (wait_interval 1) while the task of at least 2.6 s runs, and none after it (below).
    # On a starved machine the next task of the batch can outlast a second under the same
    # status (the 2.16 lane of stop 27's CI: '... 1 s of max 30 s' again after '6 s'): each
    # wait then counts up from 1 s on its own, whole seconds, never backwards.
    seconds = [int(re.match(re.escape(drain) + r'(\d+) s of max 30 s$', v).group(1)) for v in waits]
    runs = [[]]
    for n in seconds:
        if n == 1 and runs[-1]:
            runs.append([])
        runs[-1].append(n)
    assert len(runs[0]) >= 2, waits
    assert all(run[0] == 1 and run == sorted(set(run)) for run in runs), waits
    # A task that is quick here may still last a second on a loaded machine (the clean-clone CI run's
    # 2.16 lane saw 'waiting: analysis interval 3/3 (10 s each), 2 s'): its wait lines are well formed.
    others = [v for v in view if v.startswith('waiting: ') and not v.startswith(drain)]
    assert all(re.match(r'waiting: .+, \d+ s( of max \d+ s)?$', v) for v in others), others
    # Batch 6 was drained by batch 5's ready (the hand-over): its drain is the module's 0.8 s.
    assert view.index(waits[-1]) < view.index('step 4/4, batch 6/6: app6 -> v2: drained 0.8 s (with the last ready), switched 1.8 s, '
                                              'healthy 0.8 s, ready 0.6 s (4.0 s)')
    assert any(v.startswith('decision: PROMOTED (v1 -> v2) after ') for v in view)
    # From the run's report.json (the finish task returns the report's headline only).
    assert 'steps: 4 of 4, batches 6 of 6; canary verdict pass, score 100' in view, view[-6:]
    assert any(v.startswith('hosts: ') and v.endswith(' on v2') for v in view), view[-6:]
    assert view[-1] == 'report: %s and %s' % (reports / 'report.html', reports / 'report.json')
    for name in ('report.json', 'report.md', 'report.html'):
        assert (reports / name).stat().st_size > 1000
    return view


def test_in_a_terminal_it_replaces_the_task_stream(tmp_path):
    folder, reports = project(tmp_path)
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=%s' % PYTHON, 'replay.yml'],
                          cwd=str(folder), capture_output=True, text=True, timeout=180, check=False,
                          env=env(ANSIBLE_STDOUT_CALLBACK='grayrelease.canary.rollout_progress'))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    check_view(lines, reports)
    # Only the view: no task banners, no recap.
    assert not [line for line in lines if line.startswith(('TASK [', 'PLAY RECAP', 'ok: ['))]


def test_in_awx_its_lines_are_events_of_the_job_output(tmp_path):
    """AWX runs playbooks through ansible-runner with its own stdout callback (awx_display)."""
    folder, reports = project(tmp_path)
    data = tmp_path / 'runner'
    (data / 'inventory').mkdir(parents=True)
    (data / 'inventory' / 'hosts').write_text('localhost ansible_connection=local ansible_python_interpreter=%s\n'
                                              % PYTHON)
    os.symlink(str(folder), str(data / 'project'))
    script = ('import ansible_runner, json, sys\n'
              'r = ansible_runner.run(private_data_dir=sys.argv[1], playbook="replay.yml", quiet=True,\n'
              '    envvars={"ANSIBLE_CALLBACKS_ENABLED": "grayrelease.canary.rollout_progress",\n'
              '             "GRAYRELEASE_PROGRESS_WAIT_INTERVAL": "1"})\n'
              'print(json.dumps({"status": r.status, "rc": r.rc,\n'
              '    "events": [[e.get("event"), e.get("stdout", "")] for e in r.events]}))\n')
    proc = subprocess.run([PYTHON, '-c', script, str(data)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result['status'], result['rc']) == ('successful', 0)
    lines = [line for event, stdout in result['events'] for line in stdout.splitlines()]
    view = check_view(lines, reports)
    # Each view line is an event of its own (AWX shows it in the job output), beside awx_display's own.
    kinds = set(event for event, stdout in result['events'] if stdout.startswith('[rollout '))
    assert kinds == {'verbose'}, kinds
    assert any(event == 'runner_on_ok' for event, dummy in result['events'])
    stdout = (data / 'artifacts').glob('*/stdout')
    assert view[-1] in ''.join(path.read_text() for path in stdout)
