# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback: counts the tasks a playbook starts and executes,
per rollout batch, with their wall time. Not part of the collection.

Enable it for one run only:
    ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=task_counter \\
    TASK_COUNTER_OUT=/tmp/tasks.json ansible-playbook ...

Environment:
  TASK_COUNTER_OUT        JSON file written at the end (required, else nothing is written)
  TASK_COUNTER_BATCH_RE   a task whose name matches starts a new batch (default '^Batch \\| begin')
  TASK_COUNTER_FINISH_RE  after the first batch, a task whose name matches starts the
                          "finish" segment (rollback / report / unlock);
                          default '^(Roll back what was touched|Finish)$'
  TASK_COUNTER_ANALYSIS_RE  tasks matching are also counted apart per segment, so a
                          batch's count can be read "analysis loop aside"
                          (default 'interval by interval')

A task "started" = one v2_playbook_on_task_start (or handler start). It
"executed" when at least one host returned ok, changed, failed or unreachable
for it (a task skipped on every host did not execute); an include_tasks /
include_role that included a file counts as executed. Segment seconds run from
the segment's first task start to the next segment's first task start (the
last one to the end of the playbook; "preflight" from the playbook start).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: task_counter
type: aggregate
short_description: count started and executed tasks per rollout batch (benchmark only)
description:
  - Writes a JSON file (env TASK_COUNTER_OUT) with tasks started and executed and the seconds of
    each segment of a run, preflight, batch 1..N, finish.
requirements:
  - enable with ANSIBLE_CALLBACKS_ENABLED=task_counter
"""

import json
import os
import re
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_counter"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = os.environ.get("TASK_COUNTER_OUT", "")
        self.batch_re = re.compile(os.environ.get("TASK_COUNTER_BATCH_RE") or r"^Batch \| begin")
        self.finish_re = re.compile(os.environ.get("TASK_COUNTER_FINISH_RE")
                                    or r"^(Roll back what was touched|Finish|Rollback \| decide what goes back.*)$")
        self.analysis_re = re.compile(os.environ.get("TASK_COUNTER_ANALYSIS_RE") or r"interval by interval")
        self.t0 = time.time()
        self.tasks = []          # {name, uuid, start, executed, segment}
        self.by_uuid = {}        # task uuid -> the latest record of that task
        self.segment = "preflight"
        self.batches = 0

    # -- task starts -------------------------------------------------------
    def _start(self, task, handler=False):
        # A role's task is shown as "namespace.collection.role : name".
        name = task.get_name().strip().split(" : ", 1)[-1]
        if self.batch_re.search(name):
            self.batches += 1
            self.segment = "batch %d" % self.batches
        elif self.batches and self.segment != "finish" and self.finish_re.search(name):
            self.segment = "finish"
        rec = {"name": name, "start": round(time.time() - self.t0, 3), "executed": False,
               "segment": self.segment, "handler": handler,
               "analysis": bool(self.analysis_re.search(name))}
        self.tasks.append(rec)
        self.by_uuid[task._uuid] = rec

    def v2_playbook_on_start(self, playbook):
        self.t0 = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, handler=True)

    # -- results -----------------------------------------------------------
    def _executed(self, result):
        rec = self.by_uuid.get(result._task._uuid)
        if rec is not None:
            rec["executed"] = True

    def v2_runner_on_ok(self, result, **kwargs):
        self._executed(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._executed(result)

    def v2_runner_on_unreachable(self, result):
        self._executed(result)

    def v2_playbook_on_include(self, included_file):
        rec = self.by_uuid.get(included_file._task._uuid)
        if rec is not None:
            rec["executed"] = True

    # -- summary -----------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        if not self.out:
            return
        end = round(time.time() - self.t0, 3)
        order = []
        segs = {}
        for rec in self.tasks:
            seg = segs.get(rec["segment"])
            if seg is None:
                seg = segs[rec["segment"]] = {"tasks_started": 0, "tasks_executed": 0,
                                              "analysis_tasks_started": 0, "analysis_tasks_executed": 0,
                                              "first_task_at": rec["start"], "first_task": rec["name"]}
                order.append(rec["segment"])
            seg["tasks_started"] += 1
            seg["tasks_executed"] += int(rec["executed"])
            seg["analysis_tasks_started"] += int(rec["analysis"])
            seg["analysis_tasks_executed"] += int(rec["analysis"] and rec["executed"])
        if "preflight" not in segs:
            segs["preflight"] = {"tasks_started": 0, "tasks_executed": 0, "analysis_tasks_started": 0,
                                 "analysis_tasks_executed": 0, "first_task_at": 0.0, "first_task": None}
            order.insert(0, "preflight")
        starts = [0.0 if name == "preflight" else segs[name]["first_task_at"] for name in order] + [end]
        for i, name in enumerate(order):
            segs[name]["seconds"] = round(starts[i + 1] - starts[i], 2)
        data = {
            "seconds": end,
            "tasks_started": len(self.tasks),
            "tasks_executed": sum(1 for rec in self.tasks if rec["executed"]),
            "batches": self.batches,
            "segments": [dict(segs[name], segment=name) for name in order],
            "tasks": self.tasks,
        }
        directory = os.path.dirname(os.path.abspath(self.out))
        os.makedirs(directory, exist_ok=True)
        with open(self.out, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
