#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_info
short_description: Read HAProxy server counters and states through the runtime API
version_added: 1.0.0
description:
  - Read-only. Returns per backend and server the C(show stat) counters as
    numbers and the admin state from C(show servers state), through HAProxy's
    runtime API socket (any level; admin is not needed).
  - Counters are cumulative since HAProxy started or since C(clear counters);
    subtract two snapshots to get the traffic in between.
  - With O(probe), also HTTP checks from this host, reported under RV(probe); an unhealthy
    URL does not fail the task (a rollout's pre-flight reads the backend and the fleet's
    health from the balancer in one call).
author:
  - Grayrelease Canary Maintainers (@grayrelease)
extends_documentation_fragment:
  - grayrelease.canary.haproxy_probe
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
options:
  socket:
    description: HAProxy runtime API socket, a unix socket path or C(tcp:HOST:PORT).
    type: str
    default: /run/haproxy/admin.sock
  backend:
    description: Only this backend (it must exist). Omitted, every backend with servers.
    type: str
  timeout:
    description: Seconds allowed for one runtime API command.
    type: float
    default: 10
  claims:
    description:
      - The claims file of P(grayrelease.canary.haproxy_server#module)'s O(grayrelease.canary.haproxy_server#module:claims)
        option; its claims are returned as RV(claims). A missing or damaged file reads as no claims.
    type: path
seealso:
  - module: grayrelease.canary.haproxy_server
"""

EXAMPLES = r"""
- name: Counters of the demoapp backend
  grayrelease.canary.haproxy_info:
    backend: demoapp
  register: lb

- name: Requests app1 served so far
  ansible.builtin.debug:
    msg: "{{ lb.backends.demoapp.app1.req_tot }}"

- name: The backend, and whether app1 answers its health check from this balancer
  grayrelease.canary.haproxy_info:
    backend: demoapp
    probe:
      urls: ["http://app1:8080/healthz"]
      rise: 1
  register: lb
"""

RETURN = r"""
claims:
  description:
    - With O(claims), backend -> server -> what a run set there and recorded (C(admin_state), C(weight),
      C(owner), C(at)), for servers out of rotation or off their initial weight by a run, not by an operator.
  returned: when O(claims) is set
  type: dict
  sample: {demoapp: {app2: {admin_state: drain, weight: 1, owner: "alice@ctl 2026-12-06T03:00:00Z 4242", at: 1796526000.0}}}
probe:
  description:
    - The checks of O(probe), as M(grayrelease.canary.health_check) returns them
      (C(healthy), C(unhealthy), C(results) per URL, C(elapsed), C(msg)).
  returned: with O(probe)
  type: dict
  version_added: 1.1.0
backends:
  description:
    - Backend -> server -> counters. Numbers are integers; a counter that does
      not apply (e.g. C(hrsp_*) on a TCP backend) is 0.
    - Times (C(qtime), C(ctime), C(rtime), C(ttime)) are HAProxy's averages over
      the last 1024 requests, in milliseconds.
  returned: always
  type: dict
  sample:
    demoapp:
      app1: {req_tot: 120, hrsp_1xx: 0, hrsp_2xx: 118, hrsp_3xx: 0, hrsp_4xx: 0, hrsp_5xx: 2,
             hrsp_other: 0, econ: 0, eresp: 0, rtime: 3, ttime: 4, qtime: 0, scur: 0, stot: 120,
             weight: 1, initial_weight: 1, status: UP, check_status: L7OK, admin_state: ready}
  contains:
    req_tot:
      description: HTTP requests sent to the server.
      type: int
    hrsp_1xx:
      description: Responses with status 1xx (likewise C(hrsp_2xx) .. C(hrsp_5xx), C(hrsp_other)).
      type: int
    econ:
      description: Connection errors to the server.
      type: int
    eresp:
      description: Response errors.
      type: int
    scur:
      description: Current sessions.
      type: int
    stot:
      description: Total sessions.
      type: int
    rate:
      description:
        - Sessions per second sent to the server over the last second (in HTTP mode a session per
          request). The rollout's sample-size planner sums it over servers and balancers as the
          request rate.
      type: int
      version_added: 1.0.0
    weight:
      description: Current (user-set) weight.
      type: int
    initial_weight:
      description: Weight from the configuration.
      type: int
    status:
      description: HAProxy's status string.
      type: str
    check_status:
      description: Last health check status (without the C(* ) HAProxy puts before it while a check runs).
      type: str
    admin_state:
      description: C(ready), C(drain) or C(maint).
      type: str
initial_weights:
  description: Backend -> server -> initial weight, the input the P(grayrelease.canary.canary_weights#filter) filter wants.
  returned: always
  type: dict
  sample: {demoapp: {app1: 1, app2: 1}}
process:
  description:
    - The HAProxy process that answered (C(show info)). A different C(pid) later means HAProxy
      was restarted or reloaded, which loses runtime changes (drain, weights) unless
      C(server-state-file) is set up.
  returned: always
  type: dict
  contains:
    pid:
      description: Process id.
      type: int
    uptime_sec:
      description: Seconds since it started.
      type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._claims import load as load_claims
from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import HAProxyError, RuntimeAPI, gather_info
from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import PROBE_SPEC, run_probe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type='str', default='/run/haproxy/admin.sock'),
            backend=dict(type='str'),
            timeout=dict(type='float', default=10),
            probe=PROBE_SPEC,
            claims=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    extra = {}
    try:
        api = RuntimeAPI(module.params['socket'], timeout=module.params['timeout'])
        backends = gather_info(api, module.params['backend'])
        process = api.process()
        if module.params['probe']:
            extra['probe'] = run_probe(module.params['probe'])
        if module.params['claims']:
            claims = load_claims(module.params['claims'])
            extra['claims'] = dict((b, claims.get(b, {})) for b in backends)
    except HAProxyError as exc:
        module.fail_json(msg=exc.msg, error_kind=exc.kind)
    initial = dict((b, dict((s, i['initial_weight']) for s, i in servers.items())) for b, servers in backends.items())
    module.exit_json(changed=False, backends=backends, initial_weights=initial, process=process, **extra)


if __name__ == '__main__':
    main()
