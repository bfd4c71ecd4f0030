#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_route
short_description: Gray release by user on HAProxy - set which users see the canary, with no reload
version_added: 1.1.0
description:
  - Runs on a balancer. Brings the two map files of a user routing (C(<map_dir>/<backend>.map) and
    C(<map_dir>/<backend>.net.map)) and HAProxy's live copies of them to the state asked for.
  - Each map file is written first, atomically (a temporary file and a rename), because the file is what
    HAProxy reads again on a reload or restart. Then each live map is replaced in one commit over the
    runtime API (C(prepare map), C(add map @<version>), C(commit map @<version>)), and C(show map)
    must then list exactly the file's entries; a live map found different (a runtime change, a process
    that read an older file) is committed again.
  - The string map is committed first; it holds the mode, so O(state=stable) and O(state=canary) move
    every user in that one commit.
  - Refuses, with nothing changed, when HAProxy has no map loaded from one of the files or lacks the stable
    or canary backend (add the configuration that M(grayrelease.canary.haproxy_route) expects, rendered by
    the P(grayrelease.canary.routing_config#filter) filter, see docs/routing.md), and when O(routing) is
    invalid (an unknown group, a malformed network, a share outside 0-100, a key name HAProxy cannot use).
  - Users are put in 10,000 buckets by HAProxy itself (C(crc32(1)) of the user key, C(mod(10000))); a step
    of P% sends the buckets below P*100 to the canary, so a user keeps one version during a step and only
    moves from stable to canary as P grows.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: Reports which map would change, and how (diff), changes nothing.
  diff_mode:
    support: full
    description: Each changed map's entries before (the file, else the live map) and after.
options:
  socket:
    description: HAProxy runtime API socket at level admin, a unix socket path or C(tcp:HOST:PORT).
    type: str
    default: /run/haproxy/admin.sock
  routing:
    description:
      - The routing, the same dict given to the P(grayrelease.canary.routing_config#filter) filter.
      - "C(backend): the stable backend (required); C(canary_backend): default C(<backend>_canary);
        C(map_dir): default C(/etc/haproxy/routing)."
      - "C(key): where the user key is, C({cookie: NAME}) or C({header: NAME}); C(NAME) of letters, digits,
        C(-) and C(_)."
      - "C(keyless): C(assign) (default with a cookie key: HAProxy draws a key and sets the cookie on the
        first response) or C(share) (default with a header key: each keyless request goes to the canary
        with probability P%)."
      - "C(opt_in) and C(opt_out): lists of groups, each C({name: N, header: {NAME: VALUE}}),
        C({name: N, users: [keys]}) or C({name: N, networks: [CIDRs]}). Opt-out always wins and is in
        force at every step; an opt-in group is on from the step that names it, or from the first step."
      - "C(steps): cumulative steps, each a share of users (C(5), C('5%')), or a dict with C(group)/C(groups)
        (opt-in groups turned on) and/or C(users) (share), e.g. C([{group: staff}, {users: 5%}, 50%, 100%]).
        Shares must not decrease."
    type: dict
    required: true
  state:
    description:
      - C(step) routes by the step O(step) (or by O(percent) with every opt-in group on).
      - C(stable) sends every request to the stable backend, C(canary) every request to the canary backend
        (opt-out included, that is the finish).
    type: str
    choices: [step, stable, canary]
    default: step
  step:
    description: With O(state=step), the step of O(routing) (1 for the first).
    type: int
  percent:
    description:
      - With O(state=step), a share of users 0-100 (a number or C("N%"), at most 2 decimals).
      - With O(step) it overrides that step's share; alone, every opt-in group is on.
    type: raw
  timeout:
    description: Seconds to wait for each answer of the runtime API.
    type: float
    default: 10
notes:
  - Map changes need HAProxy 2.4 or later (map versions); tested with HAProxy 2.6.
  - A big user list costs one runtime API connection per entry at each change.
seealso:
  - module: grayrelease.canary.haproxy_server
"""

EXAMPLES = r"""
- name: Staff first (step 1 of the routing)
  grayrelease.canary.haproxy_route:
    routing: "{{ canary_routing }}"
    state: step
    step: 1
  become: true

- name: 5% of the users
  grayrelease.canary.haproxy_route:
    routing:
      backend: demoapp
      key: {cookie: uid}
      opt_in:
        - {name: staff, header: {X-Canary: "1"}}
        - {name: office, networks: [10.20.0.0/16]}
      opt_out:
        - {name: vip, users: [customer-17, customer-42]}
      steps: [{group: staff}, {users: 5%}, {users: 50%}, 100%]
    step: 2

- name: Everyone back on the stable version (rollback)
  grayrelease.canary.haproxy_route:
    routing: "{{ canary_routing }}"
    state: stable
"""

RETURN = r"""
state:
  description: The state asked for.
  returned: always
  type: str
step:
  description: The step (1-based) now in force, null outside O(state=step) or with O(percent) alone.
  returned: always
  type: int
percent:
  description: The share of users (buckets) on the canary, null outside O(state=step).
  returned: always
  type: float
groups:
  description: The opt-in groups now on.
  returned: always
  type: list
  elements: str
maps:
  description:
    - Per map file, C(entries) (how many), C(file_changed), C(live_changed), C(live_differed_from_file)
      (HAProxy served something else than the file before the run), C(commits) (how many commits it took).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import HAProxyError, RuntimeAPI
from ansible_collections.grayrelease.canary.plugins.module_utils._routing import RoutingError, apply, parse_spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type='str', default='/run/haproxy/admin.sock'),
            routing=dict(type='dict', required=True),
            state=dict(type='str', choices=['step', 'stable', 'canary'], default='step'),
            step=dict(type='int'),
            percent=dict(type='raw'),
            timeout=dict(type='float', default=10),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        routing = parse_spec(p['routing'])
        api = RuntimeAPI(p['socket'], timeout=p['timeout'])
        result = apply(api, routing, p['state'], step=p['step'], percent=p['percent'], check_mode=module.check_mode)
    except RoutingError as exc:
        module.fail_json(msg=str(exc), error_kind=exc.kind)
    except HAProxyError as exc:
        module.fail_json(msg=exc.msg, error_kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg='cannot write the map file: %s' % exc, error_kind='write')
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
