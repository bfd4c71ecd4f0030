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
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import DriverError, module_call


class ActionModule(ActionBase):
    KIND = 'server'
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            module, args = module_call(args.pop('balancer', None), self.KIND, args)
        except DriverError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(self._execute_module(module_name=module, module_args=args, task_vars=task_vars))
        return result
