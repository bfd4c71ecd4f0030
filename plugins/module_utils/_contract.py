# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract between the rollout role's tasks and the engine, in one table.

Private to grayrelease.canary. The engine names a phase and, per kind of
actor (``apps``, ``balancers``, ``probe``, ``lock``), the hosts that act; the
role's task for that phase and actor runs the module below and registers its
result under the actor's register name; the coordinator (rollout_state) reads
each named host's register back. A task whose register name does not match
reads as "no answer", and the engine would mark a healthy host lost: the unit
test tests/unit/plugins/module_utils/test_contract.py parses
roles/rollout/tasks/*.yml against this table.

Pure data, no imports: the engine, the action plugin, the progress view and
the tests all read it.
"""

from __future__ import annotations

# What each kind of actor registers.
REGISTERS = {
    'apps': 'rollout_app_result',
    'balancers': 'rollout_lb_result',
    'probe': 'rollout_probe_result',
    'lock': 'rollout_lock_result',
}

# The analysis act: result key -> (actor, register).
ANALYSIS_REGISTERS = {
    'before': ('balancers', 'rollout_lb_before'),
    'after': ('balancers', 'rollout_lb_after'),
    'samples': ('probe', 'rollout_probe_result'),
    'logs': ('balancers', 'rollout_log_result'),
    'prometheus': ('probe', 'rollout_prom_result'),
}

# The balancer acts go through the driver-picking action plugins; the
# release acts through the kind-picking ones.
BALANCER_READ = 'grayrelease.canary.balancer_info'
BALANCER_ACT = 'grayrelease.canary.balancer_server'
RELEASE = 'grayrelease.canary.rollout_release'
LOCK = 'grayrelease.canary.rollout_lock'
HEALTH = 'grayrelease.canary.health_check'
# A hook's outcome on a host: the user's tasks run any module; the role records
# success or the failed task (rescued) with set_fact, under the apps' register.
HOOK = 'ansible.builtin.set_fact'

# phase -> actor -> the modules its task may run. The order is the order of a run.
PHASES = {
    'lock': {'lock': (LOCK,)},
    'survey': {'balancers': (BALANCER_READ,), 'probe': (HEALTH,)},
    'releases': {'apps': (RELEASE,)},
    'repair': {'balancers': (BALANCER_ACT,)},
    'before_drain': {'apps': (HOOK,)},
    'drain': {'balancers': (BALANCER_ACT,), 'lock': (LOCK,)},
    'switch': {'apps': (RELEASE, HOOK)},
    'health': {'probe': (HEALTH,)},
    'ready': {'balancers': (BALANCER_ACT,)},
    'after_ready': {'apps': (HOOK,)},
    'analysis': {'balancers': (BALANCER_READ, 'grayrelease.canary.haproxy_log'),
                 'probe': ('grayrelease.canary.http_sample', 'grayrelease.canary.prometheus_query')},
    'restore': {'balancers': (BALANCER_ACT,)},
    'pause': {},
    'rollback_drain': {'balancers': (BALANCER_ACT,), 'lock': (LOCK,)},
    'rollback_switch': {'apps': (RELEASE,)},
    'rollback_health': {'probe': (HEALTH,)},
    'rollback_ready': {'balancers': (BALANCER_ACT,)},
    'cleanup_weights': {'balancers': (BALANCER_ACT,)},
    'unstage': {'apps': (RELEASE,)},
    'final_versions': {'apps': (RELEASE,)},
    'unlock': {'lock': (LOCK,)},
}

# A batch's phases, in order (what the progress view and the report time).
BATCH_PHASES = ('before_drain', 'drain', 'switch', 'health', 'ready', 'after_ready', 'analysis', 'restore')
