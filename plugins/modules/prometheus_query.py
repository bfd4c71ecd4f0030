#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: prometheus_query
short_description: Evaluate PromQL queries over a time window through Prometheus's HTTP API
version_added: 1.0.0
description:
  - Runs each query against Prometheus's HTTP API, as a range query (every point over the
    window, for a samples metric of M(grayrelease.canary.canary_judge)) or as an instant query
    at the window's end (for example C(increase(...[30s])) counts of a ratio metric).
  - The rollout runs it on the probe host (C(canary_probe_from)) after the canary analysis
    window, with the placeholders of C(canary_prometheus_metrics) already filled in per side.
  - A query that fails (Prometheus unreachable, bad PromQL) returns its error and no values
    instead of failing the task, unless O(fail_on_error); what a metric without data means is
    the judge's decision.
  - Read-only; runs in check mode too.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  url:
    description:
      - Prometheus base URL, e.g. C(http://prometheus:9090).
      - C(user:password@) in it is sent as HTTP Basic authentication. It and O(headers) go only to
        this URL's origin; a redirect to another scheme, host or port (https to http included) is
        followed without them.
      - Shown in messages with its credentials redacted (C(user:password@) becomes C(***@), the
        value of a query parameter whose name looks secret, such as C(token), C(***)); Ansible
        masks them in the module's arguments too.
    type: str
    required: true
  queries:
    description: The queries to evaluate.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Key of this query's result.
        type: str
        required: true
      query:
        description: PromQL.
        type: str
        required: true
      type:
        description: C(range) (every point of the window) or C(instant) (at its end).
        type: str
        choices: [range, instant]
        default: range
      step:
        description: Seconds between the points of a range query (default O(window) / 30, at least 1).
        type: float
  window:
    description: Seconds of the window, which ends at O(end).
    type: float
    required: true
  end:
    description: End of the window, epoch seconds (default now, on this host's clock).
    type: float
  timeout:
    description: Seconds per query.
    type: float
    default: 10
  headers:
    description: Extra request headers (for example an auth token); never logged, sent only to the origin of O(url).
    type: dict
  fail_on_error:
    description: Fail the task when any query fails.
    type: bool
    default: false
seealso:
  - module: grayrelease.canary.canary_judge
"""

EXAMPLES = r"""
- name: Error counts of the canary instance over the last 30 s
  grayrelease.canary.prometheus_query:
    url: http://prometheus:9090
    window: 30
    queries:
      - name: errors
        type: instant
        query: sum(increase(demoapp_requests_total{instance="app1:8080",code=~"5.."}[30s]))
      - name: p50
        query: histogram_quantile(0.5, sum by (le) (rate(demoapp_request_duration_seconds_bucket{instance="app1:8080"}[5s])))
  register: prom
"""

RETURN = r"""
answers:
  description: Query name -> what it gave.
  returned: always
  type: dict
  contains:
    values:
      description: Every finite value (range -> every point of every series; instant -> one per series).
      type: list
      elements: float
    series:
      description: Number of series in the answer.
      type: int
    query:
      description: The PromQL sent.
      type: str
    error:
      description: Why the query gave nothing (only when it failed).
      type: str
  sample:
    errors: {values: [3.0], series: 1, query: "sum(increase(demoapp_requests_total{code=~\"5..\"}[30s]))"}
start:
  description: Start of the window (epoch seconds).
  returned: always
  type: float
end:
  description: End of the window (epoch seconds).
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._prometheus import (
    PrometheusError,
    api_url,
    run_queries,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import url_secrets


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', required=True),
            queries=dict(type='list', elements='dict', required=True, options=dict(
                name=dict(type='str', required=True),
                query=dict(type='str', required=True),
                type=dict(type='str', choices=['range', 'instant'], default='range'),
                step=dict(type='float'),
            )),
            window=dict(type='float', required=True),
            end=dict(type='float'),
            timeout=dict(type='float', default=10),
            headers=dict(type='dict', no_log=True),
            fail_on_error=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    # Not no_log: Ansible would then mask the whole URL in every message
    # that names it; only its credentials are masked.
    module.no_log_values.update(url_secrets(params['url']))
    if params['window'] <= 0:
        module.fail_json(msg='window=%s must be a number of seconds > 0' % params['window'])
    try:
        api_url(params['url'], 'up')
    except PrometheusError as exc:
        module.fail_json(msg=str(exc))
    end = params['end'] if params['end'] is not None else time.time()
    results = run_queries(params['url'], params['queries'], end, params['window'], timeout=params['timeout'],
                          headers=params['headers'])
    failed = sorted(name for name, res in results.items() if res.get('error'))
    if failed and params['fail_on_error']:
        module.fail_json(msg='; '.join('%s: %s' % (name, results[name]['error']) for name in failed), answers=results)
    module.exit_json(changed=False, answers=results, start=end - params['window'], end=end)


if __name__ == '__main__':
    main()
