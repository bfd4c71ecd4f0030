# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for grayrelease.canary.health_check.

ansible-core renames a module's `results` key to `ansible_module_results`
when it is not a list (it is reserved for loop results), but the documented
return of health_check is `results`: url -> {...}. The module therefore
returns it as `target_results` and this plugin, which runs on the controller
after the module ran wherever the task is delegated, puts it back under
`results`. Everything else is the normal module execution.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

TRANSPORT_KEY = 'target_results'


class ActionModule(ActionBase):

    _supports_check_mode = True
    # An async job's status would come back through async_status, which
    # does not pass this plugin: results would keep the transport key.
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        module_result = self._execute_module(task_vars=task_vars)
        if TRANSPORT_KEY in module_result:
            module_result['results'] = module_result.pop(TRANSPORT_KEY)
        result = merge_hash(result, module_result)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
