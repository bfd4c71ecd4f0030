#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nginx_info
short_description: Read the servers of an nginx upstream the collection owns
version_added: 1.1.0
description:
  - Read-only. Returns the servers of one upstream from the collection's upstream file (admin state,
    weight, initial weight, address), the established connections from this host to each, and with
    O(access_log) the requests and 5xx each served, read from the access log since the last read
    (docs/nginx.md).
  - Counters are cumulative since the first read of the log; subtract two snapshots to get the traffic in between.
  - With O(probe), also HTTP checks from this host, reported under RV(probe); an unhealthy URL does not fail the task.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
extends_documentation_fragment:
  - grayrelease.canary.haproxy_probe
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode (the log's read offset is not saved).
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
options:
  backend:
    description: Name of the upstream (the C(upstream) block of O(upstream_file)).
    type: str
    required: true
  upstream_file:
    description: The collection's upstream file of O(backend); default C(/etc/nginx/grayrelease/<backend>.conf).
    type: path
  nginx_binary:
    description: The nginx command; nginx_info does not run it, the option is here to be the same as in M(grayrelease.canary.nginx_server).
    type: str
    default: nginx
  access_log:
    description: The access log written with the C(grayrelease_canary) log format. Omitted, C(req_tot), C(hrsp_5xx) and C(rate) are absent.
    type: path
  counters_file:
    description: Where the log's counters and read offset are kept; default C(/var/lib/grayrelease-canary/nginx/<backend>.counters.json).
    type: path
  claims:
    description:
      - The claims file of M(grayrelease.canary.nginx_server)'s O(grayrelease.canary.nginx_server#module:claims)
        option; returned as RV(claims). A missing or damaged file reads as no claims.
    type: path
seealso:
  - module: grayrelease.canary.nginx_server
"""

EXAMPLES = r"""
- name: The demoapp upstream and what its servers served
  grayrelease.canary.nginx_info:
    backend: demoapp
    access_log: /var/log/nginx/canary.log
  become: true
  register: lb

- name: Requests app1 served so far
  ansible.builtin.debug:
    msg: "{{ lb.backends.demoapp.app1.req_tot }}"
"""

RETURN = r"""
backends:
  description:
    - Upstream -> server -> C(admin_state), C(status), C(weight), C(initial_weight), C(up) (always null),
      C(scur) (established connections from this host), C(address), and with O(access_log) C(req_tot),
      C(hrsp_5xx) and C(rate), as M(grayrelease.canary.nginx_server) returns them.
  returned: always
  type: dict
  sample:
    demoapp:
      app1: {admin_state: ready, status: UP, weight: 1, initial_weight: 1, up: null, scur: 2,
             req_tot: 1200, hrsp_5xx: 3, rate: 10, address: "172.18.0.3:8080"}
initial_weights:
  description: Upstream -> server -> initial weight, the input the P(grayrelease.canary.canary_weights#filter) filter wants.
  returned: always
  type: dict
process:
  description: C(pid) (the master), C(workers), C(shutting_down) and C(generation) (master pid and the upstream file's hash).
  returned: always
  type: dict
claims:
  description: With O(claims), upstream -> server -> what a run set there and recorded.
  returned: when O(claims) is set
  type: dict
probe:
  description: The checks of O(probe), as M(grayrelease.canary.health_check) returns them.
  returned: with O(probe)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import PROBE_SPEC, BalancerError, run_probe
from ansible_collections.grayrelease.canary.plugins.module_utils._claims import load as load_claims
from ansible_collections.grayrelease.canary.plugins.module_utils._nginx import NginxDriver, gather_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type='str', required=True),
            upstream_file=dict(type='path'),
            nginx_binary=dict(type='str', default='nginx'),
            access_log=dict(type='path'),
            counters_file=dict(type='path'),
            probe=PROBE_SPEC,
            claims=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    extra = {}
    try:
        driver = NginxDriver(p['backend'], upstream_file=p['upstream_file'], nginx_binary=p['nginx_binary'],
                             access_log=p['access_log'], counters_file=p['counters_file'],
                             save_counters=not module.check_mode)
        servers, process = gather_info(driver)
        if p['probe']:
            extra['probe'] = run_probe(p['probe'])
        if p['claims']:
            extra['claims'] = {p['backend']: load_claims(p['claims']).get(p['backend'], {})}
    except BalancerError as exc:
        module.fail_json(msg=exc.msg, error_kind=exc.kind)
    initial = {p['backend']: dict((s, i['initial_weight']) for s, i in servers.items())}
    module.exit_json(changed=False, backends={p['backend']: servers}, initial_weights=initial, process=process, **extra)


if __name__ == '__main__':
    main()
