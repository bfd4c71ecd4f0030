#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin of the same name does the work
# (plugins/action/balancer_info.py), by running the driver's or kind's own module.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: balancer_info
short_description: Internal to the rollout role - read a backend through the balancer driver it uses
version_added: 1.1.0
description:
  - Internal to the C(grayrelease.canary.rollout) role, which reads every
    balancer with it whatever its kind. Playbooks should call the driver's
    own module, M(grayrelease.canary.haproxy_info) or
    M(grayrelease.canary.nginx_info).
  - O(balancer) names the driver and carries its connection options; every
    other option goes unchanged to the driver's read module, whose
    documentation lists them and whose return values this returns.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
options:
  balancer:
    description:
      - C(driver) (V(haproxy) or V(nginx)) and that driver's connection options
        (haproxy C(socket); nginx C(upstream_file), C(nginx_binary),
        C(access_log)).
      - An option the driver does not take, or one given both here and as
        a module option, fails the task naming it.
    type: dict
    required: true
notes:
  - Any other option is passed to the driver's module as is.
seealso:
  - module: grayrelease.canary.haproxy_info
  - module: grayrelease.canary.nginx_info
"""

EXAMPLES = r"""
- name: Read the app backend, whichever balancer the rollout is set to
  grayrelease.canary.balancer_info:
    balancer:
      driver: nginx
      upstream_file: /etc/nginx/conf.d/app-upstream.conf
    backend: app
"""

RETURN = r"""
backends:
  description: Per backend, per server state and counters, in the shape every driver returns.
  returned: always
  type: dict
  sample: {"app": {"app1": {"admin_state": "ready", "weight": 100, "status": "UP"}}}
process:
  description: The balancer process whose runtime state this is (C(pid)); a different pid later means a reload or restart.
  returned: always
  type: dict
  sample: {"pid": 4242}
"""
