# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service under systemd: its unit's state, its last journal lines, and
bringing it up after a switch (restart, watched until it answers on the
host or proves it did not stay up). Stdlib only: runs on the app hosts.

Private to grayrelease.canary.
"""

from __future__ import annotations

import time

from ansible_collections.grayrelease.canary.plugins.module_utils._health import build_targets, probe

from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import ReleaseError


LOG_LINES = 8


def unit_state(run, service):
    rc, out, err = run(['systemctl', 'show', service, '--property=ActiveState', '--property=SubState'])
    values = {}
    for line in (out or '').splitlines():
        key, sep, value = line.partition('=')
        if sep:
            values[key.strip()] = value.strip()
    return {'active_state': values.get('ActiveState', ''), 'sub_state': values.get('SubState', '')}


def last_log_lines(run, service, count=LOG_LINES):
    rc, out, err = run(['journalctl', '-u', service, '-n', str(count), '--no-pager', '-o', 'cat'])
    return [line for line in (out or '').splitlines() if line.strip()][-count:]


def _did_not_stay_up(run, service, state, what):
    return ('%s did not stay up after the %s (ActiveState=%s, SubState=%s); its last log lines: %s'
            % (service, what, state['active_state'], state['sub_state'],
               ' | '.join(last_log_lines(run, service)) or '(none)'))


# The unit's states that mean the process is gone (a crash on start).
GONE_STATES = ('failed', 'inactive', 'deactivating')
SETTLE_POLL = 0.2


def url_ready(url, timeout=1.0):
    """A callable: True once ``url`` answers 2xx (the service is serving)."""
    target = build_targets([url], {'status_codes': list(range(200, 300)), 'rise': 1, 'timeout': timeout,
                                   'headers': {}, 'validate_certs': True})[0]

    def ready():
        status, reason, latency = probe(target, timeout)
        return reason is None
    return ready


def bring_up(run, sleep, service, action, settle, daemon_reload, ready=None, clock=time.monotonic):
    """Restart (or start) ``service`` and watch it for up to ``settle`` s.

    It must be active at the end. With ``ready`` (a callable, e.g. url_ready)
    the watch ends early, as soon as the service answers; a unit whose
    process is gone fails at once, in its own words, instead of at the end.
    """
    if daemon_reload:
        rc, out, err = run(['systemctl', 'daemon-reload'])
        if rc != 0:
            raise ReleaseError('systemctl daemon-reload failed (rc %s): %s' % (rc, (err or out).strip()))
    # A unit that hit its start limit (a crash-looping release) refuses to
    # start until its failed state is cleared; rc ignored (nothing to clear).
    run(['systemctl', 'reset-failed', service])
    rc, out, err = run(['systemctl', action, service])
    what = 'restart' if action == 'restart' else 'start'
    if rc != 0:
        raise ReleaseError('systemctl %s %s failed (rc %s): %s; its last log lines: %s'
                           % (action, service, rc, (err or out).strip(),
                              ' | '.join(last_log_lines(run, service)) or '(none)'))
    if not settle or settle <= 0:
        return unit_state(run, service)
    if ready is None:
        sleep(settle)
    else:
        deadline = clock() + settle
        while True:
            state = unit_state(run, service)
            if state['active_state'] in GONE_STATES or state['sub_state'] == 'auto-restart':
                raise ReleaseError(_did_not_stay_up(run, service, state, what), service=state)
            if state['active_state'] == 'active' and ready():
                return state
            left = deadline - clock()
            if left <= 0:
                break
            sleep(min(SETTLE_POLL, left))
    state = unit_state(run, service)
    if state['active_state'] != 'active':
        raise ReleaseError(_did_not_stay_up(run, service, state, what), service=state)
    return state
