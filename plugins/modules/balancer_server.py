#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin of the same name does the work
# (plugins/action/balancer_server.py), by running the driver's or kind's own module.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: balancer_server
short_description: Internal to the rollout role - drain, ready or re-weight through the balancer driver it uses
version_added: 1.1.0
description:
  - Internal to the C(grayrelease.canary.rollout) role, which acts on every
    balancer with it whatever its kind. Playbooks should call the driver's
    own module, M(grayrelease.canary.haproxy_server) or
    M(grayrelease.canary.nginx_server).
  - O(balancer) names the driver and carries its connection options; every
    other option goes unchanged to the driver's module, whose documentation
    lists them and whose return values this returns.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: The driver's module predicts its changes and makes none.
  diff_mode:
    support: full
    description: The driver's module reports the state before and after.
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
  - module: grayrelease.canary.haproxy_server
  - module: grayrelease.canary.nginx_server
"""

EXAMPLES = r"""
- name: Drain app2 on whichever balancer the rollout is set to
  grayrelease.canary.balancer_server:
    balancer:
      driver: haproxy
      socket: /run/haproxy/admin.sock
    backend: app
    server: app2
    state: drain
"""

RETURN = r"""
servers:
  description: Per server its state after the task (in check mode, the predicted state), in the shape every driver returns.
  returned: always
  type: dict
  sample: {"app2": {"admin_state": "drain", "weight": 100}}
before:
  description: Per server its state before the task.
  returned: always
  type: dict
  sample: {"app2": {"admin_state": "ready", "weight": 100}}
commands:
  description: What the driver did (runtime API commands, or the upstream file edits and reloads).
  returned: always
  type: list
  elements: str
  sample: ["set server app/app2 state drain"]
process:
  description: The balancer process whose runtime state this is (C(pid)).
  returned: success
  type: dict
  sample: {"pid": 4242}
"""
