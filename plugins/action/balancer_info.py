# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin grayrelease.canary.balancer_info: the rollout's balancer read.

Internal to the rollout role, as balancer_server is: ``balancer`` names the
driver and its connection options, and the driver's read module
(grayrelease.canary.haproxy_info, grayrelease.canary.nginx_info) runs with
every other argument unchanged.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.action.balancer_server import ActionModule as ServerAction


class ActionModule(ServerAction):
    KIND = 'info'
