#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_server
short_description: Drain, ready, put in maintenance or re-weight HAProxy servers through the runtime API
version_added: 1.0.0
description:
  - Changes servers of one backend through HAProxy's runtime API (an admin-level
    stats socket), from Python on the host where the socket is. No socat or other
    tool is needed on that host.
  - O(state=drain) stops new traffic (established sessions go on),
    O(state=maint) takes the server out completely (health checks stop),
    O(state=ready) puts it back. With O(state=drain) or O(state=maint) the module
    waits until every listed server has 0 current sessions (O(drain_timeout)).
  - With O(state=ready) and O(wait_healthy=true) it waits until each server's
    health check reports UP. HAProxy lists a server UP the moment it leaves
    maintenance, with the result of the last check before it, so for such a
    server the module waits for a health check that completed after the change
    (check health above C(rise), a moved check counter, or a check seen in
    progress and finished). A server whose checks fail is never reported healthy;
    the module fails at O(health_timeout).
  - Idempotent, C(changed) only when an admin state or weight really changed.
    Names are checked against C([A-Za-z0-9_.:-]) before anything is sent; unknown
    backends and servers fail with the known names listed. A missing, refusing or
    non-admin socket fails with a message that says which. In all these cases
    nothing is changed.
  - "Order of commands: going to C(ready) the weights are set first, so a canary
    never sees a moment of full weight; going to C(drain) or C(maint) the state
    is set first."
  - With O(state=ready) and O(probe), nothing changes unless every URL of O(probe) is
    healthy from this host. A URL still unhealthy at O(probe.deadline) fails the task with
    RV(probe) in its result. A rolling update checks a freshly switched server and readies it
    in one call to each balancer. Names are checked before the first probe.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
extends_documentation_fragment:
  - grayrelease.canary.haproxy_probe
attributes:
  check_mode:
    support: full
    description: Reports what would change (C(servers) is the prediction), changes nothing, does not wait.
  diff_mode:
    support: full
    description: One line per server, C(backend/server admin_state=... weight=...), before and after.
options:
  socket:
    description:
      - HAProxy runtime API socket, a unix socket path or C(tcp:HOST:PORT).
      - It must be at level admin (C(stats socket /run/haproxy/admin.sock mode 660 level admin)).
    type: str
    default: /run/haproxy/admin.sock
  backend:
    description: Name of the backend.
    type: str
    required: true
  servers:
    description: Servers of O(backend) to change; each must exist.
    type: list
    elements: str
    required: true
  state:
    description:
      - Admin state wanted. C(ready) clears drain and maintenance, C(drain) sets
        drain (and leaves maintenance), C(maint) sets maintenance. Omitted, the
        state is left as it is.
      - A state inherited from a tracked server cannot be changed here; the module fails saying so.
    type: str
    choices: [ready, drain, maint]
  weight:
    description:
      - Weight for every listed server, an integer 0-256 or C("N%") of the
        server's initial (configured) weight, computed as round-half-up(initial * N / 100).
        C("100%") restores the configured weight.
      - The backend's balancing algorithm must accept dynamic weights (see docs/haproxy.md).
    type: raw
  weights:
    description:
      - Per-server weights, server -> integer 0-256 or C("N%"); overrides O(weight)
        for those servers. Servers named here are added to O(servers).
      - Typically the output of the P(grayrelease.canary.canary_weights#filter) filter.
    type: dict
  drain_timeout:
    description:
      - With O(state=drain) or O(state=maint), seconds to wait until every listed
        server has 0 current sessions. At the timeout the module fails (the
        drain stays in place), unless O(shutdown_sessions=true).
    type: int
    default: 60
  shutdown_sessions:
    description: On drain timeout, kill the remaining sessions (C(shutdown sessions server)) instead of failing.
    type: bool
    default: false
  wait_healthy:
    description: After O(state=ready), wait until each server's health check reports UP (see above).
    type: bool
    default: true
  health_timeout:
    description: Seconds to wait for O(wait_healthy). A server not healthy by then fails the task.
    type: int
    default: 60
  wait:
    description:
      - Set to C(false) to only apply the change, without the drain and health
        waits. The balancer role uses it to change every balancer first and then
        wait on each, so the drains run in parallel.
    type: bool
    default: true
  timeout:
    description: Seconds allowed for one runtime API command.
    type: float
    default: 10
  claims:
    description:
      - A file on this host where runs record what they set (a drain, a weight off the initial
        one) before they set it, and drop it once the server is ready at its initial weight
        again. The rollout's pre-flight repairs only servers a claim says a run left exactly
        as they are; anything else out of rotation or off-weight is an operator's and is left alone.
      - Its directory is created mode 0700 when missing and must not be writable by other users.
      - Omitted, nothing is recorded.
    type: path
  owner:
    description: The run recorded in O(claims).
    type: str
    default: ''
  max_unavailable:
    description:
      - With O(state=drain) or O(state=maint) (and O(then_drain)), refuse, changing nothing, when the change
        would leave more than this many servers of O(fleet) out of rotation on this balancer
        (maintenance, drain, not UP, or weight 0), whoever put them there.
    type: int
  fleet:
    description: The servers O(max_unavailable) counts; default every server of O(backend).
    type: list
    elements: str
  then_drain:
    description:
      - With O(state=ready), servers to drain once O(servers) are ready (and healthy with
        O(wait_healthy)), waiting for their sessions like O(state=drain) (O(drain_timeout),
        O(shutdown_sessions)). A rolling update hands over from one batch to the next in one
        call, and this balancer never has both batches out of rotation at once.
      - Without O(state), the servers to drain once the weights are set (a canary's weights
        restored after its analysis, then the next batch drained).
      - Nothing is drained when the ready fails. A failing drain fails the task with the ready
        done, its message saying which part failed. Names are checked (and must not repeat O(servers))
        before anything changes.
    type: list
    elements: str
    version_added: 1.1.0
notes:
  - Runs where the socket is; the balancer role delegates it to every balancer host.
  - Needs read/write access to the socket, usually C(become=true).
seealso:
  - module: grayrelease.canary.haproxy_info
  - plugin: grayrelease.canary.canary_weights
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Drain app1 on this balancer, wait up to 30 s for its sessions to end
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: [app1]
    state: drain
    drain_timeout: 30
  become: true

- name: Maintenance, killing sessions still open after 10 s
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: [app1, app2]
    state: maint
    drain_timeout: 10
    shutdown_sessions: true

- name: Back in service at half its configured weight, wait for a passing check
  grayrelease.canary.haproxy_server:
    socket: tcp:127.0.0.1:9999
    backend: demoapp
    servers: [app1]
    state: ready
    weight: "50%"
    health_timeout: 30

- name: 10% of the traffic to app1, the rest to the others
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: "{{ weights.keys() | list }}"
    weights: "{{ weights }}"
  vars:
    weights: "{{ {'app1': 1, 'app2': 1, 'app3': 1} | grayrelease.canary.canary_weights(['app1'], 10) }}"

- name: Rolling hand-over - ready app1 (updated) and, once it is healthy, drain app2 for its update
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: [app1]
    state: ready
    then_drain: [app2]
    drain_timeout: 30
  become: true

- name: Ready app1 once its health endpoint answers from this balancer twice in a row
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: [app1]
    state: ready
    probe:
      urls: ["http://app1:8080/healthz"]
      deadline: 30
  become: true

# What a rollout does: the drain is claimed first (so the next run may ready it
# again, and only it), and refused if it would leave more than 2 of the six
# app servers out of rotation here, an operator's maintenance included.
- name: Drain app3, within the cap, recording the claim
  grayrelease.canary.haproxy_server:
    backend: demoapp
    servers: [app3]
    state: drain
    claims: /var/lib/grayrelease-canary/demoapp.claims.json
    owner: "deploy@ctl run 1a2b3c4d"
    max_unavailable: 2
    fleet: [app1, app2, app3, app4, app5, app6]
  become: true
"""

RETURN = r"""
servers:
  description:
    - State of each listed server after the change (in check mode, the prediction).
    - C(admin_state) is exactly C(ready), C(drain) or C(maint), from the admin
      bits of C(show servers state) (forced, inherited, configured or DNS maintenance; forced or inherited drain).
  returned: always
  type: dict
  sample:
    app1:
      admin_state: ready
      status: UP
      weight: 5
      initial_weight: 1
      scur: 0
      check_status: L7OK
      req_tot: 1200
      hrsp_5xx: 0
  contains:
    admin_state:
      description: C(ready), C(drain) or C(maint).
      type: str
    status:
      description: HAProxy's status (C(UP), C(DOWN), C(MAINT), C(DRAIN), C(UP 1/2), ...).
      type: str
    weight:
      description: Current (user-set) weight.
      type: int
    initial_weight:
      description: Weight from the configuration.
      type: int
    scur:
      description: Current sessions.
      type: int
    check_status:
      description: Last health check status (C(L7OK), C(L4CON), ...), empty without checks or in maintenance.
      type: str
    req_tot:
      description: HTTP requests HAProxy sent to the server since it started (C(show stat)).
      type: int
      version_added: 1.1.0
    hrsp_5xx:
      description: Of those, responses with a 5xx status.
      type: int
      version_added: 1.1.0
before:
  description: Same shape as RV(servers), before the change.
  returned: always
  type: dict
commands:
  description: Runtime API commands sent (in check mode, that would be sent), in order.
  returned: always
  type: list
  elements: str
  sample: ["set server demoapp/app1 state drain"]
drain:
  description: Drain wait, with O(state=drain) or O(state=maint) (not in check mode).
  returned: when a drain wait ran
  type: dict
  contains:
    waited:
      description: Seconds waited until the servers had no sessions.
      type: float
    timed_out:
      description: Whether O(drain_timeout) passed (then sessions were killed).
      type: bool
    shutdown:
      description: Server -> number of sessions killed with O(shutdown_sessions).
      type: dict
    sessions_left:
      description: Sessions still open at the end.
      type: int
then_drain:
  description:
    - The drain of O(then_drain) after the ready, with the keys of a drain's own result
      (RV(servers), RV(before), RV(commands), RV(drain)) and C(seconds) it took; C(failed) and
      C(msg) when it failed.
  returned: with O(then_drain)
  type: dict
  version_added: 1.1.0
probe:
  description:
    - The checks of O(probe), as M(grayrelease.canary.health_check) returns them
      (C(healthy), C(unhealthy), C(results) per URL, C(elapsed), C(msg)).
  returned: with O(probe), also when it failed
  type: dict
  version_added: 1.1.0
health:
  description: Health wait after O(state=ready).
  returned: when a health wait ran
  type: dict
  contains:
    waited:
      description: Seconds until every server was healthy.
      type: float
diff:
  description: Before/after text, one line per server.
  returned: in diff mode
  type: dict
process:
  description:
    - The HAProxy process that answered (C(show info)). A different C(pid) later means HAProxy
      was restarted or reloaded, which loses runtime changes (drain, weights) unless
      C(server-state-file) is set up.
  returned: success
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

from ansible_collections.grayrelease.canary.plugins.module_utils._balancer import SERVER_OPTIONS, server_module
from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import HAProxyDriver, RuntimeAPI


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SERVER_OPTIONS,
            socket=dict(type='str', default='/run/haproxy/admin.sock'),
            shutdown_sessions=dict(type='bool', default=False),
            wait_healthy=dict(type='bool', default=True),
            timeout=dict(type='float', default=10),
        ),
        supports_check_mode=True,
    )
    p = module.params
    server_module(module, lambda: HAProxyDriver(RuntimeAPI(p['socket'], timeout=p['timeout']), p['backend']),
                  probe=p['probe'], ready_args=dict(wait_healthy=p['wait_healthy'], health_timeout=p['health_timeout']),
                  drain_args=dict(shutdown_sessions=p['shutdown_sessions']))


if __name__ == '__main__':
    main()
