# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the rollout playbook uses to read balancer state and build judge input.

Docs: balancer_consensus.yml and canary_metrics.yml next to this file.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import (
    RolloutError,
    balancer_consensus,
    canary_metrics,
)


def _balancer_consensus(results, backend, servers):
    try:
        return balancer_consensus(results, backend, list(servers))
    except RolloutError as exc:
        raise AnsibleFilterError("balancer_consensus: %s" % exc)


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
            "balancer_consensus": _balancer_consensus,
            "canary_metrics": _canary_metrics,
        }
