# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_progress
type: notification
short_description: A rollout's progress as a person follows it, in a terminal and in an AWX job's output
version_added: 1.0.0
description:
  - "Prints one timestamped line per step and batch of a grayrelease.canary
    rollout (C(step 2/4, batch 3/6: app3 -> v2: drained 0.7 s, switched 1.4 s,
    healthy 0.8 s, ready 0.6 s)), the canary's weights and the traffic share
    set and measured by HAProxy, each analysis interval as it completes
    (canary vs baseline errors and latency), the verdict with its score and
    failing metrics, halts, rollback groups, and a final summary with the
    report paths."
  - "While a task waits long (drain, health deadline, HAProxy ready, analysis,
    C(canary_pause)), prints a countdown line every few seconds, for
    example C(waiting: drain app3, 12 s of max 30 s)."
  - Everything it prints comes from the rollout engine's state (the run's
    state file on the controller, which the C(grayrelease_rollout_state_file)
    fact returned by the C(rollout_state) tasks names), not from task names.
  - As a notification callback it runs beside any stdout callback, AWX's
    included; enable it with C(ANSIBLE_CALLBACKS_ENABLED=grayrelease.canary.rollout_progress).
    In a terminal it can also replace the task stream with
    C(ANSIBLE_STDOUT_CALLBACK=grayrelease.canary.rollout_progress).
  - Optionally appends the same lines as JSON records to a file, for log
    shippers or an AWX job's artifacts.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  log_file:
    description: Also append every line as a JSON record to this file.
    type: path
    env:
      - name: GRAYRELEASE_PROGRESS_LOG
    ini:
      - section: grayrelease_rollout_progress
        key: log_file
  wait_interval:
    description:
      - Seconds between two countdown lines while a task waits; the first
        comes after this long too, so quick tasks print none. 0 turns the
        countdown off.
    type: float
    default: 5
    env:
      - name: GRAYRELEASE_PROGRESS_WAIT_INTERVAL
    ini:
      - section: grayrelease_rollout_progress
        key: wait_interval
"""

import json
import os
import threading
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.api import redact
from ansible_collections.grayrelease.canary.plugins.module_utils._progress import ProgressView, fmt_number
from ansible_collections.grayrelease.canary.plugins.module_utils._state_file import REF_FACT, StateFileError, read

# The fact naming the run's state file: the coordinator (rollout_state, in a
# worker process) writes the state there and this callback (in ansible-playbook
# itself, on the same controller) reads it, before the next coordinator task.
FACT = REF_FACT
# A countdown never outlives its task by more than this, nor prints more lines.
COUNTDOWN_GRACE = 600
COUNTDOWN_MAX_LINES = 500


def _data(result):
    """The result dict (`result` since ansible-core 2.19, `_result` before)."""
    data = getattr(result, 'result', None)
    return data if isinstance(data, dict) else result._result


def _state(data):
    """The state the coordinator task just wrote, or None (no reference, or a file it cannot read:
    the view misses this state, the run goes on)."""
    ref = (data.get('ansible_facts') or {}).get(FACT)
    if not isinstance(ref, dict):
        return None
    try:
        return read(ref)
    except StateFileError:
        return None


def _with_report(data):
    """The finish task's result with the whole report document, read from this run's
    report.json (the result carries its headline only)."""
    run_dir = data.get('report_run_dir')
    if not run_dir or data.get('report_error'):
        return data
    try:
        with open(os.path.join(run_dir, 'report.json'), encoding='utf-8') as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return data
    if not isinstance(doc, dict) or doc.get('decision') != data['report'].get('decision'):
        return data
    return dict(data, report=doc)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'grayrelease.canary.rollout_progress'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._start = time.monotonic()
        self._log_file = None
        self._wait_interval = 5.0
        self._view = ProgressView()
        self._lock = threading.Lock()
        self._countdown = None
        self._coordinator_task = False
        self._unreachable = set()

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._log_file = self.get_option('log_file')
        self._wait_interval = float(self.get_option('wait_interval') or 0)

    def _emit(self, event, lines, **fields):
        with self._lock:
            elapsed = time.monotonic() - self._start
            # The state carries the health and sample URLs as given, with
            # any user:password@ in them; the report redacts them, so must this.
            for text in redact(lines):
                self._display.display('[rollout %7.1fs] %s' % (elapsed, text))
                if self._log_file:
                    record = dict(redact(fields), event=event, text=text, elapsed=round(elapsed, 3),
                                  time=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
                    with open(self._log_file, 'a') as handle:
                        handle.write(json.dumps(record, sort_keys=True) + '\n')

    # -- the countdown while a task waits

    def _stop_countdown(self):
        if self._countdown is not None:
            self._countdown.set()
            self._countdown = None

    def _start_countdown(self, what):
        label, bound = what
        stop = threading.Event()
        self._countdown = stop
        thread = threading.Thread(target=self._count, args=(stop, label, bound, time.monotonic()),
                                  name='rollout_progress countdown', daemon=True)
        thread.start()

    def _count(self, stop, label, bound, started):
        limit = (bound or 0) + COUNTDOWN_GRACE
        for dummy in range(COUNTDOWN_MAX_LINES):
            if stop.wait(self._wait_interval):
                return
            waited = time.monotonic() - started
            if waited > limit:
                return
            text = 'waiting: %s, %d s' % (label, round(waited))
            if bound:
                text += ' of max %s s' % fmt_number(bound)
            self._emit('waiting', [text], waited=round(waited, 1), bound=bound)

    # -- events

    def _countdown_for_task(self):
        self._stop_countdown()
        what = self._view.waiting(coordinator=self._coordinator_task)
        if what and self._wait_interval > 0:
            self._start_countdown(what)

    def v2_playbook_on_task_start(self, task, is_conditional):
        action = getattr(task, 'resolved_action', None) or task.action or ''
        self._coordinator_task = action.endswith('rollout_state')
        self._countdown_for_task()

    def v2_runner_on_ok(self, result):
        data = _data(result)
        state = _state(data)
        if state is not None:
            self._emit('progress', self._view.update(state))
        if isinstance(data.get('report'), dict) and data.get('report_path'):
            self._emit('summary', self._view.summary(_with_report(data)), decision=data['report'].get('decision'))

    def v2_runner_item_on_ok(self, result):
        data = _data(result)
        if isinstance(data.get('samples'), dict):
            lines = self._view.interval(data['samples'])
            self._emit('interval', lines)
            if lines and self._countdown is not None:
                # The next interval's countdown starts from its own beginning.
                self._countdown_for_task()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        data = _data(result)
        msg = ' '.join(str(data.get('msg', '')).split())
        self._emit('failed', ['FAILED on %s: %s: %s' % (result._host.get_name(), result._task.get_name(), msg)],
                   host=result._host.get_name(), task=result._task.get_name(), msg=msg)

    def v2_runner_on_unreachable(self, result):
        host = result._host.get_name()
        if host in self._unreachable:
            return
        self._unreachable.add(host)
        self._emit('unreachable', ['UNREACHABLE %s: %s' % (host, _data(result).get('msg', ''))], host=host)

    def v2_playbook_on_stats(self, stats):
        self._stop_countdown()
        if self._view.finished:
            return
        custom = stats.custom.get('_run', {}) if hasattr(stats, 'custom') else {}
        if 'canary_decision' in custom:
            self._emit('decision', ['decision %s for version %s, report %s' % (
                custom.get('canary_decision'), custom.get('canary_version'), custom.get('canary_report'))],
                decision=custom.get('canary_decision'))
        else:
            self._emit('end', ['playbook finished'])
