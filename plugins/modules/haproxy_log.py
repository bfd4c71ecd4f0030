#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_log
short_description: Per-server timings of the requests HAProxy served, from its request log
version_added: 1.0.0
description:
  - Reads HAProxy's HTTP request log (C(option httplog)) on the balancer and returns, per
    server of one backend, the timers of every request accepted in a time window (the
    server's response time Tr and the total active time Ta), with status counts.
  - Real traffic, request by request, which the rollout's canary analysis compares between
    canary and baseline servers with M(grayrelease.canary.canary_judge). Not C(show stat)'s
    C(rtime), an average over the last 1024 requests.
  - The log must be a file on the balancer, as Debian's haproxy package sets it up with
    rsyslog (C(/var/log/haproxy.log)), and HAProxy must log at level info with
    C(option httplog) (the default HTTP log format). See docs/haproxy.md.
  - Read-only; runs in check mode too. Reads the file backwards, only as far as the window needs.
  - A line counts only when it starts with a syslog header (an RFC 3339 or BSD timestamp, the host
    name, the tag C(haproxy[PID]:)) followed by the httplog fields at their fixed places. The
    text HAProxy logs after them (captured cookies and headers, the request line) is never read,
    so what a client sends cannot make a request count for another server, nor make one up.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  path:
    description: The request log file on this host.
    type: path
    default: /var/log/haproxy.log
  backend:
    description: The backend whose servers' requests are returned.
    type: str
    required: true
  also_backend:
    description:
      - A second backend whose requests count for the same servers, e.g. the canary backend of a user routing
        (docs/routing.md), where the servers on the new release serve.
    type: str
  servers:
    description: Only these servers (default every server of the backend seen in the window).
    type: list
    elements: str
  window:
    description:
      - Seconds before now (this host's clock) whose requests count, by their accept date.
      - Ignored when O(since) is set.
    type: float
    default: 60
  since:
    description: Epoch seconds; requests accepted from then on count (instead of O(window)).
    type: float
  until:
    description: Epoch seconds; requests accepted after this do not count (default now).
    type: float
  max_samples:
    description: Most timings returned per server and timer (evenly thinned beyond; counts stay exact).
    type: int
    default: 10000
  missing_ok:
    description: A missing log file gives no requests instead of a failure.
    type: bool
    default: false
seealso:
  - module: grayrelease.canary.haproxy_info
  - module: grayrelease.canary.canary_judge
"""

EXAMPLES = r"""
- name: Timings of the last 30 s of requests to demoapp's servers
  grayrelease.canary.haproxy_log:
    backend: demoapp
    window: 30
  become: true
  register: traffic

- name: Judge the canary's real-traffic response times against app2's
  grayrelease.canary.canary_judge:
    metrics:
      - name: traffic_latency_ms
        kind: samples
        baseline: "{{ traffic.servers.app2.response_ms }}"
        canary: "{{ traffic.servers.app1.response_ms }}"
"""

RETURN = r"""
servers:
  description: Server name -> the requests it answered in the window.
  returned: always
  type: dict
  contains:
    requests:
      description: Requests in the window.
      type: int
    response_ms:
      description: Tr of every request the server answered (ms), in log order.
      type: list
      elements: int
    total_ms:
      description: Ta of every request (ms), in log order.
      type: list
      elements: int
    statuses:
      description: Status class (C(2xx) .. C(5xx), C(other)) -> count.
      type: dict
    errors_5xx:
      description: Requests answered with a 5xx status.
      type: int
    routes:
      description:
        - For requests whose log line carries a user routing's route (C(canary/bucket), C(stable/bucket),
          C(canary/optin:staff)...; the first capture, as grayrelease.canary.routing_config renders it), route ->
          C(requests), C(errors_5xx) and C(response_ms). Absent when no line carries one.
      type: dict
  sample:
    app1: {requests: 2, response_ms: [3, 4], total_ms: [3, 5], statuses: {"2xx": 2}, errors_5xx: 0}
matched:
  description: Requests of the backend in the window.
  returned: always
  type: int
since:
  description: Start of the window (epoch seconds, this host's clock).
  returned: always
  type: float
until:
  description: End of the window (epoch seconds).
  returned: always
  type: float
found:
  description: Whether the log file exists.
  returned: always
  type: bool
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy_log import (
    LogError,
    collect,
    tail_lines,
    window,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', default='/var/log/haproxy.log'),
            backend=dict(type='str', required=True),
            also_backend=dict(type='str'),
            servers=dict(type='list', elements='str'),
            window=dict(type='float', default=60),
            since=dict(type='float'),
            until=dict(type='float'),
            max_samples=dict(type='int', default=10000),
            missing_ok=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        since, until = window(time.time(), params['window'], params['since'], params['until'])
    except LogError as exc:
        module.fail_json(msg=str(exc))
    found = os.path.exists(params['path'])
    if not found and not params['missing_ok']:
        module.fail_json(msg='no HAProxy request log at %s (HAProxy must log with option httplog at level info '
                             'to a file there, e.g. through rsyslog)' % params['path'])
    try:
        lines = tail_lines(params['path'], since) if found else []
        result = collect(lines, params['backend'], since, until, servers=params['servers'],
                         max_samples=params['max_samples'], also_backend=params['also_backend'])
    except (OSError, LogError) as exc:
        module.fail_json(msg='cannot read %s: %s' % (params['path'], exc))
    module.exit_json(changed=False, servers=result['servers'], matched=result['matched'], since=since,
                     until=until, found=found)


if __name__ == '__main__':
    main()
