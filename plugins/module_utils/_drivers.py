# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer drivers and release kinds the rollout knows, and how it calls them.

Private to grayrelease.canary. The rollout's tasks call two action plugins,
``balancer_info`` (read a backend) and ``balancer_server`` (drain, ready,
weights), with ``balancer``: the driver's name and its connection options
(``{driver: haproxy, socket: ...}``). The plugins check it here and run the
driver's own module (``haproxy_info`` / ``haproxy_server``, ``nginx_info`` /
``nginx_server``) with those options added: one task per act whatever the
balancer, and each driver's module keeps its own documentation.

What a driver's modules return (the engine reads nothing else): per backend,
per server ``admin_state`` (ready, drain, maint), ``weight``,
``initial_weight``, ``status`` (UP when the balancer would send it traffic
and, where it checks health, finds it healthy), and the counters it has
(``req_tot``, ``hrsp_5xx``, ``scur``, ``rate``; missing where it has none),
and ``process.pid``: the process whose runtime state this is; another pid
later means the balancer was restarted or reloaded.

Release kinds work the same way: the rollout's release tasks call the
``rollout_release`` action plugin with ``release`` (``{kind: tarball}``,
``{kind: container, image: ..., digest: ...}``), which runs the kind's own
action plugin and module (``release``, ``container_release``) with those
options added. Both answer with the same keys (``current``, ``previous``,
``installed``, ``installed_now``, ...), so the engine reads one shape.

Capabilities say what a driver can observe, so the plan and the judge adapt:
``runtime_weights`` (a weight change needs no reload), ``live_counters``
(per-server request and 5xx counters to judge from; otherwise the request
log), ``health_checks`` (the balancer checks servers itself; otherwise the
collection's probe is the only health signal), ``drain_evidence`` (how a
finished drain is proven), ``reload_resets_runtime`` (a reload loses drains
and weights unless saved: the engine then halts when the pid changes).
"""

from __future__ import annotations

DRIVERS = {
    'haproxy': {
        'info': 'grayrelease.canary.haproxy_info',
        'server': 'grayrelease.canary.haproxy_server',
        'options': ('socket',),
        'capabilities': {'runtime_weights': True, 'live_counters': True, 'health_checks': True,
                         'drain_evidence': 'sessions', 'reload_resets_runtime': True},
    },
    'nginx': {
        'info': 'grayrelease.canary.nginx_info',
        'server': 'grayrelease.canary.nginx_server',
        'options': ('upstream_file', 'nginx_binary', 'access_log'),
        'capabilities': {'runtime_weights': False, 'live_counters': False, 'health_checks': False,
                         'drain_evidence': 'workers_or_connections', 'reload_resets_runtime': False},
    },
}


RELEASE_KINDS = {
    'tarball': {'action': 'grayrelease.canary.release', 'options': ('shared', 'owner', 'group')},
    'container': {'action': 'grayrelease.canary.container_release', 'options': ('image', 'digest', 'podman')},
}


class DriverError(ValueError):
    """A balancer or release setting the drivers and kinds cannot take."""


def module_call(balancer, kind, args):
    """(module name, its arguments) for ``kind`` ('info' or 'server') of the
    driver ``balancer`` names, its connection options merged into ``args``."""
    if not isinstance(balancer, dict):
        raise DriverError('balancer=%r must be a mapping with a driver (one of %s) and its options'
                          % (balancer, ', '.join(sorted(DRIVERS))))
    name = balancer.get('driver')
    if name not in DRIVERS:
        raise DriverError('balancer driver=%r is not one of %s (canary_balancer_driver)'
                          % (name, ', '.join(sorted(DRIVERS))))
    driver = DRIVERS[name]
    unknown = sorted(set(balancer) - set(driver['options']) - {'driver'})
    if unknown:
        raise DriverError('balancer option(s) %s do not apply to the %s driver (it takes %s)'
                          % (', '.join(unknown), name, ', '.join(driver['options'])))
    clash = sorted(set(balancer) & set(args))
    if clash:
        raise DriverError('%s given both in balancer and as an argument' % ', '.join(clash))
    merged = dict(args)
    merged.update((k, v) for k, v in balancer.items() if k != 'driver' and v is not None)
    return driver[kind], merged


def release_call(release, args):
    """(action name, its arguments) for the release kind ``release`` names, its options merged into ``args``."""
    if not isinstance(release, dict) or release.get('kind') not in RELEASE_KINDS:
        raise DriverError('release kind=%r is not one of %s (canary_release_kind)'
                          % ((release or {}).get('kind') if isinstance(release, dict) else release,
                             ', '.join(sorted(RELEASE_KINDS))))
    kind = RELEASE_KINDS[release['kind']]
    unknown = sorted(set(release) - set(kind['options']) - {'kind'})
    if unknown:
        raise DriverError('release option(s) %s do not apply to the %s kind (it takes %s)'
                          % (', '.join(unknown), release['kind'], ', '.join(kind['options']) or 'none'))
    merged = dict(args)
    merged.update((k, v) for k, v in release.items() if k != 'kind' and v not in (None, ''))
    return kind['action'], merged


def capabilities(name):
    return dict(DRIVERS[name]['capabilities'])
