# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback of the scale harness (bench/bench_scale.py): where
a rollout's wall time goes per batch, and how big the facts and results are
that the controller (and AWX, which stores every result in a job event) carry.
Not part of the collection.

    ANSIBLE_CALLBACK_PLUGINS=bench/scale/callback_plugins ANSIBLE_CALLBACKS_ENABLED=scale_probe \\
    SCALE_PROBE_OUT=/tmp/probe.json ansible-playbook ...

For every task: its start, the time to the next task's start (its full cost,
the strategy's per-host work for skipped hosts included), its action, how many
hosts returned ok/changed, failed, skipped or unreachable. Tasks are put into
segments as bench/callback_plugins/task_counter.py does (preflight, batch N,
finish). Per segment: seconds, coordinator seconds (grayrelease.canary.rollout_state
tasks), work seconds (other tasks some host executed), skip seconds (tasks every
host skipped, includes that included nothing).

Sizes (bytes of the compact JSON): the largest single fact a task returned
(ansible_facts / set_fact, per key), the largest facts of one result, and the
largest whole result (what an AWX / ansible-runner job event carries in
event_data.res), each with its task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: scale_probe
type: aggregate
short_description: per-batch coordinator time and fact / result sizes of a rollout (benchmark only)
description:
  - Writes a JSON file (env SCALE_PROBE_OUT) with per-task and per-segment timings and the largest
    fact and result any task returned.
requirements:
  - enable with ANSIBLE_CALLBACKS_ENABLED=scale_probe
"""

import json
import os
import re
import time

from ansible.plugins.callback import CallbackBase

COORDINATOR_ACTIONS = ("grayrelease.canary.rollout_state", "rollout_state")


def _size(value):
    try:
        return len(json.dumps(value, separators=(",", ":"), default=repr))
    except (TypeError, ValueError, RecursionError):
        return len(repr(value))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "scale_probe"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = os.environ.get("SCALE_PROBE_OUT", "")
        self.batch_re = re.compile(r"^Batch \| begin")
        self.finish_re = re.compile(r"^(Roll back what was touched|Finish|Rollback \| decide what goes back.*)$")
        self.t0 = time.time()
        self.tasks = []
        self.by_uuid = {}
        self.segment = "preflight"
        self.batches = 0
        self.largest_fact = {"bytes": 0}
        self.largest_facts = {"bytes": 0}
        self.largest_result = {"bytes": 0}
        self.results = 0
        self.sized_seconds = 0.0
        self.written = time.time()

    def _start(self, task, handler=False):
        name = task.get_name().strip().split(" : ", 1)[-1]
        if self.tasks and (self.batch_re.search(name) or time.time() - self.written > 30):
            # What is known so far, in case the run is stopped before its end
            # (at every batch start, and at least every 30 s between tasks).
            self._write(partial=True)
        if self.batch_re.search(name):
            self.batches += 1
            self.segment = "batch %d" % self.batches
        elif self.batches and self.segment != "finish" and self.finish_re.search(name):
            self.segment = "finish"
        rec = {"name": name, "action": task.action, "start": time.time() - self.t0, "segment": self.segment,
               "handler": handler, "ok": 0, "failed": 0, "skipped": 0, "unreachable": 0, "last_result": None}
        self.tasks.append(rec)
        self.by_uuid[task._uuid] = rec

    def v2_playbook_on_start(self, playbook):
        self.t0 = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, handler=True)

    def _result(self, result, kind, sized=True):
        rec = self.by_uuid.get(result._task._uuid)
        if rec is None:
            return
        rec[kind] += 1
        rec["last_result"] = time.time() - self.t0
        self.results += 1
        if not sized:
            return
        t = time.monotonic()
        res = result._result
        where = {"task": rec["name"], "host": result._host.get_name(), "segment": rec["segment"]}
        whole = _size(res)
        if whole > self.largest_result["bytes"]:
            self.largest_result = dict(where, bytes=whole)
        facts = res.get("ansible_facts") if isinstance(res, dict) else None
        if isinstance(facts, dict) and facts:
            total = _size(facts)
            if total > self.largest_facts["bytes"]:
                self.largest_facts = dict(where, bytes=total, keys=sorted(facts)[:10])
            for key, value in facts.items():
                size = _size(value)
                if size > self.largest_fact["bytes"]:
                    self.largest_fact = dict(where, bytes=size, fact=key)
        self.sized_seconds += time.monotonic() - t

    def v2_runner_on_ok(self, result, **kwargs):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped", sized=False)

    def v2_playbook_on_include(self, included_file):
        rec = self.by_uuid.get(included_file._task._uuid)
        if rec is not None:
            rec["included"] = rec.get("included", 0) + 1

    def v2_playbook_on_stats(self, stats):
        self._write(partial=False)

    def _write(self, partial):
        self.written = time.time()
        if not self.out:
            return
        end = time.time() - self.t0
        # Called at a batch's start before its task is recorded: every task here is over.
        tasks = [dict(rec) for rec in self.tasks]
        for i, rec in enumerate(tasks):
            nxt = tasks[i + 1]["start"] if i + 1 < len(tasks) else end
            rec["seconds"] = round(nxt - rec["start"], 4)
            rec["start"] = round(rec["start"], 4)
            if rec["last_result"] is not None:
                rec["last_result"] = round(rec["last_result"], 4)
            if rec["action"] in COORDINATOR_ACTIONS:
                rec["kind"] = "coordinator"
            elif rec["ok"] or rec["failed"] or rec["unreachable"] or rec.get("included"):
                rec["kind"] = "work"
            else:
                rec["kind"] = "skip"
        order, segs = [], {}
        for rec in tasks:
            seg = segs.get(rec["segment"])
            if seg is None:
                seg = segs[rec["segment"]] = {"segment": rec["segment"], "tasks": 0, "seconds": 0.0,
                                              "coordinator_seconds": 0.0, "work_seconds": 0.0, "skip_seconds": 0.0,
                                              "coordinator_tasks": 0, "work_tasks": 0, "skip_tasks": 0}
                order.append(rec["segment"])
            seg["tasks"] += 1
            seg["seconds"] += rec["seconds"]
            seg["%s_seconds" % rec["kind"]] += rec["seconds"]
            seg["%s_tasks" % rec["kind"]] += 1
        for seg in segs.values():
            for key in ("seconds", "coordinator_seconds", "work_seconds", "skip_seconds"):
                seg[key] = round(seg[key], 3)
        data = {"seconds": round(end, 3), "tasks": len(tasks), "results": self.results, "partial": partial,
                "sizing_seconds": round(self.sized_seconds, 3),
                "largest_fact": self.largest_fact, "largest_facts": self.largest_facts,
                "largest_result": self.largest_result,
                "segments": [segs[name] for name in order], "task_list": tasks}
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        tmp = self.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
        os.rename(tmp, self.out)
