# -*- coding: utf-8 -*-
"""The grayrelease.canary.linear strategy, in real ansible-playbook runs beside ansible.builtin.linear.

The same play runs once on each. A task's `when` records the process that
evaluates it (a pipe lookup appends its parent's pid to a file). On
ansible.builtin.linear that process is a forked worker; on ours it is
ansible-playbook itself. Everything else must be the same: each host's
results, the recap, a looped task and a condition that fails decided by
workers as before, and no_log kept. The hosts are reached through a
connection plugin from a collection (ansible.builtin.local, subclassed) that
records each process that loads it: every worker on linear, ansible-playbook
alone, once, on ours.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _decisions_helpers import VENV_BIN, ansible_env  # noqa: E402  pylint: disable=wrong-import-position

# Not marked slow (two short playbooks, ~5 s): the strategy reaches into ansible-core's
# internals, so every core of the matrix runs it, not only the oldest.

PLAY = r"""
- hosts: all
  gather_facts: false
  tasks:
    - name: Only h2 acts
      ansible.builtin.debug:
        msg: "acting on {{ inventory_hostname }}"
      when: inventory_hostname == 'h2'
    - name: The process that decides
      ansible.builtin.debug:
        msg: never shown
      when: (lookup('ansible.builtin.pipe', 'echo $PPID >> ' ~ pidfile) | length) < 0
    - name: A looped task, decided per item by a worker
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: [1, 2]
      when: inventory_hostname == 'h1'
    - name: A condition that fails, reported as ansible.builtin.linear reports it
      ansible.builtin.debug:
        msg: never shown
      when: not_defined_anywhere
      ignore_errors: true
    - name: A secret task skipped
      ansible.builtin.debug:
        msg: the secret
      no_log: true
      when: inventory_hostname != 'h3'
    - name: An include for h1 only, the process that decides recorded
      ansible.builtin.include_tasks: included.yml
      when: >-
        (lookup('ansible.builtin.pipe', 'echo $PPID >> ' ~ pidfile ~ '.include') | length) == 0
        and inventory_hostname == 'h1'
"""

INCLUDED = r"""
- name: Included for h1
  ansible.builtin.debug:
    msg: "included on {{ inventory_hostname }}"
"""


COUNTING_CONNECTION = r"""
from __future__ import annotations

DOCUMENTATION = '''
    name: counting
    short_description: ansible.builtin.local, recording the processes that load it
    description:
        - ansible.builtin.local; loading this file appends the process id to E(GR_TEST_CONNECTION_LOADS).
    author: test
    extends_documentation_fragment:
        - connection_pipelining
'''

import os

from ansible.plugins.connection.local import Connection as LocalConnection

with open(os.environ['GR_TEST_CONNECTION_LOADS'], 'a') as handle:
    handle.write('%d\n' % os.getpid())


class Connection(LocalConnection):
    transport = 'gtest.conn.counting'
"""


def run(tmp_path, strategy):
    pidfile = tmp_path / ('%s.pids' % strategy)
    loads = tmp_path / ('%s.loads' % strategy)
    play = tmp_path / 'play.yml'
    play.write_text(PLAY)
    (tmp_path / 'included.yml').write_text(INCLUDED)
    plugin_dir = tmp_path / 'collections' / 'ansible_collections' / 'gtest' / 'conn' / 'plugins' / 'connection'
    plugin_dir.mkdir(parents=True, exist_ok=True)
    (plugin_dir / 'counting.py').write_text(COUNTING_CONNECTION)
    env = ansible_env()
    env.update(ANSIBLE_STRATEGY=strategy, ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default',
               ANSIBLE_DEPRECATION_WARNINGS='false', ANSIBLE_CALLBACK_RESULT_FORMAT='json',
               ANSIBLE_FORKS='5', GR_TEST_CONNECTION_LOADS=str(loads),
               ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([str(tmp_path / 'collections'),
                                                         env['ANSIBLE_COLLECTIONS_PATH']]))
    proc = subprocess.Popen([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'h1,h2,h3',
                             '-c', 'gtest.conn.counting',
                             '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', 'pidfile=%s' % pidfile,
                             '-v', str(play)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, dummy = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    deciders = [int(line) for line in pidfile.read_text().split()]
    loaders = [int(line) for line in loads.read_text().split()]
    include_deciders = [int(line) for line in (tmp_path / ('%s.pids.include' % strategy)).read_text().split()]
    return proc.pid, deciders + [('include', pid) for pid in include_deciders], loaders, out


def results(out):
    """Each task's per-host result lines with their bodies, sorted (workers finish in any order)."""
    tasks, current = {}, None
    for line in out.splitlines():
        if line.startswith('TASK ['):
            current = line.split('[', 1)[1].rsplit(']', 1)[0]
            tasks[current] = []
        elif current and line.startswith(('ok: [', 'skipping: [', 'fatal: [', 'changed: [', '...ignoring')):
            tasks[current].append(line)
    return dict((name, sorted(lines)) for name, lines in tasks.items())


def recap(out):
    return out[out.index('PLAY RECAP'):].split()


def test_skips_are_decided_on_the_controller_and_look_the_same(tmp_path):
    builtin_pid, builtin_all, builtin_loaders, builtin_out = run(tmp_path, 'ansible.builtin.linear')
    ours_pid, ours_all, ours_loaders, ours_out = run(tmp_path, 'grayrelease.canary.linear')
    builtin_deciders = [pid for pid in builtin_all if not isinstance(pid, tuple)]
    ours_deciders = [pid for pid in ours_all if not isinstance(pid, tuple)]
    # Three hosts evaluated the condition: in three workers on linear, in ansible-playbook on ours.
    assert len(builtin_deciders) == 3 and builtin_pid not in builtin_deciders, (builtin_pid, builtin_deciders)
    assert ours_deciders == [ours_pid] * 3, (ours_pid, ours_deciders)
    # The include: three workers on linear; on ours ansible-playbook for all three hosts, then the
    # worker of h1 (its condition true) includes the file (whether that worker evaluates the
    # condition again, or reuses the lookup's result, is ansible-core's business).
    builtin_include = [pid for kind, pid in (p for p in builtin_all if isinstance(p, tuple))]
    ours_include = [pid for kind, pid in (p for p in ours_all if isinstance(p, tuple))]
    assert len(builtin_include) == 3 and builtin_pid not in builtin_include, (builtin_pid, builtin_include)
    assert ours_include.count(ours_pid) == 3 and len(ours_include) in (3, 4), (ours_pid, ours_include)
    assert ours_out.count('included on h1') == builtin_out.count('included on h1') == 1
    assert 'included on h2' not in ours_out and 'included on h3' not in ours_out
    assert results(ours_out) == results(builtin_out)
    assert recap(ours_out) == recap(builtin_out)
    assert recap(ours_out).count('skipped=5') == 1  # h3: all but the failing condition's task
    # What a skip says (the same line on both, above): the condition that was false.
    skip = [line for line in ours_out.splitlines() if line.startswith('skipping: [h1]')][0]
    assert json.loads(skip.split(' => ', 1)[1]) == {'false_condition': "inventory_hostname == 'h2'"}
    # The failing condition went to a worker and failed there, ignored as asked.
    assert ours_out.count('not_defined_anywhere') == builtin_out.count('not_defined_anywhere') > 0
    assert 'the secret' not in ours_out
    # The connection plugin: loaded by each worker on linear (one per task a host runs, 3 tasks at
    # least), once and by ansible-playbook on ours, before its first worker started.
    assert len(builtin_loaders) >= 3 and builtin_pid not in builtin_loaders, (builtin_pid, builtin_loaders)
    assert ours_loaders == [ours_pid], (ours_pid, ours_loaders)
