# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_progress
type: notification
short_description: One line per rollout step, with elapsed time, for humans and log collectors
description:
  - Prints a compact, timestamped line whenever the rollout playbook enters a
    new step (pre-flight, each batch's drain / release / health / ready, the
    canary analysis, rollback, finish), every failure with its message, and
    the decision published by C(set_stats) at the end.
  - Optionally appends the same events as JSON lines to a file, for log
    shippers or an AWX job's artifacts.
  - Opt-in; enable with C(ANSIBLE_CALLBACKS_ENABLED=grayrelease.canary.rollout_progress).
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  log_file:
    description: Also append every event as a JSON line to this file.
    type: path
    env:
      - name: GRAYRELEASE_PROGRESS_LOG
    ini:
      - section: grayrelease_rollout_progress
        key: log_file
"""

import json
import re
import time

from ansible.plugins.callback import CallbackBase

# Task names of the rollout playbook start with their phase: "Batch 2 | drain ...".
STEP_RE = re.compile(r"^(Pre-flight|Batch|Canary|Verify|Rollback|Finish|Balancers)\s*\|\s*(.*)$")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "grayrelease.canary.rollout_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._start = time.monotonic()
        self._last_step = None
        self._log_file = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._log_file = self.get_option("log_file")

    def _emit(self, event, text, **fields):
        elapsed = time.monotonic() - self._start
        self._display.display("[rollout %7.1fs] %s" % (elapsed, text))
        if self._log_file:
            record = dict(fields, event=event, text=text, elapsed=round(elapsed, 3),
                          time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            with open(self._log_file, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        match = STEP_RE.match(task.get_name().strip())
        if not match:
            return
        step = "%s | %s" % match.groups()
        if step != self._last_step:
            self._last_step = step
            self._emit("step", step, phase=match.group(1))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        msg = result._result.get("msg", "")
        self._emit("failed", "FAILED on %s: %s: %s" % (result._host.get_name(), result._task.get_name(), msg),
                   host=result._host.get_name(), task=result._task.get_name(), msg=str(msg))

    def v2_runner_on_unreachable(self, result):
        self._emit("unreachable", "UNREACHABLE %s: %s" % (result._host.get_name(), result._result.get("msg", "")),
                   host=result._host.get_name())

    def v2_playbook_on_stats(self, stats):
        custom = stats.custom.get("_run", {}) if hasattr(stats, "custom") else {}
        if "canary_decision" in custom:
            self._emit("decision", "decision %s for version %s, report %s" % (
                custom.get("canary_decision"), custom.get("canary_version"), custom.get("canary_report")),
                decision=custom.get("canary_decision"), version=custom.get("canary_version"),
                report=custom.get("canary_report"))
        else:
            self._emit("end", "playbook finished")
