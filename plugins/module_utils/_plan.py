# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout planning: turns a host list and cumulative steps into batches.

Private to grayrelease.canary. Pure Python, no Ansible imports, so the
filter plugin, the unit tests and the benchmark all call the same code.
Errors are raised as PlanError; the filter re-raises them as
AnsibleFilterError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction

DEFAULT_STEPS = (1, '25%', '50%', '100%')
ZONE_MODES = ('spread', 'sequential')

# A decimal percentage such as "25%", "12.5%" or ".5%". Parsed with Fraction so
# that ceil/floor are exact: float arithmetic would turn 14.000000000000002
# into a target of 15.
_PERCENT_RE = re.compile(r'^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*\Z')


class PlanError(ValueError):
    """Invalid planner input; the message names the offending value."""


def _is_int(value):
    # bool is a subclass of int, but `true` in a step list is a typo, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value):
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _parse_percent(value, what):
    """Return N of "N%" as a Fraction with 0 < N <= 100, or raise."""
    match = _PERCENT_RE.match(value)
    if not match:
        raise PlanError('%s %r is neither an integer >= 1 nor a percentage "N%%" with 0 < N <= 100'
                        % (what, value))
    pct = Fraction(match.group(1))
    if pct <= 0 or pct > 100:
        raise PlanError('%s %r is out of range: a percentage must be > 0%% and <= 100%%' % (what, value))
    return pct


def resolve_steps(steps, total):
    """Resolve cumulative step targets to host counts (capped, collapsed)."""
    if not _is_list(steps) or len(steps) == 0:
        raise PlanError('steps must be a non-empty list of integers >= 1 or "N%%" strings, got %r' % (steps,))
    targets = []
    previous = None
    for index, step in enumerate(steps):
        what = 'steps[%d]' % index
        if _is_int(step):
            if step < 1:
                raise PlanError('%s %r must be >= 1' % (what, step))
            target = min(step, total)
        elif isinstance(step, str):
            target = int(math.ceil(_parse_percent(step, what) * total / 100))
        else:
            raise PlanError('%s %r (%s) is neither an integer >= 1 nor a percentage "N%%"'
                            % (what, step, type(step).__name__))
        if previous is not None and target < previous[1]:
            raise PlanError('steps must be non-decreasing: %s %r resolves to %d hosts, below the %d of step %r'
                            % (what, step, target, previous[1], previous[0]))
        previous = (step, target)
        if not targets or targets[-1] != target:
            targets.append(target)
    return targets


def resolve_max_unavailable(max_unavailable, total):
    """Resolve max_unavailable to a host count >= 1, or None for no limit."""
    if max_unavailable is None:
        return None
    if _is_int(max_unavailable):
        if max_unavailable < 1:
            raise PlanError('max_unavailable %r must be >= 1' % (max_unavailable,))
        return max_unavailable
    if isinstance(max_unavailable, str):
        pct = _parse_percent(max_unavailable, 'max_unavailable')
        return max(1, int(math.floor(pct * total / 100)))
    raise PlanError('max_unavailable %r (%s) is neither an integer >= 1 nor a percentage "N%%"'
                    % (max_unavailable, type(max_unavailable).__name__))


def _check_hosts(hosts):
    if not _is_list(hosts):
        raise PlanError('the input must be a list of host names, got %r' % (hosts,))
    seen = set()
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise PlanError('host name %r is not a non-empty string' % (host,))
        if host in seen:
            raise PlanError('duplicate host %r in the host list' % (host,))
        seen.add(host)
    return seen


def _check_done(done, known):
    if done is None:
        return set()
    if not _is_list(done):
        raise PlanError('done must be a list of host names, got %r' % (done,))
    result = set()
    for host in done:
        if not isinstance(host, str) or host not in known:
            raise PlanError('done lists %r, which is not in the host list' % (host,))
        # A repeated name in done is harmless: it is a set of finished hosts.
        result.add(host)
    return result


def _zone_of(zones, host):
    try:
        zone = zones[host]
    except KeyError:
        raise PlanError('host %r has no zone in zones' % (host,))
    if zone is None or isinstance(zone, (bool, Mapping)) or _is_list(zone):
        raise PlanError('zone %r of host %r is not a zone name' % (zone, host))
    return zone


def _order(hosts, finished, zones, zone_mode):
    """Pending hosts in roll order, plus the zone of each when zones are set."""
    if zones is None:
        return [h for h in hosts if h not in finished], None
    zone_order = []
    members = {}
    host_zone = {}
    # Zones are ordered by first appearance in the whole host list (done hosts
    # included) so that a resumed plan keeps the zone order of the first run.
    for host in hosts:
        zone = _zone_of(zones, host)
        host_zone[host] = zone
        if zone not in members:
            members[zone] = []
            zone_order.append(zone)
        if host not in finished:
            members[zone].append(host)
    if zone_mode == 'sequential':
        ordered = [h for zone in zone_order for h in members[zone]]
    else:
        queues = [members[zone] for zone in zone_order if members[zone]]
        ordered = []
        depth = 0
        while queues:
            ordered.extend(q[depth] for q in queues)
            depth += 1
            queues = [q for q in queues if len(q) > depth]
    return ordered, host_zone


def _split(batch, size):
    if size is None or len(batch) <= size:
        return [batch]
    return [batch[i:i + size] for i in range(0, len(batch), size)]


def plan(hosts, steps=DEFAULT_STEPS, max_unavailable=None, zones=None, zone_mode='spread', done=None):
    """Return the list of batches (lists of host names) in roll order."""
    return [batch for step in plan_steps(hosts, steps, max_unavailable, zones, zone_mode, done) for batch in step]


def plan_steps(hosts, steps=DEFAULT_STEPS, max_unavailable=None, zones=None, zone_mode='spread', done=None):
    """Return the plan grouped by step: a list of steps, each a list of batches.

    The same batches as plan(), in the same order; a step that max_unavailable
    or a zone boundary splits is several batches of one step. Steps already
    reached by the done hosts are left out.
    """
    known = _check_hosts(hosts)
    total = len(hosts)
    targets = resolve_steps(steps, total)
    limit = resolve_max_unavailable(max_unavailable, total)
    if zone_mode not in ZONE_MODES:
        raise PlanError('zone_mode %r is not one of %s' % (zone_mode, ', '.join(ZONE_MODES)))
    if zones is not None and not isinstance(zones, Mapping):
        raise PlanError('zones must be a dict of host name -> zone name, got %r' % (zones,))
    finished = _check_done(done, known)
    ordered, host_zone = _order(hosts, finished, zones, zone_mode)

    planned = []
    progress = len(finished)
    position = 0
    for target in targets:
        if target <= progress:
            continue
        step_hosts = ordered[position:position + target - progress]
        position += len(step_hosts)
        progress = target
        if host_zone is not None and zone_mode == 'sequential':
            parts = []
            for host in step_hosts:
                if parts and host_zone[parts[-1][-1]] == host_zone[host]:
                    parts[-1].append(host)
                else:
                    parts.append([host])
        else:
            parts = [step_hosts]
        planned.append([batch for part in parts for batch in _split(part, limit)])
    return planned


def canary_hosts(done_before, plan_steps):
    """The canary: the hosts done before this run plus those of the first step's batches."""
    return list(done_before) + [h for batch in (plan_steps[0] if plan_steps else []) for h in batch]
