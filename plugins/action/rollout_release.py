# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin grayrelease.canary.rollout_release: the rollout's release act.

Internal to the rollout role (users call grayrelease.canary.release or
grayrelease.canary.container_release directly). ``release`` names the kind
and carries its options (``{kind: container, image: repo@sha256:...}``);
every other argument goes unchanged to the kind's own action plugin, which
runs as if the task had named it (it copies the artifact, pins the image,
runs its module): one task per act, whatever the kind. See
plugins/module_utils/_drivers.py.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import DriverError, release_call


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        args = dict(self._task.args)
        try:
            name, args = release_call(args.pop('release', None), args)
        except DriverError as exc:
            raise AnsibleActionFail(str(exc)) from None
        task = self._task.copy()
        task.args = args
        action = self._shared_loader_obj.action_loader.get(
            name, task=task, connection=self._connection, play_context=self._play_context, loader=self._loader,
            templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return action.run(tmp=tmp, task_vars=task_vars)
