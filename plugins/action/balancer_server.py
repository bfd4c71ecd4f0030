# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin grayrelease.canary.balancer_server: the rollout's balancer act.

Internal to the rollout role (users call the driver's module,
grayrelease.canary.haproxy_server or grayrelease.canary.nginx_server,
directly). ``balancer`` names the driver and carries its connection options
(``{driver: haproxy, socket: /run/haproxy/admin.sock}``); every other
argument goes to the driver's module unchanged, which runs as if the task
had named it: one task per act, whatever the balancer. See
plugins/module_utils/_drivers.py.

``routing`` (the rollout under canary_routing): the act becomes the module
calls plugins/module_utils/_routed.py orders around it (the user routing's
maps, the canary backend), still one task.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import DriverError, module_call
from ansible_collections.grayrelease.canary.plugins.module_utils._routed import routed_act


class ActionModule(ActionBase):
    KIND = 'server'
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        routing = args.pop('routing', None)
        try:
            module, args = module_call(args.pop('balancer', None), self.KIND, args)
        except DriverError as exc:
            raise AnsibleActionFail(str(exc)) from None
        if routing:
            result.update(self.routed(module, args, routing, task_vars))
        else:
            result.update(self.execute(module, args, task_vars))
        return result

    def execute(self, module, args, task_vars):
        # A copy: _execute_module adds its own keys to the arguments it is given.
        return self._execute_module(module_name=module, module_args=dict(args), task_vars=task_vars)

    def routed(self, module, args, routing, task_vars):
        return routed_act(lambda name, call_args: self.execute(name, call_args, task_vars), module, args, routing,
                          socket=args.get('socket'))
