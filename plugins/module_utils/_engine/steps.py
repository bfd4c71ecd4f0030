# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan's geometry: where a batch sits in its step, which hosts are the
canary and the baseline at a step, and which steps are judged (the looks the
sequential rule shares the confidence between).
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._plan import canary_hosts as plan_canary_hosts

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import EngineError


def position(state, index):
    """(step index, batch index within the step) of plan batch `index`."""
    count = 0
    for step_index, step in enumerate(state['plan_steps']):
        if index < count + len(step):
            return step_index, index - count
        count += len(step)
    raise EngineError('batch %d is not in the plan' % index)


def canary_hosts(state):
    return plan_canary_hosts(state['done_before'], state['plan_steps'])


def sides(state, step_index, plan_steps_=None, done=None):
    """(canary, baseline) of step `step_index`'s analysis: the step's own hosts (the
    first step's with the hosts done before) against the hosts still on the old
    release (operators' hosts aside). Of this run's plan, or of `plan_steps_` with `done`."""
    steps = state['plan_steps'] if plan_steps_ is None else plan_steps_
    done = state['done_before'] if done is None else done
    rolled = set(done)
    for step in steps[:step_index]:
        rolled.update(h for batch in step for h in batch)
    own = [h for batch in steps[step_index] for h in batch]
    canary = (list(done) if step_index == 0 else []) + own
    baseline = [h for h in state['app_hosts'] if h not in rolled and h not in own and h not in state['held']]
    return canary, baseline


def judged_steps(state, plan_steps_, done):
    """The indexes of the judged steps of a plan: the first, and every later one with
    canary_judge_every_step; each only if hosts stay behind on the old release to compare it with."""
    return [i for i in range(len(plan_steps_))
            if (i == 0 or state['settings'].get('judge_every_step')) and sides(state, i, plan_steps_, done)[1]]


def is_judged(state, step_index):
    """Is step `step_index` of this run judged?"""
    return step_index in judged_looks(state)


def judged_looks(state):
    """This run's judged steps' indexes: the sequential rule shares the confidence among them."""
    return judged_steps(state, state['plan_steps'], state['done_before'])
