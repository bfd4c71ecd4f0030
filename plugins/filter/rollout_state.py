# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter canary_metrics: judge input from HAProxy snapshots and probe samples.

The verify role uses it; the rollout engine calls the same function
(module_utils/_rollout.py) directly. Docs: canary_metrics.yml next to this
file. balancer_consensus, once here too, had no caller and is removed (a
tombstone in meta/runtime.yml names its replacement).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import (
    RolloutError,
    canary_metrics,
)


def _canary_metrics(before, after, backend, canary_servers, baseline_servers, probe_rounds,
                    canary_urls, baseline_urls, min_samples=20):
    try:
        return canary_metrics(before, after, backend, list(canary_servers), list(baseline_servers),
                              list(probe_rounds), list(canary_urls), list(baseline_urls), int(min_samples))
    except RolloutError as exc:
        raise AnsibleFilterError("canary_metrics: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {
            "canary_metrics": _canary_metrics,
        }
