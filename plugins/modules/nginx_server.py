#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nginx_server
short_description: Drain, ready, put in maintenance or re-weight the servers of an nginx upstream
version_added: 1.1.0
description:
  - The nginx driver of the collection (open-source nginx, no runtime API). Changes servers of one
    upstream in the upstream file the collection owns (O(upstream_file)), then runs C(nginx -t) and
    one graceful reload (C(nginx -s reload)) for all the changes of the call, and waits until the
    new workers run. The file's format and the prerequisites are in docs/nginx.md.
  - O(state=drain) and O(state=maint) both write C(down) (nginx cannot tell them apart; the file's
    record does). A weight of 0 writes C(down) with the server still C(ready). O(state=ready)
    removes C(down).
  - With O(state=drain) or O(state=maint) (and O(then_drain)) the module waits until the drain is
    proven, never because a timer ran out - every worker from before the reload has exited (the
    configuration's C(worker_shutdown_timeout) bounds how long they may take), or no connection from
    this host to the drained servers is established any more. Not proven by O(drain_timeout), the
    task fails and the servers stay down.
  - A failed C(nginx -t) puts the previous file back, reloads nothing and fails naming nginx's message.
    Refused with nothing changed - a file that is not the collection's or was edited by hand, another
    upstream than O(backend), an unknown server, a configuration that does not include the file or
    lacks C(worker_shutdown_timeout) (read from C(nginx -T)).
  - nginx has passive health checks only. With O(state=ready) and O(probe), nothing changes unless
    every URL of O(probe) is healthy from this host (the health evidence nginx itself cannot give).
  - Idempotent - C(changed) only when the file changes; an unchanged file is neither written nor reloaded.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
extends_documentation_fragment:
  - grayrelease.canary.haproxy_probe
attributes:
  check_mode:
    support: full
    description: Reports what would change (C(servers) is the prediction); writes nothing, reloads nothing, does not wait.
  diff_mode:
    support: full
    description: One line per server, C(upstream/server admin_state=... weight=...), before and after.
options:
  backend:
    description: Name of the upstream (the C(upstream) block of O(upstream_file)).
    type: str
    required: true
  upstream_file:
    description: The collection's upstream file of O(backend); default C(/etc/nginx/grayrelease/<backend>.conf).
    type: path
  nginx_binary:
    description: The nginx command (C(nginx -T), C(nginx -t), C(nginx -s reload)).
    type: str
    default: nginx
  access_log:
    description:
      - The access log written with the collection's C(grayrelease_canary) log format (docs/nginx.md).
        With it, RV(servers) carries C(req_tot), C(hrsp_5xx) and C(rate) per server; without it they are absent.
    type: path
  counters_file:
    description:
      - Where the counters read from O(access_log) and the offset read up to are kept between calls,
        so a call reads only the lines written since the last one.
      - Default C(/var/lib/grayrelease-canary/nginx/<backend>.counters.json).
    type: path
  reload_timeout:
    description: Seconds allowed for nginx to start the workers of a reload.
    type: float
    default: 15
  servers:
    description: Servers of O(backend) (names of the file's records) to change; each must exist.
    type: list
    elements: str
    required: true
  state:
    description: Admin state wanted; omitted, left as it is.
    type: str
    choices: [ready, drain, maint]
  weight:
    description:
      - Weight for every listed server, an integer 0-256 or C("N%") of the server's initial weight
        (round-half-up). 0 takes the server out of rotation (C(down)) with its admin state C(ready).
    type: raw
  weights:
    description: Per-server weights, server -> integer 0-256 or C("N%"); overrides O(weight). Servers named here are added to O(servers).
    type: dict
  drain_timeout:
    description:
      - With O(state=drain) or O(state=maint) (or O(then_drain)), seconds to wait for the drain's evidence.
        Without it by then the task fails and the servers stay down.
    type: int
    default: 60
  health_timeout:
    description: With O(probe), the longest the probe may take (it caps O(probe.deadline)).
    type: int
    default: 60
  wait:
    description: Set to C(false) to only apply the change, without the drain wait.
    type: bool
    default: true
  then_drain:
    description:
      - With O(state=ready) or no state, servers to drain once O(servers) are ready (a second file and
        reload), awaiting the drain's evidence as with O(state=drain); this balancer never has both sets
        out of rotation. Nothing is drained when the ready fails. Must not repeat O(servers) with O(state=ready).
    type: list
    elements: str
  claims:
    description:
      - A file on this host where runs record what they set (a drain, a weight off the initial one) before
        setting it, as with P(grayrelease.canary.haproxy_server#module). Omitted, nothing is recorded.
    type: path
  owner:
    description: The run recorded in O(claims).
    type: str
    default: ''
  max_unavailable:
    description:
      - With a drain, refuse (changing nothing) when the change would leave more than this many servers
        of O(fleet) out of rotation on this balancer (drain, maintenance or weight 0), whoever put them there.
    type: int
  fleet:
    description: The servers O(max_unavailable) counts; default every server of O(backend).
    type: list
    elements: str
notes:
  - Runs on the balancer (nginx's host), usually with C(become=true) (C(nginx -T) and the file need root).
  - The nginx driver cannot see whether a server is up (C(up) is null) and counts requests only from O(access_log).
seealso:
  - module: grayrelease.canary.nginx_info
  - module: grayrelease.canary.haproxy_server
"""

EXAMPLES = r"""
- name: Drain app1 on this balancer; wait up to 30 s for the old workers to exit or its connections to end
  grayrelease.canary.nginx_server:
    backend: demoapp
    servers: [app1]
    state: drain
    drain_timeout: 30
  become: true

- name: Ready app1 once it answers from this balancer, and drain app2 in the same reload
  grayrelease.canary.nginx_server:
    backend: demoapp
    servers: [app1]
    state: ready
    then_drain: [app2]
    probe:
      urls: ["http://app1:8080/healthz"]
  become: true

- name: A quarter of the traffic to app1 (one reload for all three weights)
  grayrelease.canary.nginx_server:
    backend: demoapp
    servers: [app1, app2, app3]
    weights: {app1: 2, app2: 3, app3: 3}
    access_log: /var/log/nginx/canary.log
  become: true
"""

RETURN = r"""
servers:
  description: Each listed server after the change (in check mode, the prediction).
  returned: always
  type: dict
  sample:
    app1: {admin_state: drain, status: DRAIN, weight: 1, initial_weight: 1, up: null, scur: 0,
           req_tot: 1200, hrsp_5xx: 0, rate: 12, address: "172.18.0.3:8080"}
  contains:
    admin_state:
      description: C(ready), C(drain) or C(maint) (the file's record).
      type: str
    status:
      description: C(UP), C(DRAIN) or C(MAINT) (nginx has no active checks; a weight 0 server is C(UP) at weight 0).
      type: str
    weight:
      description: The recorded weight (0 for a server out of rotation by weight).
      type: int
    initial_weight:
      description: The weight the server started with in the file.
      type: int
    up:
      description: Always null - nginx cannot tell.
      type: raw
    scur:
      description: Established connections from this host to the server's address (requests in flight).
      type: int
    req_tot:
      description: Requests nginx sent to the server since the counters started (from O(access_log); absent without it).
      type: int
    hrsp_5xx:
      description: Of those, answered 5xx or not at all (absent without O(access_log)).
      type: int
    rate:
      description: Requests per second over the last 10 s of the log (absent without O(access_log)).
      type: int
    address:
      description: The server's address in the file.
      type: str
before:
  description: Same shape as RV(servers), before the change.
  returned: always
  type: dict
commands:
  description: What was done (in check mode, would be), one entry per change, then C(nginx -t) and C(nginx -s reload).
  returned: always
  type: list
  elements: str
drain:
  description: The drain wait and its evidence.
  returned: when a drain wait ran
  type: dict
  contains:
    waited:
      description: Seconds until the drain was proven.
      type: float
    timed_out:
      description: Whether O(drain_timeout) passed (the task then fails).
      type: bool
    sessions_left:
      description: Established connections to the drained servers at the end.
      type: int
    evidence:
      description:
        - C(proof) (C(old workers exited) or C(no connections)), C(old_workers) (pids of the workers from before
          the reload still running when it was proven) and C(connections) (server -> established connections).
      type: dict
then_drain:
  description: The drain of O(then_drain) with the keys of a drain's own result and C(seconds) it took.
  returned: with O(then_drain)
  type: dict
probe:
  description: The checks of O(probe), as M(grayrelease.canary.health_check) returns them.
  returned: with O(probe), also when it failed
  type: dict
diff:
  description: Before/after text, one line per server.
  returned: in diff mode
  type: dict
process:
  description:
    - The nginx that serves the upstream -
      C(pid) (the master), current C(workers), C(shutting_down) workers and C(generation) (master pid and
      the file's hash; it changes on a restart or a change of the file, not on a reload that changes nothing).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import SERVER_OPTIONS, server_module
from ansible_collections.grayrelease.canary.plugins.module_utils._nginx import NginxDriver


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SERVER_OPTIONS,
            upstream_file=dict(type='path'),
            nginx_binary=dict(type='str', default='nginx'),
            access_log=dict(type='path'),
            counters_file=dict(type='path'),
            reload_timeout=dict(type='float', default=15),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # nginx has no health checks to wait for: the probe is the ready's health evidence.
    probe = dict(p['probe'], deadline=min(p['probe']['deadline'], p['health_timeout'])) if p['probe'] else None
    warnings = []
    if p['state'] == 'ready' and not p['probe']:
        warnings.append('nginx has no active health checks: without probe nothing confirmed that %s answer '
                        'before they were readied' % ', '.join(p['servers']))
    server_module(module, lambda: NginxDriver(
        p['backend'], upstream_file=p['upstream_file'], nginx_binary=p['nginx_binary'], access_log=p['access_log'],
        counters_file=p['counters_file'], reload_timeout=p['reload_timeout'], save_counters=not module.check_mode),
        probe=probe, warnings=warnings)


if __name__ == '__main__':
    main()
