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
from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import DRIVERS
from ansible_collections.grayrelease.canary.plugins.module_utils._routed import canary_backend, prepare


class ActionModule(ServerAction):
    KIND = 'info'

    def routed(self, module, args, routing, task_vars):
        """Under canary_routing: the canary backend read too (the analysis: the canary's
        counters are there), or the balancer made ready for the run (pre-flight)."""
        result = self.execute(module, args, task_vars)
        if result.get('failed'):
            return result
        spec = routing['spec']
        if routing.get('read_canary'):
            extra = self.execute(module, dict(args, backend=canary_backend(spec), probe=None, claims=None), task_vars)
            if extra.get('failed'):
                return dict(extra, msg='reading backend %s: %s' % (canary_backend(spec), extra.get('msg')))
            result['backends'].update(extra.get('backends') or {})
        if routing.get('prepare'):
            server_module = DRIVERS['haproxy']['server']
            ok, done = prepare(lambda name, call_args: self.execute(name, call_args, task_vars), server_module, spec,
                               routing['prepare'], socket=args.get('socket'))
            result['routing'] = done['calls']
            result['changed'] = any(c['changed'] for c in done['calls'])
            if not ok:
                result.update(failed=True, msg=done['msg'])
        return result
