#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: health_check
short_description: Probe HTTP(S) health endpoints concurrently until they are healthy
version_added: 1.0.0
description:
  - Sends HTTP(S) GET requests to every target until each one has been healthy O(rise) times
    in a row or the O(deadline) passes.
  - Probing runs in rounds. Every round probes all targets that are not yet healthy in parallel
    (at most O(concurrency) requests at once); rounds start O(interval) seconds apart. A target
    that reached O(rise) consecutive healthy answers is not probed again. A failed probe resets
    its count.
  - A probe is healthy when the status code is in O(status_codes), the answer came within
    O(max_latency_ms) (when set), the body matches O(body_regex) (when set), and the JMESPath
    O(json_query) on the JSON body equals O(json_expect) (when set).
  - Works on the controller and on any host it is delegated to, for example a load balancer
    that reaches the application hosts the way HAProxy does. Needs only the Python standard
    library, plus C(jmespath) when O(json_query) is used.
  - Connects directly to each URL; proxy environment variables are ignored and redirects are not
    followed (add 3xx codes to O(status_codes) to accept them), so O(headers) never reach another
    host than the target's.
  - URLs appear in the result and in messages with their credentials redacted, the URLs given in
    O(targets) too (as keys of RV(results) and in RV(healthy) and RV(unhealthy)) - C(user:password@)
    (up to the last C(@) before the host) becomes C(***@), and the value of a query parameter whose
    name looks secret (C(token), C(access_token), C(api_key), C(password), C(secret), C(sig),
    C(X-Amz-Signature) and the like) becomes C(***). Ansible masks them in the module's arguments
    too.
author:
  - grayrelease.canary maintainers (@grayrelease)
requirements:
  - jmespath (only when O(json_query) is used, on the host that runs the module)
attributes:
  check_mode:
    support: full
    description: Probes only read, so the module probes in check mode too and returns real results.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
options:
  targets:
    description:
      - The URLs to probe, C(http://) or C(https://).
      - An item may be a dict with C(url) and any of O(status_codes), O(body_regex), O(json_query),
        O(json_expect), O(max_latency_ms), O(rise), O(timeout), O(headers), O(validate_certs),
        O(ca_path) to override the module-wide value for that target. Per-target O(headers) are
        merged over the module-wide ones.
      - Per-target headers are not hidden from logs; put secrets in the module-wide O(headers).
      - C(user:password@) in a URL is not sent; give credentials in O(headers).
      - URLs must be unique.
    type: list
    elements: raw
    required: true
  status_codes:
    description: HTTP status codes that count as healthy.
    type: list
    elements: int
    default: [200]
  body_regex:
    description: A Python regular expression the body (decoded as UTF-8) must contain (C(re.search)).
    type: str
  json_query:
    description:
      - A JMESPath expression evaluated on the body parsed as JSON.
      - Without O(json_expect) the result must be non-empty (not null, false, 0, "" or empty).
      - Needs the C(jmespath) Python library where the module runs; without it the module fails
        with a missing-library message.
    type: str
  json_expect:
    description:
      - The value O(json_query) must return. A string also matches the JSON spelling of a
        number or boolean result (V("true") matches V(true)); V(true) never matches V(1).
    type: raw
  max_latency_ms:
    description: A probe that takes longer than this many milliseconds counts as unhealthy.
    type: float
  rise:
    description: Number of consecutive healthy probes that make a target healthy.
    type: int
    default: 2
  interval:
    description: Seconds between the starts of two probing rounds.
    type: float
    default: 1
  timeout:
    description:
      - Seconds one request may take in all, connect, TLS handshake, sending, and the response
        headers and body. A response still arriving then (a server that trickles bytes) is cut
        off and the probe fails as timed out.
    type: float
    default: 5
  deadline:
    description:
      - Seconds after which no new probing round starts; the targets not healthy by then are
        reported unhealthy.
      - A round that started before the deadline finishes, so the module returns within
        O(deadline) plus O(timeout). No request starts after the deadline, also in a round with
        more targets than O(concurrency).
    type: float
    default: 60
  headers:
    description: Extra request headers, for example C(Authorization) or C(Host). Not logged.
    type: dict
  validate_certs:
    description:
      - Verify the TLS certificate and host name of C(https://) targets.
      - Set to V(false) only for test setups; prefer O(ca_path) for a private CA.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file (or an OpenSSL hashed directory) of CA certificates used instead of the system
        trust store to verify C(https://) targets, on the host that runs the module.
    type: path
  fail_on_unhealthy:
    description:
      - Fail the task when a target is unhealthy at the deadline. The failure message names each
        unhealthy target and why. With V(false) the results are returned and the task succeeds.
    type: bool
    default: true
  concurrency:
    description:
      - The most requests in flight at once (one thread each). The default probes a few hundred
        targets in a single round; the bound keeps a fleet of thousands from opening thousands of
        sockets at once on the probing host.
    type: int
    default: 256
notes:
  - Latency figures are nearest-rank percentiles over all probes that got an HTTP answer.
seealso:
  - module: grayrelease.canary.canary_judge
  - module: grayrelease.canary.haproxy_server
'''

EXAMPLES = r'''
- name: Wait until the new batch answers its health endpoint twice in a row
  grayrelease.canary.health_check:
    targets: "{{ batch | map('extract', hostvars, 'canary_health_url') | list }}"
    rise: 2
    interval: 1
    deadline: 120

- name: Probe from the first balancer, the way HAProxy reaches the hosts
  grayrelease.canary.health_check:
    targets:
      - http://10.0.0.11:8080/healthz
      - http://10.0.0.12:8080/healthz
    json_query: status
    json_expect: ok
    max_latency_ms: 500
  delegate_to: "{{ groups['balancers'][0] }}"

- name: HTTPS with a private CA, a token, and one target with its own rules
  grayrelease.canary.health_check:
    targets:
      - https://app1.internal:8443/healthz
      - url: https://app2.internal:8443/ready
        status_codes: [200, 204]
        body_regex: '"ready":\s*true'
    ca_path: /etc/pki/internal-ca.pem
    headers:
      Authorization: "Bearer {{ health_token }}"

- name: Collect results without failing
  grayrelease.canary.health_check:
    targets: "{{ canary_urls }}"
    fail_on_unhealthy: false
    deadline: 30
  register: probe

- name: Show the slow ones
  ansible.builtin.debug:
    msg: "{{ item.key }} p95 {{ item.value.latency_ms.p95 }} ms"
  loop: "{{ probe.results | dict2items }}"
'''

RETURN = r'''
healthy:
  description: URLs that reached O(rise) consecutive healthy probes, in target order, credentials redacted.
  returned: always
  type: list
  elements: str
  sample: [http://10.0.0.11:8080/healthz]
unhealthy:
  description: URLs that were not healthy at the deadline, in target order, credentials redacted.
  returned: always
  type: list
  elements: str
  sample: [http://10.0.0.12:8080/healthz]
results:
  description: Per URL (credentials redacted), the outcome and figures of its probes.
  returned: always
  type: dict
  contains:
    ok:
      description: Whether the target became healthy.
      type: bool
      sample: true
    attempts:
      description: Number of probes sent.
      type: int
      sample: 2
    last_status:
      description: HTTP status of the last probe; V(null) when it got no HTTP answer.
      type: int
      sample: 200
    last_error:
      description: Why the last probe was unhealthy; V(null) when it was healthy.
      type: str
      sample: "status 503 not in [200]"
    latency_ms:
      description: Latency of the probes that got an HTTP answer; values V(null) when none did.
      type: dict
      contains:
        p50:
          description: Median latency in milliseconds.
          type: float
          sample: 3.2
        p95:
          description: 95th percentile latency in milliseconds.
          type: float
          sample: 7.9
        max:
          description: Highest latency in milliseconds.
          type: float
          sample: 8.4
    consecutive_ok:
      description: Healthy probes in a row at the end.
      type: int
      sample: 2
    reason:
      description: Why the target is unhealthy; V(null) when healthy.
      type: str
      sample: connection refused
  sample:
    http://10.0.0.11:8080/healthz:
      ok: true
      attempts: 2
      last_status: 200
      last_error: null
      latency_ms: {p50: 3.2, p95: 3.4, max: 3.4}
      consecutive_ok: 2
      reason: null
elapsed:
  description: Seconds spent probing.
  returned: always
  type: float
  sample: 1.02
msg:
  description: Summary; on failure it names each unhealthy target and why.
  returned: always
  type: str
  sample: "1 of 2 targets unhealthy after 60.0 s: http://10.0.0.12:8080/healthz (connection refused)"
changed:
  description: Always V(false); probing changes nothing.
  returned: always
  type: bool
  sample: false
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.grayrelease.canary.plugins.module_utils._health import (
    HealthError,
    MissingLibraryError,
    build_targets,
    run_checks,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import url_secrets


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type='list', elements='raw', required=True),
            status_codes=dict(type='list', elements='int', default=[200]),
            body_regex=dict(type='str'),
            json_query=dict(type='str'),
            json_expect=dict(type='raw'),
            max_latency_ms=dict(type='float'),
            rise=dict(type='int', default=2),
            interval=dict(type='float', default=1),
            timeout=dict(type='float', default=5),
            deadline=dict(type='float', default=60),
            headers=dict(type='dict', no_log=True),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            fail_on_unhealthy=dict(type='bool', default=True),
            concurrency=dict(type='int', default=256),
        ),
        supports_check_mode=True,
    )
    params = module.params
    # targets cannot be no_log, they are returned; their credentials are
    # redacted in the result, and this masks them in the invocation too.
    module.no_log_values.update(url_secrets(params['targets']))
    try:
        targets = build_targets(params['targets'], params)
        result = run_checks(targets, interval=params['interval'], deadline=params['deadline'],
                            concurrency=params['concurrency'])
    except MissingLibraryError as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=exc.traceback)
    except HealthError as exc:
        module.fail_json(msg=str(exc))
    # ansible-core reserves a non-list `results` for loops; the action plugin
    # of the same name moves this key back to the documented `results`.
    result['target_results'] = result.pop('results')
    if result['unhealthy'] and params['fail_on_unhealthy']:
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
