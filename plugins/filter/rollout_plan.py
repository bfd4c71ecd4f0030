# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: rollout_plan.yml and rollout_steps.yml next to this file.

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._plan import (
    DEFAULT_STEPS,
    PlanError,
    plan,
    plan_steps,
)


def _planner(name, function):
    def run(hosts, steps=DEFAULT_STEPS, max_unavailable=None, zones=None, zone_mode='spread', done=None):
        try:
            return function(hosts, steps=steps, max_unavailable=max_unavailable, zones=zones,
                            zone_mode=zone_mode, done=done)
        except PlanError as exc:
            raise AnsibleFilterError('grayrelease.canary.%s: %s' % (name, exc))
    run.__name__ = name
    return run


# The batches in roll order (the design contract's shape), and the same plan
# grouped by step.
rollout_plan = _planner('rollout_plan', plan)
rollout_steps = _planner('rollout_steps', plan_steps)


class FilterModule(object):
    def filters(self):
        return {'rollout_plan': rollout_plan, 'rollout_steps': rollout_steps}
