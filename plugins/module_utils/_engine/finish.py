# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The finish: the final versions read, the lock released, the run's decision.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import collect, describe_failures
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.report import decide


def begin_finish(state, now):
    state['messages'] = []
    state['phase'] = 'finish'
    # Only hosts a failure left uncertain are asked; the others' versions
    # are what their last release call returned.
    apps = [h for h in state['app_hosts'] if h not in state['lost'] and state['versions'].get(h) is None]
    for host in state['app_hosts']:
        state['final_versions'][host] = state['versions'].get(host) or 'unknown'
    if apps:
        state['act'] = {'phase': 'final_versions', 'apps': apps}
    else:
        _unlock(state)
    return state


def after_final_versions(state, results, now):
    ok, failed = collect(state, 'apps', results, 'the finish')
    for host in ok:
        state['final_versions'][host] = ok[host].get('current') or 'unknown'
    _unlock(state)


def _unlock(state):
    state['act'] = {'phase': 'unlock', 'lock': [state['lock_host']]} if state['lock_held'] else {}


def finish(state, now):
    """The decision; the lock was released before (begin_finish)."""
    state['messages'] = []
    state['decision'] = decide(state)
    state['finished'] = now
    state['act'] = {}
    return state


def after_unlock(state, results, now):
    ok, failed = collect(state, 'lock', results, 'the finish')
    if failed:
        state['notes'].append('could not release the lock (it expires after canary_lock_ttl): %s'
                              % describe_failures('unlock', failed))
    else:
        state['lock_held'] = False
    state['act'] = {}
