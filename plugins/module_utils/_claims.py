# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Servers out of rotation, and who put them there: the claims of runs.

Private to grayrelease.canary. A run that drains a server or moves its
weight off the initial one writes a claim first (on the balancer, beside
HAProxy); putting the server back at its initial weight, ready, removes it.
The next run's pre-flight repairs a server that is out of rotation or
off-weight only when a claim says a run put it exactly there: whatever an
operator did (a drain, maintenance, a weight), and whatever changed a
server after a run left it, is theirs and is left alone.

The file is JSON: {backend: {server: {admin_state, weight, owner, at}}}.
Written whole (temporary file opened O_EXCL|O_NOFOLLOW, then renamed) in a
directory only its owner can write: a local user must not be able to plant
a claim (the next run would ready an operator's server) or a link.
"""

from __future__ import annotations

import json
import os

from ansible_collections.grayrelease.canary.plugins.module_utils._lock import LockError, check_directory, make_private_dirs


class ClaimsError(Exception):
    pass


def out_of_rotation(infos):
    """server -> why it takes no traffic on this balancer (maint, drain, not UP, weight 0), for those that do not."""
    out = {}
    for server, info in infos.items():
        status = info.get('status') or ''
        if info.get('admin_state') in ('maint', 'drain'):
            out[server] = info['admin_state']
        elif not status.startswith('UP'):
            out[server] = status or 'no status'
        elif info.get('weight') == 0:
            out[server] = 'weight 0'
    return out


def is_normal(info):
    """Ready at its initial weight: what a server is when no run holds it."""
    return info.get('admin_state') == 'ready' and info.get('weight') == info.get('initial_weight')


def matches(claim, info):
    """Is the server still exactly where the claiming run put it?"""
    return bool(claim) and claim.get('admin_state') == info.get('admin_state') and claim.get('weight') == info.get('weight')


def load(path):
    """{backend: {server: claim}}; {} when there is no file. A damaged file reads as no claims (nothing is
    repaired, everything out is left alone and reported), never as a crash."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
    except OSError:
        return {}
    try:
        with os.fdopen(fd, 'r') as handle:
            data = json.load(handle)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return dict((b, dict((s, c) for s, c in servers.items() if isinstance(c, dict)))
                for b, servers in data.items() if isinstance(servers, dict))


def save(path, data):
    # The lock's directory (the claims sit beside the lock): the same rules as the lock's.
    directory = os.path.realpath(os.path.dirname(path) or '.')
    try:
        check_directory(directory)
        make_private_dirs(directory)
    except LockError as exc:
        raise ClaimsError(exc.msg)
    path = os.path.join(directory, os.path.basename(path))
    tmp = '%s.%d.tmp' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def claim(path, backend, planned, current, owner, now):
    """Before a change: claim every server the change leaves off normal
    (``planned``: server -> its info after the change), and drop the claims
    of servers of the backend found normal (``current``: the whole backend
    now; a claim left by a run killed between its ready and the claim's
    removal). Written only when something changes."""
    data = load(path)
    claims = data.get(backend, {})
    kept = dict((s, c) for s, c in claims.items() if s not in current or not is_normal(current[s]))
    for server, info in planned.items():
        if not is_normal(info):
            kept[server] = {'admin_state': info['admin_state'], 'weight': info['weight'], 'owner': owner, 'at': now}
    _store(path, data, backend, claims, kept)


def release(path, backend, after):
    """After a change: the claims of the servers it left normal go."""
    data = load(path)
    claims = data.get(backend, {})
    kept = dict((s, c) for s, c in claims.items() if s not in after or not is_normal(after[s]))
    _store(path, data, backend, claims, kept)


def _store(path, data, backend, old, new):
    if new == old:
        return
    if new:
        data[backend] = new
    else:
        data.pop(backend, None)
    save(path, data)
