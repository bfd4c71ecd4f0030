#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: http_sample
short_description: Send a fixed number of HTTP requests to each target and keep every sample
version_added: 1.0.0
description:
  - Sends O(count) GET requests to every target, in rounds spread evenly over
    O(duration) seconds, all targets of a round in parallel.
  - Keeps every latency and outcome, so baseline and canary hosts can be
    compared by M(grayrelease.canary.canary_judge). The verify role uses it
    during the canary analysis.
  - A request counts as an error when it gets no answer, times out, or its
    status is not in O(status_codes).
  - Read-only towards the targets (GET only); runs in check mode too.
  - Like M(grayrelease.canary.health_check) it connects directly and follows no redirect, so
    O(headers) never reach another host than the target's; URLs appear in the result (as keys of
    RV(samples)) and in messages with their credentials redacted (C(user:password@) becomes
    C(***@), the value of a query parameter whose name looks secret, such as C(token), C(***)).
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  targets:
    description:
      - URLs (http or https) to sample.
      - C(user:password@) in a URL is not sent; give credentials in O(headers).
    type: list
    elements: str
    required: true
  count:
    description: Requests per target.
    type: int
    default: 10
  duration:
    description:
      - Seconds over which the rounds are spread (the module takes about this long).
      - Rounds start on time even when requests of an earlier round are still running, so a slow
        target delays neither the other targets nor its own later requests. The module returns
        within O(duration) plus O(timeout).
    type: float
    default: 10
  timeout:
    description:
      - Seconds one request may take in all, connect, TLS handshake, sending, and the response
        headers and body. A response still arriving then is cut off and counts as an error.
    type: float
    default: 5
  status_codes:
    description: HTTP statuses that count as success.
    type: list
    elements: int
    default: [200]
  headers:
    description: Extra request headers (for example an auth token); never logged.
    type: dict
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  ca_path:
    description: CA bundle file or directory used to verify TLS certificates.
    type: path
  concurrency:
    description: Most requests in flight at once.
    type: int
    default: 64
seealso:
  - module: grayrelease.canary.health_check
  - module: grayrelease.canary.canary_judge
"""

EXAMPLES = r"""
- name: Sample the canary and a baseline host for 10 s
  grayrelease.canary.http_sample:
    targets:
      - http://app1:8080/
      - http://app2:8080/
    count: 20
    duration: 10
  delegate_to: lb1
  register: samples

- name: Judge their latencies
  grayrelease.canary.canary_judge:
    metrics:
      - name: latency
        kind: samples
        baseline: "{{ samples.samples['http://app2:8080/'].latencies_ms }}"
        canary: "{{ samples.samples['http://app1:8080/'].latencies_ms }}"
"""

RETURN = r"""
samples:
  description: Per target URL (credentials redacted), what the requests gave.
  returned: always
  type: dict
  contains:
    total:
      description: Requests sent.
      type: int
    errors:
      description: Requests without an answer, timed out, or with a status outside O(status_codes).
      type: int
    latencies_ms:
      description: Latency of every answered request, in milliseconds, in order.
      type: list
      elements: float
    statuses:
      description: HTTP status (as a string) -> count; C(-) counts requests without an answer.
      type: dict
    reasons:
      description: The first few failure reasons.
      type: list
      elements: str
  sample:
    http://app1:8080/:
      total: 3
      errors: 1
      latencies_ms: [3.1, 2.9, 3.4]
      statuses: {"200": 2, "500": 1}
      reasons: ["status 500, expected one of [200]"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._health import (
    OVERRIDES,
    HealthError,
    build_targets,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import url_secrets
from ansible_collections.grayrelease.canary.plugins.module_utils._sample import sample


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type='list', elements='str', required=True),
            count=dict(type='int', default=10),
            duration=dict(type='float', default=10),
            timeout=dict(type='float', default=5),
            status_codes=dict(type='list', elements='int', default=[200]),
            headers=dict(type='dict', no_log=True),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            concurrency=dict(type='int', default=64),
        ),
        supports_check_mode=True,
    )
    params = module.params
    # targets cannot be no_log, they are returned; their credentials are
    # redacted in the result, and this masks them in the invocation too.
    module.no_log_values.update(url_secrets(params['targets']))
    # Target settings this module has options for; the other checks of
    # health_check (body, JSON, latency limit) stay off, rise is moot.
    defaults = dict((key, params.get(key)) for key in OVERRIDES)
    defaults['rise'] = 1
    try:
        targets = build_targets(params['targets'], defaults)
        samples = sample(targets, count=params['count'], duration=params['duration'],
                         concurrency=params['concurrency'])
    except HealthError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, samples=samples)


if __name__ == '__main__':
    main()
