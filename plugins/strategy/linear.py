# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: linear
short_description: ansible.builtin.linear, with the hosts a task skips decided on the controller
version_added: 1.1.0
description:
  - Runs a play exactly as C(ansible.builtin.linear) does (every host runs a
    task before any host starts the next), except for one thing. When a task's
    C(when) is false for a host, the controller reports that host's task
    skipped itself, instead of starting a worker process that would evaluate
    the same condition and report the same skip.
  - This is what a rollout spends most of its controller's time on. Every
    host of the rollout's play takes part in every task. Each task acts only
    on the hosts the engine names, such as the batch's app hosts or the
    balancers, and every other host skips it. On ansible.builtin.linear, each
    of those skips forks the controller, about 30 ms of CPU each here. On the
    local 6-host fleet, 290 of a rollout's 435 host results are skips. At
    100 hosts, the skips took 10-14 s of every batch.
  - The skip is the same result a worker would send (C(skipped), C(skip_reason),
    C(false_condition)), through the same queue, so callbacks (the default
    one, AWX's, C(grayrelease.canary.rollout_progress)) see the same events,
    including C(v2_runner_on_start).
  - Only a task without a loop or C(delegate_to) is decided here, an
    C(ansible.builtin.include_tasks) included (a skipped include includes
    nothing, whoever reports it), C(include_role) and meta tasks not; and only
    when its condition evaluates cleanly. A condition that raises an error,
    and every other task, goes to a worker as on ansible.builtin.linear.
  - A host's connection plugin is loaded once, by the controller, before
    the first worker for that connection starts. Workers are forked from
    the controller, so they find it loaded. On ansible.builtin.linear, every
    worker loads it again, and a plugin from a collection is compiled from
    its source each time (C(community.docker.docker_api), which pulls in a
    Docker API client, took about a quarter of a worker's CPU).
  - The collection's playbooks set it with the C(strategy) play keyword. A
    play of your own can do the same.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
"""

EXAMPLES = r"""
- name: A play whose tasks each act on a few of many hosts
  hosts: app:balancers
  strategy: grayrelease.canary.linear
  gather_facts: false
  tasks:
    - name: Only the hosts of this batch restart
      ansible.builtin.service:
        name: demoapp
        state: restarted
      when: inventory_hostname in batch_hosts
"""

from ansible import constants as C
from ansible.plugins.loader import connection_loader
from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

try:  # ansible-core 2.19 and later
    from ansible.executor.task_result import _RawTaskResult
except ImportError:  # 2.16 to 2.18
    _RawTaskResult = None
try:  # ansible-core 2.19 and later
    from ansible._internal._templating._engine import TemplateEngine as _Templar
except ImportError:  # 2.16 to 2.18
    from ansible.template import Templar as _Templar

# Tasks a worker runs even to skip: meta, include_role (the strategy tracks
# the roles it ran from their results) and imports (static: never queued).
# include_tasks is decided here: the strategy includes files only from
# results that are not skipped, and a worker's skip of it is the same dict.
_WORKER_ONLY = frozenset(C._ACTION_IMPORT_TASKS) | frozenset(C._ACTION_INCLUDE_ROLE) | frozenset(C._ACTION_META)


class StrategyModule(LinearStrategyModule):

    def __init__(self, *args, **kwargs):
        super(StrategyModule, self).__init__(*args, **kwargs)
        self._connections_loaded = set()

    def _queue_task(self, host, task, task_vars, play_context):
        skipped = self._skip_on_controller(task, task_vars, play_context)
        if skipped is None:
            self._load_connection_plugin(task, task_vars, play_context)
            return super(StrategyModule, self)._queue_task(host, task, task_vars, play_context)
        # The bookkeeping of the base class's _queue_task, then the result a
        # worker would have sent, on the queue its results come through.
        self._queued_task_cache[(host.name, task._uuid)] = {
            'host': host,
            'task': task,
            'task_vars': task_vars,
            'play_context': play_context,
        }
        self._tqm.send_callback('v2_runner_on_start', host, task)
        if _RawTaskResult is not None:
            self._final_q.send_task_result(_RawTaskResult(host=host, task=task, return_data=skipped,
                                                          task_fields=task.dump_attrs()))
        else:
            self._final_q.send_task_result(host.name, task._uuid, skipped, task_fields=task.dump_attrs())
        self._pending_results += 1
        return None

    def _load_connection_plugin(self, task, task_vars, play_context):
        """Load the host's connection plugin in this process, once, so that the workers forked from it
        find it in the plugin loader's cache instead of each loading (compiling) it again."""
        if task.delegate_to:
            return  # the delegated host's connection is resolved by the worker
        name = task_vars.get('ansible_connection') or play_context.connection
        if not isinstance(name, str) or '{' in name or name in self._connections_loaded:
            return
        self._connections_loaded.add(name)
        try:
            connection_loader.get(name, class_only=True)
        except Exception:  # pylint: disable=broad-except
            pass  # the worker loads it again and reports any error, as on ansible.builtin.linear

    def _skip_on_controller(self, task, task_vars, play_context):
        """The skip result of `task` on this host, or None when a worker must decide (or run it)."""
        if not task.when or task.loop_with or task.loop is not None or task.delegate_to \
                or task.action in _WORKER_ONLY:
            return None
        try:
            if hasattr(task, '_resolve_conditional'):  # 2.19
                context = {}
                if task._resolve_conditional(task.when, dict(task_vars), result_context=context):
                    return None
                skipped = dict(changed=False, skipped=True, skip_reason='Conditional result was False')
                skipped.update(context)
                task.update_result_no_log(_Templar(loader=self._loader, variables=task_vars), skipped)
                return skipped
            templar = _Templar(loader=self._loader, variables=task_vars)
            passed, false_condition = task.evaluate_conditional_with_result(templar, dict(task_vars))
            if passed:
                return None
            no_log = play_context.no_log if task.no_log is None else templar.template(task.no_log)
            return dict(changed=False, skipped=True, skip_reason='Conditional result was False',
                        false_condition=false_condition, _ansible_no_log=bool(no_log))
        except Exception:  # pylint: disable=broad-except
            # The worker evaluates it again and reports the error as linear does.
            return None
