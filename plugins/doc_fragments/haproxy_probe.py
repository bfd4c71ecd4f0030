# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """The O(probe) option of haproxy_server and haproxy_info (argument spec: module_utils/_haproxy.py PROBE_SPEC)."""

    DOCUMENTATION = r"""
options:
  probe:
    description:
      - HTTP checks run from this host, where HAProxy probes from, as M(grayrelease.canary.health_check)
        runs them (HTTP 200, each URL healthy O(probe.rise) times in a row), returned as RV(probe) with
        any C(user:password@) in their URLs redacted. What an unhealthy URL does is in the module's description.
      - Runs in check mode too (it only reads).
    type: dict
    version_added: 1.1.0
    suboptions:
      urls:
        description: URLs to check, e.g. C(http://app1:8080/healthz).
        type: list
        elements: str
        required: true
      rise:
        description: Consecutive passing checks each URL needs.
        type: int
        default: 2
      interval:
        description: Seconds between check rounds.
        type: float
        default: 0.25
      deadline:
        description: Seconds after which a URL not yet healthy counts as unhealthy.
        type: float
        default: 60
      timeout:
        description: Seconds allowed for one HTTP request.
        type: float
        default: 5
"""
