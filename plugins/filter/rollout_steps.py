# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: rollout_steps.yml next to this file.

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._plan import (
    DEFAULT_STEPS,
    PlanError,
    plan_steps,
)


def rollout_steps(hosts, steps=DEFAULT_STEPS, max_unavailable=None, zones=None, zone_mode='spread', done=None):
    try:
        return plan_steps(hosts, steps=steps, max_unavailable=max_unavailable, zones=zones,
                          zone_mode=zone_mode, done=done)
    except PlanError as exc:
        raise AnsibleFilterError('grayrelease.canary.rollout_steps: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'rollout_steps': rollout_steps}
