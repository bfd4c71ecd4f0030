# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout engine: one `rollout` state object and every decision about it.

Private to grayrelease.canary. Pure Python (no Ansible imports, clock passed
in), so every decision is unit-tested without a fleet.

How it drives a run. The rollout play has three kinds of participants: the
coordinator (localhost), which runs only this code; the balancers; and the
app hosts (plus the probe host, usually the first balancer). The state holds
an `act`: which participants do what next (`apps`, `balancers`, `probe`,
`lock`: host lists, plus the arguments). Each actor task in the play runs
only on the hosts its list names; the coordinator then calls `record()` with
what every named host returned (or None when the host is gone), and the
engine decides the next `act`. A host that does not answer is marked lost
and is never asked again; the run halts. Nobody acts without a fresh act from
a live coordinator, so app hosts can never roll on alone.

The state is a plain dict (JSON-serialisable, it lives in a fact).
"""

from __future__ import annotations

import ast
import copy
import json
import re
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._claims import (
    is_normal,
    matches as claim_matches,
    out_of_rotation,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._judge import (
    CRITICAL_DIFFERENCE,
    CRITICAL_RATIO,
    METRIC_DEFAULTS,
    JudgeError,
    check_critical,
    format_p,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import (
    PlanError,
    plan_steps,
    resolve_max_unavailable,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._power import (
    UNDERPOWERED_POLICIES,
    PowerError,
    describe as describe_power,
    fix as fix_power,
    plan as plan_power,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._progress import record_analysis
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact, redact_url
from ansible_collections.grayrelease.canary.plugins.module_utils._release import SHA256_RE, is_url
from ansible_collections.grayrelease.canary.plugins.module_utils._sequential import look_confidence
from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import (
    RolloutError,
    analysis_metrics,
    analysis_sources,
    balancer_consensus,
    canary_metrics,
    check_metric_settings,
    judge_analysis,
    merge_logs,
    prometheus_instance,
    traffic_report,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import WeightsError, canary_weights

VERSION_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]*\Z')
# HAProxy names: what the runtime API accepts without quoting (no spaces, no
# '/', nothing a socket command could be smuggled in with).
NAME_RE = re.compile(r'^[A-Za-z0-9_.:-]+\Z')
VERDICT_POLICIES = ('rollback', 'promote')
ZONE_MODES = ('spread', 'sequential')
TRUE_STRINGS = ('true', 'yes', 'on', '1', 'y')
FALSE_STRINGS = ('false', 'no', 'off', '0', 'n')

# Every setting the rollout reads, with its default. The role's
# defaults/main.yml documents the same names; this is what the engine
# falls back to when a caller did not set one at all.
DEFAULTS = {
    'canary_steps': [1, '25%', '50%', '100%'],
    'canary_max_unavailable': '25%',
    'canary_zone_mode': 'spread',
    'canary_traffic_percent': 10,
    'canary_pause': 0,
    'canary_analysis_interval': 10,
    'canary_analysis_count': 6,
    'canary_drain_timeout': 30,
    'canary_health_deadline': 60,
    'canary_auto_rollback': True,
    'canary_on_marginal': 'rollback',
    'canary_on_inconclusive': 'rollback',
    'canary_report_dir': './canary-reports',
    'canary_release_keep': 5,
    'canary_lock_ttl': 600,
    'canary_lock_takeover': False,
    'canary_prestage': True,
    'canary_artifact_remote': False,
    'canary_settle_seconds': 2,
    'canary_haproxy_socket': '/run/haproxy/admin.sock',
    'canary_port': 8080,
    'canary_limit': [],
    'canary_judge_every_step': True,
    # Stricter than canary_judge's 0.98: bench/calibrate.py measured it
    # (false alarms with 0.5% background errors 4.3% -> 1.8%, detection of a
    # 2% error rate unchanged at the default window).
    'canary_confidence': 0.995,
    'canary_critical_ratio': CRITICAL_RATIO,
    'canary_critical_difference': CRITICAL_DIFFERENCE,
    'canary_request_rate': '',
    'canary_min_power': 0.8,
    'canary_underpowered': 'warn',
}


# How Ansible reports a task that hit its `timeout`: the host froze mid-task.
TASK_TIMEOUT = 'in the expected time frame'


class EngineError(ValueError):
    """A decision cannot be made from the given input (a bug in the caller)."""


# ---------------------------------------------------------------- settings

def _as_bool(name, value, errors):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS
    errors.append('%s=%r must be true or false' % (name, value))
    return None


def _as_number(name, value, errors, low=None, high=None, low_open=False, integer=False):
    number = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip()) if not integer else int(value.strip())
        except ValueError:
            number = None
    if number is None or (integer and int(number) != number):
        errors.append('%s=%s must be %s' % (name, value, 'an integer' if integer else 'a number'))
        return None
    number = int(number) if integer else number
    if low is not None and (number < low or (low_open and number == low)):
        errors.append('%s=%s must be %s %s' % (name, value, '>' if low_open else '>=', low))
        return None
    if high is not None and number > high:
        errors.append('%s=%s must be <= %s' % (name, value, high))
        return None
    return number


def _step_item(item):
    # Survey answers and -e key=value give strings: '2' means 2.
    if isinstance(item, str) and re.match(r'^\s*\d+\s*\Z', item):
        return int(item)
    if isinstance(item, str):
        return item.strip()
    return item


def coerce_steps(value):
    """canary_steps from a list, a JSON/Python list literal, or "1,25%,100%"."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith('['):
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise PlanError('canary_steps %r is not a list: write it as [1, "25%%", "100%%"] or 1,25%%,100%%'
                                    % (value,))
        else:
            value = [part for part in text.split(',') if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise PlanError('canary_steps %r is not a list of integers and "N%%" strings' % (value,))
    return [_step_item(item) for item in value]


def coerce_max_unavailable(value):
    return _step_item(value)


def _check_judge_settings(get, settings, errors):
    """The judge's confidence and critical thresholds, and the sample-size planner's variables."""
    settings['confidence'] = _as_number('canary_confidence', get('canary_confidence'), errors, low=0.5, high=0.9999)
    for option in ('critical_ratio', 'critical_difference'):
        name = 'canary_' + option
        value = _as_number(name, get(name), errors)
        if value is not None:
            try:
                value = check_critical(option, value)
            except JudgeError as exc:
                errors.append('%s=%s' % (name, str(exc)[len(option) + 1:]))
                value = None
        settings[option] = value
    rate = get('canary_request_rate')
    settings['request_rate'] = (None if rate in (None, '') else
                                _as_number('canary_request_rate', rate, errors, low=0))
    settings['min_power'] = _as_number('canary_min_power', get('canary_min_power'), errors, low=0, high=1,
                                       low_open=True)
    underpowered = get('canary_underpowered')
    if underpowered not in UNDERPOWERED_POLICIES:
        errors.append("canary_underpowered=%r must be 'warn' or 'fail'" % (underpowered,))
    settings['underpowered'] = underpowered


def _judge_options(settings, confidence=None):
    """The judge's options; `confidence`: a look's share of canary_confidence, when several steps are judged."""
    return {'confidence': confidence or settings.get('confidence') or DEFAULTS['canary_confidence'],
            'critical_ratio': settings.get('critical_ratio', CRITICAL_RATIO),
            'critical_difference': settings.get('critical_difference', CRITICAL_DIFFERENCE),
            # A canary failing 7 of its 12 real requests fails, few as they are.
            'exact_below_min_samples': True}


def check_settings(raw, artifact_exists=None):
    """Validate and normalise every rollout input; returns (settings, errors).

    raw: the canary_* variables as the play sees them (strings from surveys
    included). Every error names the variable and its bad value.
    """
    errors = []

    def get(key):
        return raw.get(key, DEFAULTS.get(key))

    settings = {}
    version = raw.get('canary_version')
    if version is None or version == '':
        errors.append('canary_version is not set: pass -e canary_version=V')
    elif not isinstance(version, (str, int, float)) or not VERSION_RE.match(str(version)):
        errors.append("canary_version=%r must be a release name of letters, digits, '.', '_', '+', '-' "
                      "(it becomes a directory name)" % (version,))
    settings['version'] = str(version) if version is not None else ''
    _check_artifact(raw, get, settings, errors, artifact_exists)

    for key, name in (('backend', 'canary_backend'), ('service', 'canary_service')):
        value = raw.get(name)
        if not value or not isinstance(value, str):
            errors.append('%s is required (an inventory variable the app and balancer hosts see), got %r'
                          % (name, value))
        elif not NAME_RE.match(value) or value in ('.', '..'):
            errors.append('%s=%r may only contain letters, digits and _ . : - (and is not . or ..)' % (name, value))
        settings[key] = value or ''

    try:
        settings['steps'] = coerce_steps(get('canary_steps'))
        settings['max_unavailable'] = coerce_max_unavailable(get('canary_max_unavailable'))
        # Validated against a fleet of 100 here; the real plan is made later.
        plan_steps(['h%d' % i for i in range(100)], settings['steps'], settings['max_unavailable'])
    except PlanError as exc:
        errors.append(str(exc).replace('steps[', 'canary_steps[').replace('max_unavailable ', 'canary_max_unavailable '))
    zone_mode = get('canary_zone_mode')
    if zone_mode not in ZONE_MODES:
        errors.append('canary_zone_mode=%r must be spread or sequential' % (zone_mode,))
    settings['zone_mode'] = zone_mode
    settings['traffic_percent'] = _as_number('canary_traffic_percent', get('canary_traffic_percent'), errors,
                                             low=0, high=100, low_open=True)
    pause = get('canary_pause')
    if pause == 'manual':
        settings['pause'] = 'manual'
    else:
        settings['pause'] = _as_number('canary_pause', pause, errors, low=0)
        if settings['pause'] is None:
            errors[-1] = "canary_pause=%r must be seconds >= 0 or 'manual'" % (pause,)
    settings['analysis_interval'] = _as_number('canary_analysis_interval', get('canary_analysis_interval'), errors,
                                               low=0, low_open=True)
    settings['analysis_count'] = _as_number('canary_analysis_count', get('canary_analysis_count'), errors,
                                            low=1, integer=True)
    settings['drain_timeout'] = _as_number('canary_drain_timeout', get('canary_drain_timeout'), errors, low=0)
    settings['health_deadline'] = _as_number('canary_health_deadline', get('canary_health_deadline'), errors,
                                             low=0, low_open=True)
    settings['release_keep'] = _as_number('canary_release_keep', get('canary_release_keep'), errors, low=1,
                                          integer=True)
    settings['lock_ttl'] = _as_number('canary_lock_ttl', get('canary_lock_ttl'), errors, low=1, integer=True)
    settings['settle_seconds'] = _as_number('canary_settle_seconds', get('canary_settle_seconds'), errors, low=0)
    settings['port'] = _as_number('canary_port', get('canary_port'), errors, low=1, high=65535, integer=True)
    settings['auto_rollback'] = _as_bool('canary_auto_rollback', get('canary_auto_rollback'), errors)
    settings['prestage'] = _as_bool('canary_prestage', get('canary_prestage'), errors)
    settings['lock_takeover'] = _as_bool('canary_lock_takeover', get('canary_lock_takeover'), errors)
    settings['judge_every_step'] = _as_bool('canary_judge_every_step', get('canary_judge_every_step'), errors)
    for key in ('canary_on_marginal', 'canary_on_inconclusive'):
        value = get(key)
        if value not in VERDICT_POLICIES:
            errors.append("%s=%r must be 'rollback' or 'promote'" % (key, value))
        settings[key[len('canary_'):]] = value
    _check_judge_settings(get, settings, errors)
    settings['report_dir'] = str(get('canary_report_dir'))
    settings['socket'] = str(get('canary_haproxy_socket'))
    root = raw.get('canary_root') or ('/opt/%s' % settings['service'])
    if not isinstance(root, str) or not root.startswith('/') or '/../' in root + '/':
        errors.append('canary_root=%r must be an absolute path without ..' % (root,))
    settings['root'] = root
    lock_path = raw.get('canary_lock_path') or '/var/lib/grayrelease-canary/%s.lock' % settings['backend']
    if not isinstance(lock_path, str) or not lock_path.startswith('/') or '/../' in lock_path + '/':
        errors.append('canary_lock_path=%r must be an absolute path without ..' % (lock_path,))
    settings['lock_path'] = lock_path
    settings['claims_path'] = '%s/%s.claims.json' % (lock_path.rsplit('/', 1)[0] if isinstance(lock_path, str) else '',
                                                     settings['backend'])
    settings['limit'] = _limit(get('canary_limit'), errors)
    settings['metrics'] = check_metric_settings(raw, errors)
    return settings, errors


def _limit(value, errors):
    """canary_limit: app hosts (a list, or names separated by commas) this run rolls; [] rolls them all."""
    if value in (None, ''):
        return []
    names = value.split(',') if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        errors.append('canary_limit=%r must be app host names, a list or separated by commas' % (value,))
        return []
    return [n.strip() for n in names]


def _check_artifact(raw, get, settings, errors, artifact_exists):
    """canary_artifact: a controller path, an http(s) URL, or (canary_artifact_remote) the hosts' own copy."""
    artifact = raw.get('canary_artifact')
    artifact = artifact.strip() if isinstance(artifact, str) else artifact
    remote = _as_bool('canary_artifact_remote', get('canary_artifact_remote'), errors)
    checksum = str(raw.get('canary_artifact_checksum') or '').strip()
    url = is_url(artifact)
    if not artifact or not isinstance(artifact, str):
        errors.append('canary_artifact is not set: pass -e canary_artifact=PATH (a .tar.gz on the controller) '
                      'or an http(s) URL')
    elif '://' in artifact and not url:
        errors.append('canary_artifact=%s: only http:// and https:// URLs are downloaded; a file is given as a path'
                      % redact_url(artifact))
    elif remote:
        if not url and not artifact.startswith('/'):
            errors.append('canary_artifact=%s must be an absolute path on the app hosts (canary_artifact_remote=true)'
                          % artifact)
        if not checksum:
            errors.append('canary_artifact_checksum is required with canary_artifact_remote=true: every app host '
                          'reads %s on its own, and only the sum proves they all install the same release'
                          % redact_url(artifact))
    elif not url and artifact_exists is not None and not artifact_exists(artifact):
        errors.append('canary_artifact=%s must be a .tar.gz on the controller; no such file' % artifact)
    if checksum and not SHA256_RE.match(checksum):
        errors.append("canary_artifact_checksum=%r must be a sha256 as 'sha256:<64 hex digits>' or 64 hex digits"
                      % checksum)
    settings['artifact'] = artifact or ''
    settings['artifact_remote'] = bool(remote)
    settings['artifact_url'] = url
    settings['checksum'] = checksum


def check_hosts(app_hosts, balancers, identities, probe_host, known_hosts, limit=()):
    """The inventory side: groups, server names, zones, the probe host, canary_limit."""
    errors = []
    strangers = [h for h in limit if h not in app_hosts]
    if strangers:
        errors.append('canary_limit names %s, not in the app group (%s)' % (
            ', '.join(strangers), ', '.join(app_hosts) or 'empty'))
    if not app_hosts:
        errors.append('the app group has no hosts')
    if not balancers:
        errors.append('the balancer group has no hosts')
    servers = {}
    for host in app_hosts:
        ident = identities.get(host) or {}
        server = ident.get('server') or host
        if not isinstance(server, str) or not NAME_RE.match(server):
            errors.append('canary_server=%r of %s may only contain letters, digits and _ . : -' % (server, host))
        elif server in servers:
            errors.append('canary_server %r is used by both %s and %s' % (server, servers[server], host))
        servers[server] = host
    zoned = [h for h in app_hosts if (identities.get(h) or {}).get('zone')]
    if zoned and len(zoned) != len(app_hosts):
        errors.append('canary_zone is set on %s but not on %s: set it on every app host or on none'
                      % (', '.join(zoned), ', '.join(h for h in app_hosts if h not in zoned)))
    if probe_host != 'localhost' and probe_host not in known_hosts:
        errors.append('canary_probe_from=%r is not a host of the inventory (or localhost)' % (probe_host,))
    return errors


# ---------------------------------------------------------------- state

def lock_ttl(settings):
    """The lock's TTL: canary_lock_ttl, or longer when a step can outlast it.

    The live run refreshes its lock at each batch once a third of the TTL has
    passed, so the TTL must cover twice the longest gap between two batches.
    """
    pause = settings['pause'] if isinstance(settings.get('pause'), (int, float)) else 0
    # The tasks' own timeouts between two refreshes (roles/rollout/tasks): a drain, a switch (one
    # that installs, without pre-staging, may take the transfer's 1800 s), a ready with its probe
    # and the next drain, an analysis window, a pause.
    switch = 1800 if settings.get('prestage') is False else (settings['settle_seconds'] or 0) + 120
    gap = (settings['drain_timeout'] or 0) + 60 + switch + 2 * (settings['health_deadline'] or 0) \
        + (settings['drain_timeout'] or 0) + 60 \
        + (settings['analysis_interval'] or 0) * (settings['analysis_count'] or 0) + pause
    return int(max(settings['lock_ttl'] or 1, 2 * gap))


def new_state(settings, errors, app_hosts, balancers, identities, probe_host, now, check_mode=False, owner='',
              lock_info=None):
    """The state of a run that has checked its inputs and nothing else."""
    state = {
        'settings': settings,
        'check_mode': bool(check_mode),
        'app_hosts': list(app_hosts),
        'balancers': list(balancers),
        'probe_host': probe_host,
        'lock_host': balancers[0] if balancers else '',
        'lock_owner': owner,
        'lock_info': dict(lock_info or {}),
        'lock_held': False,
        'lock_refreshed': None,
        'identities': dict((h, dict(identities.get(h) or {})) for h in app_hosts),
        'started': now,
        'phase': 'preflight',
        'halt': None,
        'lost': {},
        # balancer -> pid of the HAProxy process that answered it first
        'lb_pids': {},
        'notes': [],
        'done_before': [],
        'previous_version': '',
        'plan': [],
        'plan_steps': [],
        'plan_lines': [],
        'initial_weights': {},
        'canary_weights': {},
        'repaired': [],
        # host -> what an operator set on its server (left alone); the run's own leftovers (servers, repaired)
        'held': {},
        'ours': [],
        'staged': [],
        'switched': [],
        'out': [],
        # hosts known drained on every live balancer; balancer lost -> the hosts it had drained then
        'drained': [],
        'drained_on_lost': {},
        'batch_index': 0,
        'steps': [],
        'rollback': {'hosts': [], 'groups': [], 'index': 0, 'done': [], 'errors': []},
        'act': {},
        'decision': None,
        'finished': None,
        'final_versions': {},
        # host -> the version it is known to run, None when a failure left it uncertain
        'versions': {},
        'messages': [],
    }
    if errors:
        halt(state, 'preflight', 'bad input, nothing was changed: ' + '; '.join(errors))
    else:
        state['lock_ttl'] = lock_ttl(settings)
        state['act'] = {'phase': 'lock', 'lock': [state['lock_host']], 'force': False}
    return state


def view(state):
    """What the play's tasks read: small on purpose, every host templates it for every task."""
    last = state['steps'][-1] if state['steps'] else {}
    verdict = last.get('judge') or {}
    return {
        'act': state['act'],
        'settings': state['settings'],
        'halted': state['halt'] is not None,
        'batches': len(state['plan']),
        'rollback_groups': len(state['rollback']['groups']),
        # A run with nothing to put back and nothing to clean up skips the rollback's tasks.
        'cleanup_due': cleanup_due(state),
        'lock_owner': state['lock_owner'],
        'lock_info': state['lock_info'],
        'lock_ttl': state.get('lock_ttl', 0),
        'plan_lines': state['plan_lines'],
        'verdict_line': '%s (score %s): %s' % (verdict['verdict'], _score(verdict['score']), verdict['reason'])
                        if verdict else (state['halt'] or {}).get('reason', 'not judged'),
    }


def halt(state, phase, reason, kind='failed'):
    """Stop the forward rollout; the first reason wins, later ones are noted."""
    if state['halt'] is None:
        state['halt'] = {'phase': phase, 'reason': reason, 'kind': kind}
    else:
        state['notes'].append('%s: %s' % (phase, reason))
    state['act'] = {}


# The coordinator's calls of the rollback: an error there is noted in the
# rollback's errors (the run is already on its way back).
ROLLBACK_OPS = ('rollback', 'rollback_group', 'cleanup')


def advance(state, op, call, now):
    """One coordinator call, `call(state)`, made safe: should it raise (a bug),
    the state goes back to what it was before the call and the run halts
    through coordinator_error(), instead of ending without its rollback and
    report. Only an error in `finish` (the report) is raised. Changes `state`
    in place; now: the clock (seconds)."""
    before = copy.deepcopy(state)
    try:
        call(state)
    except Exception as exc:  # pylint: disable=broad-except
        if op == 'finish':
            raise
        state.clear()
        # Bounded: the message goes into the report and every progress line.
        error = redact('%s: %s' % (type(exc).__name__, exc))
        state.update(coordinator_error(before, op, error if len(error) <= 500 else error[:497] + '...', now()))
    return state


def coordinator_error(state, op, error, now):
    """The coordinator's own failure (a bug in the engine, e.g. a batch begun
    out of order) turned into a halt, so that the rollback, the clean-up, the
    unlock and the report still run.

    `state` is the state from before the failed call (the failed call's
    half-made changes are dropped); `op` the coordinator call that failed,
    `error` its message. What the pending act may have done counts as done:
    its hosts were switched (the rollback puts them back; a host that never
    moved is only made sure to run), its lock was taken (the release is by
    owner, so another run's lock stays). Returns the state, with a plain act
    so that the play goes on.
    """
    state['messages'] = []
    reason = 'internal error in the coordinator (%s): %s (please report it with report.json)' % (op, error)
    act = state.get('act') or {}
    if op == 'record':
        if act.get('phase') in ('switch', 'rollback_switch'):
            state['switched'] += [h for h in act.get('apps', []) if h not in state['switched']]
            for host in act.get('apps', []):
                state['versions'][host] = None
        if act.get('phase') == 'lock':
            state['lock_held'] = True
    state['act'] = {}
    if op == 'rollback' and state['halt'] is not None:
        # No rollback plan: what is out of rotation and was never switched is
        # still put back (it is on its old release); switched hosts stay as they are.
        state['phase'] = 'rollback'
        idle = [h for h in state['out'] if h not in state['switched'] and h not in state['lost']]
        limit = max(1, state.get('max_unavailable') or 1)
        state['rollback'].update(hosts=idle, groups=[idle[i:i + limit] for i in range(0, len(idle), limit)])
        left = [h for h in state['out'] if h not in idle and h not in state['lost']]
        state['rollback']['errors'].append(reason + '; not rolled back: %s' % (
            ', '.join(h for h in state['app_hosts'] if h in state['switched'] and h not in state['lost']) or 'none')
            + ('; left out of rotation: %s' % ', '.join(left) if left else ''))
    elif (op in ROLLBACK_OPS or (op == 'record' and state['phase'] == 'rollback')) and state['halt'] is not None:
        out = [h for h in state['out'] if h not in state['lost']]
        state['rollback']['errors'].append(reason + ('; left out of rotation: %s' % ', '.join(out) if out else ''))
    elif op == 'finish_survey' or op in ROLLBACK_OPS or state['phase'] in ('finish', 'rollback'):
        # The finish (its last call, which writes the report, raises instead: advance()),
        # or the clean-up of a run that did not halt: the decision stands, noted.
        state['notes'].append(reason)
    else:
        batch = _current_batch(state)
        if batch is not None and batch['outcome'] == 'running':
            _batch_failed(state, batch, now, reason)
        else:
            halt(state, 'step %d' % state['steps'][-1]['step'] if state['phase'] == 'batches' and state['steps']
                 else state['phase'], reason)
    return state


def server_of(state, host):
    return state['identities'][host].get('server') or host


def _servers(state, hosts):
    return [server_of(state, h) for h in hosts]


def live_balancers(state):
    return [b for b in state['balancers'] if b not in state['lost']]


def _say(state, text):
    state['messages'].append(text)


def _result_error(result):
    """One line saying why an actor's task failed, or '' when it did not."""
    if result is None:
        return 'gone (unreachable or left the play)'
    if result.get('unreachable'):
        return 'unreachable: %s' % (result.get('msg') or 'no answer').strip()
    if result.get('failed'):
        msg = result.get('msg') or result.get('stderr') or result.get('exception') or 'failed'
        return ' '.join(str(msg).split())
    return ''


def _collect(state, role, results, phase):
    """Split the results of one actor role into ok and failed; mark the lost."""
    ok, failed = {}, {}
    for host in state['act'].get(role, []):
        result = (results.get(role) or {}).get(host)
        error = _result_error(result)
        if error:
            failed[host] = error
            if result is None or result.get('unreachable') or TASK_TIMEOUT in error:
                state['lost'][host] = '%s during %s' % (error, phase)
                if role == 'balancers':
                    _note_drained_on_lost(state, host)
        elif role == 'balancers' and _restarted(state, host, result):
            failed[host] = _restarted(state, host, result)
            state['lb_pids'][host] = result['process']['pid']
        else:
            if role == 'balancers' and (result.get('process') or {}).get('pid'):
                state['lb_pids'][host] = result['process']['pid']
            ok[host] = result
    return ok, failed


def _note_drained_on_lost(state, balancer):
    """A balancer that stops answering may still route: what is known drained
    there is what was drained on every balancer before the act it was lost in,
    less what that act may have readied (or re-weighted) there. Nothing else
    may be restarted while it is gone (a rollback checks this)."""
    act = state['act']
    touched = set(act.get('servers', [])) | set(act.get('weights') or {}) if act.get('state') != 'drain' else set()
    state['drained_on_lost'][balancer] = [h for h in state['drained'] if server_of(state, h) not in touched]


def _drained(state, hosts, drained=True):
    """Note hosts as drained on every live balancer (or as back in rotation on some)."""
    kept = [h for h in state['drained'] if h not in hosts]
    state['drained'] = kept + (list(hosts) if drained else [])


def _restarted(state, host, result):
    """Why a balancer's HAProxy is not the process the run started with, or ''.

    A restart or reload loses runtime drains and weights (unless
    server-state-file is set up): what this run set there can no longer be
    trusted, so the batch halts and the rollback sets it again.
    """
    pid = (result.get('process') or {}).get('pid')
    known = state['lb_pids'].get(host)
    if pid and known and pid != known:
        return ('HAProxy was restarted or reloaded during the rollout (pid %s -> %s): the drains and weights set '
                'before may be lost (see docs/haproxy.md, server-state-file)' % (known, pid))
    return ''


def _describe_failures(what, failed):
    return '; '.join('%s on %s: %s' % (what, host, why) for host, why in sorted(failed.items()))


# ---------------------------------------------------------------- pre-flight

def record(state, results, now):
    """Take the results of the current act and decide the next one."""
    phase = state['act'].get('phase')
    if not phase:
        raise EngineError('no act is pending; nothing to record')
    handler = _HANDLERS.get(phase)
    if handler is None:
        raise EngineError('unknown act phase %r' % (phase,))
    state['messages'] = []
    handler(state, results, now)
    return state


def _after_lock(state, results, now):
    ok, failed = _collect(state, 'lock', results, 'pre-flight')
    if failed:
        holder = (results.get('lock') or {}).get(state['lock_host']) or {}
        if holder.get('lock') and not state['act'].get('force') and state['lock_host'] not in state['lost']:
            why = ''
            if holder.get('holder_gone'):
                why = 'its run is provably gone (process %s on %s has ended)' % (
                    holder['lock'].get('controller_pid'), holder['lock'].get('controller'))
            elif state['settings']['lock_takeover']:
                why = 'canary_lock_takeover=true'
            if why:
                state['notes'].append('took over the lock of %r: %s' % (holder['lock'].get('owner'), why))
                state['act'] = dict(state['act'], force=True)
                return
        halt(state, 'preflight', 'could not take the rollout lock: %s' % _describe_failures('lock', failed))
        return
    lock = ok[state['lock_host']]
    state['lock_held'] = not state['check_mode']
    state['lock_refreshed'] = now
    if lock.get('took_over') and not state['act'].get('force'):
        state['notes'].append('took over the lock: %s' % lock.get('msg', ''))
    # The balancers first: a backend that cannot take this rollout (a
    # server missing, a balancer down) refuses it before any app host is touched.
    state['act'] = {'phase': 'survey', 'balancers': list(state['balancers']),
                    'urls': [state['identities'][h]['health_url'] for h in state['app_hosts']]}
    if state['probe_host'] in state['balancers']:
        # It probes in the same call that reads its backend: one task less.
        state['act']['info_probe'] = {'urls': state['act']['urls'], 'rise': 1, 'deadline': 15}
        state['act']['info_probe_from'] = state['probe_host']
    else:
        state['act']['probe'] = [state['probe_host']]


def _after_survey(state, results, now):
    """The balancers' backends and the fleet's health are read: refuse, or read (and pre-stage) the releases."""
    settings = state['settings']
    lbs_ok, lbs_failed = _collect(state, 'balancers', results, 'pre-flight')
    if 'info_probe' in state['act']:
        # The probe host is a balancer: its checks came with its backend read (reported
        # with any URL credentials redacted, so URLs are compared redacted later).
        probe_ok = dict((h, r.get('probe') or {}) for h, r in lbs_ok.items() if h == state['probe_host'])
        probe_failed = {}
    else:
        probe_ok, probe_failed = _collect(state, 'probe', results, 'pre-flight')
    problems = []
    if lbs_failed:
        problems.append(_describe_failures('reading HAProxy', lbs_failed))
    if probe_failed:
        problems.append(_describe_failures('probing health', probe_failed))
    if problems:
        halt(state, 'preflight', 'nothing was changed: ' + '; '.join(problems))
        return
    servers = _servers(state, state['app_hosts'])
    try:
        consensus = balancer_consensus(lbs_ok, settings['backend'], servers)
    except RolloutError as exc:
        halt(state, 'preflight', 'nothing was changed: %s' % exc)
        return
    if consensus['missing']:
        halt(state, 'preflight', 'nothing was changed: backend %s lacks servers: %s' % (
            settings['backend'], json.dumps(consensus['missing'], sort_keys=True)))
        return
    backends = dict((b, {'backends': {settings['backend']: r['backends'][settings['backend']]},
                         'claims': (r.get('claims') or {}).get(settings['backend']) or {}})
                    for b, r in lbs_ok.items())
    # An operator's choices are respected: those hosts are not rolled, nor staged on, nor readied.
    held, unavailable, ours = _holders(state, backends)
    state['held'] = held
    state['ours'] = ours
    cap = resolve_max_unavailable(settings['max_unavailable'], len(state['app_hosts'])) or len(state['app_hosts'])
    state['capacity'] = {'max_unavailable': cap, 'out_before': unavailable, 'room': cap - len(unavailable)}
    if cap - len(unavailable) < 1:
        halt(state, 'preflight', 'nothing was changed: no room within canary_max_unavailable=%s (%d of %d hosts): '
             'already out of rotation, not by a run of this collection: %s; bring them back into rotation or raise '
             'canary_max_unavailable' % (settings['max_unavailable'], cap, len(state['app_hosts']), '; '.join(
                 '%s (%s)' % (h, why) for h, why in sorted(unavailable.items()))))
        return
    health = probe_ok[state['probe_host']]
    healthy_urls = set(redact(health.get('healthy') or []))
    healthy = [h for h in state['app_hosts'] if redact(state['identities'][h]['health_url']) in healthy_urls]
    # Kept for the releases' record, which decides with the versions too (and drops it).
    state['survey'] = {'balancers': backends, 'consensus': consensus, 'healthy': healthy,
                       'probed': dict((redact(url), result) for url, result in (health.get('results') or {}).items())}
    serving = [h for h in state['app_hosts'] if h not in held]
    fleet = [h for h in serving if not settings['limit'] or h in settings['limit']]
    unfit = [h for h in serving if h not in healthy or server_of(state, h) in consensus['down']]
    stage = []
    if settings['prestage'] and not state['check_mode'] and not unfit:
        # Shipped and unpacked in the same call that reads the releases: a
        # host that has the release already is left as it is, and what this
        # run staged is removed again if the run stops before switching it.
        # A fleet not all healthy and UP is likely refused once its versions
        # are known: nothing is written to it then.
        stage = fleet
    elif settings['prestage'] and not state['check_mode']:
        state['survey']['unfit'] = unfit
    state['act'] = {'phase': 'releases', 'apps': list(state['app_hosts']), 'stage': stage}


def _holders(state, backends):
    """Who holds each app host's server off normal (out of rotation, or off its initial weight) on a balancer.

    A run of this collection, when the balancer's claim says a run left it
    exactly so: `ours` (servers), repaired in pre-flight. Anyone else, an
    operator: `held` (host -> what, where), left alone and named in the
    report; the held servers that take no traffic on some balancer are
    `unavailable` (host -> why) and count against canary_max_unavailable.
    """
    backend = state['settings']['backend']
    held, unavailable, ours = {}, {}, []
    for host in state['app_hosts']:
        server = server_of(state, host)
        marks, out, claimed = [], [], False
        for balancer in sorted(backends):
            info = backends[balancer]['backends'][backend][server]
            if is_normal(info):
                pass
            elif claim_matches(backends[balancer]['claims'].get(server), info):
                claimed = True
            elif info.get('admin_state') != 'ready':
                marks.append('%s on %s' % (info['admin_state'], balancer))
            else:
                marks.append('weight %s (initial %s) on %s' % (info.get('weight'), info.get('initial_weight'), balancer))
            why = out_of_rotation({server: info}).get(server)
            if why:
                out.append('%s on %s' % (why, balancer))
        if marks:
            held[host] = ', '.join(marks)
            if out:
                unavailable[host] = ', '.join(out)
        elif claimed:
            ours.append(server)
    return held, unavailable, ours


def _after_releases(state, results, now):
    settings = state['settings']
    survey = state.pop('survey')
    lbs_ok, consensus, healthy = survey['balancers'], survey['consensus'], survey['healthy']
    stage = state['act'].get('stage') or []
    apps_ok, apps_failed = _collect(state, 'apps', results, 'pre-flight')
    # A host that failed while staging may have installed nothing or everything: it is cleaned too.
    state['staged'] = sorted(set(h for h, r in apps_ok.items() if r.get('installed_now'))
                             | set(h for h in apps_failed if h in stage and h not in state['lost']))
    if apps_failed:
        stage_failed = dict((h, why) for h, why in apps_failed.items() if h in stage)
        read_failed = dict((h, why) for h, why in apps_failed.items() if h not in stage)
        problems = []
        if stage_failed:
            problems.append('pre-staging %s failed, nothing was switched: %s' % (
                settings['version'], _describe_failures('stage', stage_failed)))
        if read_failed:
            problems.append('nothing was changed: %s' % _describe_failures('reading the releases', read_failed))
        halt(state, 'preflight', '; '.join(problems))
        return
    versions = dict((h, apps_ok[h].get('current') or '') for h in state['app_hosts'])
    state['versions'] = dict(versions)
    # Not staged (canary_prestage=false, or a fleet not fit for it): the switch installs.
    state['lacking'] = [h for h in state['app_hosts']
                        if settings['version'] not in (apps_ok[h].get('installed') or [])]
    held_servers = set(_servers(state, state['held']))
    # The hosts this run may roll: not held by an operator, within canary_limit when it is set.
    serving = [h for h in state['app_hosts'] if h not in state['held']]
    fleet = [h for h in serving if not settings['limit'] or h in settings['limit']]
    version = settings['version']
    done = [h for h in fleet if versions[h] == version and h in healthy]
    old_versions = sorted(set(versions[h] for h in serving if versions[h] != version))
    errors = []
    if '' in old_versions:
        errors.append('no current release on %s (see docs: adopting a fleet)' % ', '.join(
            h for h in serving if versions[h] == ''))
    if len(old_versions) > 1:
        errors.append('the fleet must run one version (or that version and %s when resuming); found %s' % (
            version, ', '.join('%s=%s' % (h, versions[h] or "''") for h in serving)))
    sick = [h for h in serving if h not in healthy and versions[h] != version]
    if sick:
        errors.append('unhealthy before the rollout: %s (%s)' % (', '.join(sick), '; '.join(
            '%s' % (survey['probed'].get(redact(state['identities'][h]['health_url']), {}).get('last_error') or 'unhealthy')
            for h in sick)))
    # Disagreement on a server under maintenance is the operator's business;
    # on a healthy host (drain or weight, e.g. left by a lost balancer) the repair below fixes it.
    disagree = [line for line in consensus['disagree'] if line.split(':', 1)[0] not in held_servers | set(_servers(state, healthy))]
    if disagree:
        errors.append('balancers disagree: %s' % '; '.join(disagree))
    down = [s for s in consensus['down'] if s not in held_servers and s not in _servers(state, sick)]
    if down:
        errors.append('not UP in HAProxy: %s' % ', '.join(down))
    if errors:
        # What this call staged is removed again by the clean-up.
        halt(state, 'preflight', 'nothing was changed: ' + '; '.join(errors))
        return
    state['previous_version'] = old_versions[0] if old_versions else version
    state['done_before'] = done
    # Servers under maintenance take no traffic: weights are left alone.
    state['initial_weights'] = dict((s, i['initial_weight']) for s, i in consensus['servers'].items()
                                    if s not in held_servers)
    zones = None
    if any(state['identities'][h].get('zone') for h in fleet):
        zones = dict((h, state['identities'][h]['zone']) for h in fleet)
    try:
        # Batches (and rollback groups) as large as the room the operator's servers leave.
        state['max_unavailable'] = state['capacity']['room']
        state['plan_steps'] = plan_steps(fleet, settings['steps'], state['max_unavailable'], zones,
                                         settings['zone_mode'], done)
        # The looks of the whole rollout, as if nothing were done yet: a resumed run
        # (after canary_pause=manual, say) spends only what the earlier runs left.
        whole = plan_steps(fleet, settings['steps'], state['max_unavailable'], zones, settings['zone_mode'], [])
        state['looks_planned'] = len(_judged_steps(state, whole, []))
    except PlanError as exc:
        halt(state, 'preflight', 'nothing was changed: %s' % exc)
        return
    state['plan'] = [batch for step in state['plan_steps'] for batch in step]
    if not _plan_samples(state, lbs_ok, held_servers):
        return
    # What an interrupted run left behind (drained, or off its initial
    # weight), as its claims say, on healthy hosts. Never an operator's doing.
    repair = [server_of(state, h) for h in state['app_hosts']
              if h in healthy and h not in state['held'] and server_of(state, h) in state['ours']]
    state['repaired'] = repair
    if survey.get('unfit'):
        state['notes'].append('not pre-staged (not healthy and UP at pre-flight: %s): each host installs %s at '
                              'its switch' % (', '.join(survey['unfit']), version))
    state['plan_lines'] = plan_text(state)
    if repair and not state['check_mode']:
        state['act'] = {'phase': 'repair', 'balancers': live_balancers(state), 'servers': repair, 'state': 'ready',
                        'weights': dict((s, state['initial_weights'][s]) for s in repair)}
        return
    _ready_for_batches(state)


def _plan_samples(state, lbs_ok, held_servers):
    """The sample-size plan of the judged canary step; False when it refuses (canary_underpowered=fail).

    The request rate is canary_request_rate, else what HAProxy counted over
    its last second on every balancer; the baseline error rate is the
    servers' 5xx share since HAProxy started.
    """
    settings = state['settings']
    state['sample_plan'] = None
    if not (state['plan_steps'] and _is_judged(state, 0)):
        return True
    servers = [s for s in _servers(state, state['app_hosts']) if s not in held_servers]
    rows = [lbs_ok[b]['backends'][settings['backend']][s] for b in lbs_ok for s in servers]
    requests = sum(row.get('req_tot') or 0 for row in rows)
    errors = sum(row.get('hrsp_5xx') or 0 for row in rows)
    measured = settings['request_rate'] is None
    rate = sum(row.get('rate') or 0 for row in rows) if measured else settings['request_rate']
    try:
        result = plan_power(rate, settings['traffic_percent'], settings['analysis_interval'],
                            settings['analysis_count'], baseline_error_rate=errors / float(requests) if requests else 0.0,
                            alpha=1 - settings['confidence'], error_tolerance=METRIC_DEFAULTS['tolerance'],
                            max_absolute=METRIC_DEFAULTS['max_absolute'],
                            latency_tolerance=METRIC_DEFAULTS['tolerance'], min_samples=METRIC_DEFAULTS['min_samples'],
                            min_power=settings['min_power'], latency_ratio=settings['critical_ratio'] or CRITICAL_RATIO)
    except PowerError as exc:
        halt(state, 'preflight', 'nothing was changed: the sample-size plan failed: %s' % exc)
        return False
    result['rate_source'] = 'HAProxy, last second' if measured else 'canary_request_rate'
    result['text'] = describe_power(result)
    result['fix'] = None
    state['sample_plan'] = result
    if result['ok']:
        _say(state, 'sample plan: %s' % result['text'])
        return True
    if rate == 0:
        result['fix'] = ('no traffic through %s at pre-flight: only the probes will be judged; set '
                         'canary_request_rate if traffic is expected during the analysis' % settings['backend'])
    else:
        result['fix'] = fix_power(result, settings['analysis_interval'])
    problem = 'the canary analysis is underpowered (%s): %s; %s' % (
        'request rate from %s' % result['rate_source'], result['text'], result['fix'])
    if settings['underpowered'] == 'fail':
        halt(state, 'preflight', 'nothing was changed: %s (canary_underpowered=fail)' % problem)
        return False
    state['notes'].append(problem)
    _say(state, 'warning: %s' % problem)
    return True


def _after_repair(state, results, now):
    ok, failed = _collect(state, 'balancers', results, 'pre-flight')
    if failed:
        halt(state, 'preflight', 'could not repair %s: %s' % (
            ', '.join(state['repaired']), _describe_failures('ready', failed)))
        return
    _ready_for_batches(state)


def _ready_for_batches(state):
    state['phase'] = 'batches'
    state['act'] = {}


def plan_text(state):
    settings = state['settings']
    lines = ['Rolling %s from %s to %s on %d hosts' % (
        settings['backend'], state['previous_version'], settings['version'], len(state['app_hosts']))]
    if state['done_before']:
        lines.append('%d already done (resume): %s' % (len(state['done_before']), ', '.join(state['done_before'])))
    if state['settings']['limit']:
        lines.append('canary_limit: only %s; the other app hosts stay as they are' % ', '.join(state['settings']['limit']))
    if state['held']:
        lines.append('left alone (set by an operator): %s' % '; '.join(
            '%s (%s)' % (h, why) for h, why in sorted(state['held'].items())))
    capacity = state['capacity']
    lines.append('at most %d of %d hosts out of rotation at once (canary_max_unavailable=%s)%s' % (
        capacity['max_unavailable'], len(state['app_hosts']), settings['max_unavailable'],
        ', %d out already: batches of at most %d' % (len(capacity['out_before']), capacity['room'])
        if capacity['out_before'] else ''))
    lines.append('repaired before starting: %s' % (', '.join(state['repaired']) or 'nothing'))
    number = 0
    for index, step in enumerate(state['plan_steps']):
        for batch in step:
            number += 1
            lines.append('step %d, batch %d: %s' % (index + 1, number, ', '.join(batch)))
    looks = _looks(state) if state['plan_steps'] else []
    if 0 in looks:
        lines.append('step 1 gets %s%% of traffic for %s x %s s of analysis before full weight' % (
            settings['traffic_percent'], settings['analysis_count'], settings['analysis_interval']))
    later = [i + 1 for i in looks if i]
    if later:
        lines.append('step%s %s judged too, at full weight against the hosts still on %s (%s x %s s each)' % (
            's' if len(later) > 1 else '', ', '.join(str(i) for i in later), state['previous_version'],
            settings['analysis_count'], settings['analysis_interval']))
    total = max(state.get('looks_planned') or 0, len(looks))
    if total > 1:
        lines.append('%d looks over the whole rollout share confidence %s (each judged at %.6g)%s' % (
            total, settings['confidence'], look_confidence(settings['confidence'], 1, total),
            '; %d of them in this run' % len(looks) if len(looks) < total else ''))
    return lines


# ---------------------------------------------------------------- batches

def _position(state, index):
    """(step index, batch index within the step) of plan batch `index`."""
    count = 0
    for step_index, step in enumerate(state['plan_steps']):
        if index < count + len(step):
            return step_index, index - count
        count += len(step)
    raise EngineError('batch %d is not in the plan' % index)


def _canary_hosts(state):
    return state['done_before'] + [h for batch in state['plan_steps'][0] for h in batch]


def _sides(state, step_index, plan_steps_=None, done=None):
    """(canary, baseline) of step `step_index`'s analysis: the step's own hosts (the
    first step's with the hosts done before) against the hosts still on the old
    release (operators' hosts aside). Of this run's plan, or of `plan_steps_` with `done`."""
    steps = state['plan_steps'] if plan_steps_ is None else plan_steps_
    done = state['done_before'] if done is None else done
    rolled = set(done)
    for step in steps[:step_index]:
        rolled.update(h for batch in step for h in batch)
    own = [h for batch in steps[step_index] for h in batch]
    canary = (list(done) if step_index == 0 else []) + own
    baseline = [h for h in state['app_hosts'] if h not in rolled and h not in own and h not in state['held']]
    return canary, baseline


def _judged_steps(state, plan_steps_, done):
    """The indexes of the judged steps of a plan: the first, and every later one with
    canary_judge_every_step; each only if hosts stay behind on the old release to compare it with."""
    return [i for i in range(len(plan_steps_))
            if (i == 0 or state['settings'].get('judge_every_step')) and _sides(state, i, plan_steps_, done)[1]]


def _is_judged(state, step_index):
    """Is step `step_index` of this run judged?"""
    return step_index in _looks(state)


def _looks(state):
    """This run's judged steps' indexes: the sequential rule shares the confidence among them."""
    return _judged_steps(state, state['plan_steps'], state['done_before'])


def begin_batch(state, index, now):
    """Start plan batch `index`: drain its servers on every live balancer."""
    state['messages'] = []
    if state['halt'] is not None or state['phase'] != 'batches':
        state['act'] = {}
        return state
    if index != state['batch_index']:
        raise EngineError('batch %d started out of order (expected %d)' % (index + 1, state['batch_index'] + 1))
    current = _current_batch(state)
    if current is not None and current['batch'] == index + 1:
        # Begun already: the last batch's ready handed over and drained it.
        return state
    if not _open_batch(state, index, now):
        return state
    hosts = state['plan'][index]
    if state['check_mode']:
        _end_batch(state, now)
        return state
    state['out'] = sorted(set(state['out']) | set(hosts))
    act = dict(_capacity_guard(state), balancers=live_balancers(state), servers=_servers(state, hosts), state='drain')
    if _lock_due(state, now):
        # The live run keeps its short-lived lock fresh, alongside the drain.
        act['lock'] = [state['lock_host']]
    _set_act(state, 'drain', now, **act)
    return state


def _capacity_guard(state):
    """What every drain carries: each balancer refuses one that would leave more than
    canary_max_unavailable app servers out of rotation there, whoever put them there."""
    return {'max_out': state['capacity']['max_unavailable'], 'fleet': _servers(state, state['app_hosts'])}


def _lock_due(state, now):
    return state['lock_held'] and now - state['lock_refreshed'] > state['lock_ttl'] / 3.0


def _open_batch(state, index, now):
    """The step (when batch `index` opens one) and batch records; False when it cannot start."""
    step_index, in_step = _position(state, index)
    hosts = state['plan'][index]
    if in_step == 0:
        state['steps'].append({
            'step': step_index + 1, 'hosts': [h for b in state['plan_steps'][step_index] for h in b],
            # canary: the first step, at canary_traffic_percent; judged: an analysis ends the step.
            'canary': step_index == 0 and _is_judged(state, 0), 'judged': _is_judged(state, step_index),
            'started': now, 'finished': None,
            'seconds': None, 'outcome': 'running', 'batches': [], 'judge': {}, 'weights': {}, 'errors': [],
        })
        if state['steps'][-1]['canary']:
            try:
                state['canary_weights'] = canary_weights(state['initial_weights'], _servers(state, _canary_hosts(state)),
                                                         float(state['settings']['traffic_percent']))
            except WeightsError as exc:
                halt(state, 'step %d' % (step_index + 1), str(exc))
                state['act'] = {}
                return False
            state['steps'][-1]['weights'] = state['canary_weights']
    step = state['steps'][-1]
    step['batches'].append({
        'batch': index + 1, 'hosts': list(hosts), 'servers': _servers(state, hosts), 'started': now,
        'finished': None, 'seconds': None, 'outcome': 'running', 'errors': [], 'timings': {},
        'drain': {}, 'release': {}, 'health': {}, 'ready': {},
    })
    _say(state, 'step %d/%d, batch %d/%d: %s -> %s' % (
        step_index + 1, len(state['plan_steps']), index + 1, len(state['plan']), ', '.join(hosts),
        state['settings']['version']))
    return True


def _set_act(rollout, phase, now, **act):
    act['phase'] = phase
    rollout['act'] = act
    state = rollout
    batch = _current_batch(state)
    if batch is not None:
        batch['timings'][phase] = {'started': now}


def _current_batch(state):
    if state['phase'] != 'batches' or not state['steps'] or not state['steps'][-1]['batches']:
        return None
    return state['steps'][-1]['batches'][-1]


def _timed(state, phase, now):
    batch = _current_batch(state)
    timing = batch['timings'].setdefault(phase, {'started': now})
    timing['seconds'] = round(now - timing['started'], 2)
    return batch


def _batch_failed(state, batch, now, reason):
    batch['errors'].append(reason)
    batch['outcome'] = 'failed'
    step = state['steps'][-1]
    step['errors'].append(reason)
    halt(state, 'step %d' % step['step'], 'step %d, batch %d: %s' % (step['step'], batch['batch'], reason))
    _close_batch(state, batch, now)


def _close_batch(state, batch, now):
    batch['finished'] = now
    batch['seconds'] = round(now - batch['started'], 2)
    step = state['steps'][-1]
    step['finished'] = now
    step['seconds'] = round(now - step['started'], 2)
    if batch['outcome'] == 'failed':
        step['outcome'] = 'failed'


def _balancer_view(ok):
    return dict((b, {'changed': r.get('changed', False), 'servers': r.get('servers', {}),
                     'drain': r.get('drain'), 'health': r.get('health')}) for b, r in ok.items())


def _after_drain(state, results, now):
    batch = _timed(state, 'drain', now)
    ok, failed = _collect(state, 'balancers', results, 'the drain')
    batch['drain'] = _balancer_view(ok)
    if 'lock' in state['act']:
        refreshed, lost_lock = _collect(state, 'lock', results, 'the lock refresh')
        if lost_lock:
            # Another run may hold it now: this one must not go on.
            _batch_failed(state, batch, now, 'lost the rollout lock: %s' % _describe_failures('refresh', lost_lock))
            return
        state['lock_refreshed'] = now
    if failed:
        _batch_failed(state, batch, now, _describe_failures('drain', failed))
        return
    _drained(state, batch['hosts'])
    _switch_act(state, batch, now)


def _switch_act(state, batch, now):
    # Only a host without the release needs the artifact (and the long timeout of a transfer).
    _set_act(state, 'switch', now, apps=list(batch['hosts']),
             install=[h for h in batch['hosts'] if h in state.get('lacking', [])],
             ready_urls=dict((h, _local_url(state['identities'][h]['health_url'])) for h in batch['hosts']))


def _local_url(url):
    """The health URL as the host itself reaches it (loopback, same port and path)."""
    parts = urlsplit(url)
    port = ':%d' % parts.port if parts.port else ''
    return urlunsplit((parts.scheme, '127.0.0.1' + port, parts.path, parts.query, ''))


def _after_switch(state, results, now):
    batch = _timed(state, 'switch', now)
    ok, failed = _collect(state, 'apps', results, 'the switch')
    # Whatever the outcome, current may have moved (a service that did not
    # stay up was switched first): every host of the batch counts as
    # switched. The rollback names the old version explicitly, so a host
    # that never moved is only made sure to run.
    state['switched'] += [h for h in batch['hosts'] if h not in state['switched']]
    for host in batch['hosts']:
        state['versions'][host] = (ok[host].get('current') or state['settings']['version']) if host in ok else None
    batch['release'] = dict((h, {'switched': r.get('switched'), 'from': r.get('switched_from'),
                                 'service': r.get('service', {})}) for h, r in ok.items())
    if failed:
        _batch_failed(state, batch, now, _describe_failures('release', failed))
        return
    urls = [state['identities'][h]['health_url'] for h in batch['hosts']]
    if state['probe_host'] in live_balancers(state):
        # The probe host is a balancer: every balancer probes the batch
        # itself, in the call that readies it (and readies only what it saw
        # healthy): a task and a note less per batch.
        _ready_act(state, batch, now, probe=dict(PROBE, urls=urls, deadline=state['settings']['health_deadline']))
        return
    _set_act(state, 'health', now, probe=[state['probe_host']], urls=urls, **PROBE)


# The fresh health check of a switched batch: rise 2, a round every 0.25 s.
PROBE = {'rise': 2, 'interval': 0.25}


def _phase_results(state, phase, role, results, now, what):
    """Time a batch phase and take its actors' results; ok is None when one failed (the batch halts)."""
    batch = _timed(state, phase, now)
    ok, failed = _collect(state, role, results, 'the %s' % phase)
    if failed:
        _batch_failed(state, batch, now, _describe_failures(what, failed))
        return batch, None
    return batch, ok


def _after_health(state, results, now):
    batch, ok = _phase_results(state, 'health', 'probe', results, now, 'health check from')
    if ok is None:
        return
    health = ok[state['probe_host']]
    batch['health'] = {'healthy': health.get('healthy', []), 'unhealthy': health.get('unhealthy', []),
                       'results': health.get('results', {})}
    if health.get('unhealthy'):
        _batch_failed(state, batch, now, health.get('msg') or 'unhealthy: %s' % ', '.join(health['unhealthy']))
        return
    _ready_act(state, batch, now)


def _ready_act(state, batch, now, probe=None):
    """Ready the batch on every live balancer (after the probe, when it comes with it)."""
    step = state['steps'][-1]
    act = {'balancers': live_balancers(state), 'servers': list(batch['servers']), 'state': 'ready'}
    if step['canary']:
        # Weights first (the module orders it), so the canary never takes
        # more than its share, not even for a moment.
        act['weights'] = state['canary_weights']
    else:
        act['weights'] = dict((s, state['initial_weights'][s]) for s in batch['servers'])
    act = _with_hand_over(state, now, act)
    if probe:
        act['ready_probe'] = probe
    _set_act(state, 'ready', now, **act)


def _with_hand_over(state, now, act, judged=False):
    """The balancer act that ends a batch (its ready, or the canary's weights
    restore once judged), draining the next batch in the same call when
    nothing comes between the two."""
    following = _hand_over_to(state, now, judged)
    if following:
        act.update(_capacity_guard(state))
        act['then_drain'] = _servers(state, following)
        act['next_hosts'] = following
        # Out from here on: should the run halt, the rollback puts it back.
        state['out'] = sorted(set(state['out']) | set(following))
    return act


def _hand_over_to(state, now, judged=False):
    """The hosts of the next batch when the act that ends this batch can drain them
    in the same call: nothing (analysis, pause, lock refresh) comes between the two."""
    index = state['batch_index']
    if state['check_mode'] or index + 1 >= len(state['plan']) or _lock_due(state, now):
        return []
    step_index, in_step = _position(state, index)
    # The step ends here: the analysis (unless judged already) or a pause
    # (as _end_batch reads canary_pause) comes next.
    if in_step == len(state['plan_steps'][step_index]) - 1 and (
            (state['steps'][-1]['judged'] and not judged) or state['settings']['pause']):
        return []
    return list(state['plan'][index + 1])


def _next_batch_drain_failures(state, raw, ok, failed, following):
    """Where the act went through but the next batch's drain did not, that batch
    fails, not this one: such balancers move from failed to ok. Returns them."""
    drain_failed = {}
    for host in list(failed) if following else []:
        result = raw.get(host) or {}
        if (result.get('then_drain') or {}).get('failed') and not _restarted(state, host, result):
            drain_failed[host] = failed.pop(host)
            ok[host] = result
    return drain_failed


def _then_drain_seconds(ok):
    """How long the drain of the next batch took at the end of the call (the slowest balancer)."""
    return max([float((r.get('then_drain') or {}).get('seconds') or 0) for r in ok.values()] or [0.0])


def _next_batch_untouched(state, raw, following):
    """No balancer got as far as draining the next batch: it never left rotation."""
    if following and not any('then_drain' in (r or {}) for r in raw.values()):
        state['out'] = [h for h in state['out'] if h not in following]


def _batch_closing_results(state, phase, results, now):
    """The balancers' results of the act that ends a batch (its ready, or the
    canary's weights restore), which may have drained the next batch too:
    (batch, raw, ok, failed, drain_failed, end)."""
    following = state['act'].get('next_hosts') or []
    raw = results.get('balancers') or {}
    ok, failed = _collect(state, 'balancers', results, 'the %s' % phase)
    drain_failed = _next_batch_drain_failures(state, raw, ok, failed, following)
    # The next batch's drain at the end of the call is that batch's time, not this one's.
    end = now - _then_drain_seconds(ok) if following and not failed else now
    return _timed(state, phase, end), raw, ok, failed, drain_failed, end


def _after_ready(state, results, now):
    following = state['act'].get('next_hosts') or []
    batch, raw, ok, failed, drain_failed, end = _batch_closing_results(state, 'ready', results, now)
    unhealthy, refused = _probed_health(state, batch, raw, failed) if 'ready_probe' in state['act'] else ('', [])
    batch['ready'] = _balancer_view(ok)
    if ok or set(failed) - set(refused):
        # Readied on some balancers at least: the rollback drains it before it goes back.
        state['out'] = [h for h in state['out'] if h not in batch['hosts']]
        _drained(state, batch['hosts'], False)
    if failed:
        _next_batch_untouched(state, raw, following)
        _batch_failed(state, batch, now, unhealthy or _describe_failures('ready', failed))
        return
    step_index, in_step = _position(state, state['batch_index'])
    step = state['steps'][-1]
    last_in_step = in_step == len(state['plan_steps'][step_index]) - 1
    if step['judged'] and last_in_step:
        settings = state['settings']
        analysis = _analysis_act(state, step_index)
        # The ready's read-back, with every server's traffic counters, is the
        # analysis's starting snapshot: taken with the canary live at its share.
        start = _counters_from(state, ok, analysis['canary'] + analysis['baseline'])
        if start is not None:
            state['analysis_start'] = start
        _set_act(state, 'analysis', now, balancers=live_balancers(state), probe=[state['probe_host']],
                 count=settings['analysis_count'], interval=settings['analysis_interval'],
                 urls=[state['identities'][h]['sample_url'] for h in analysis['canary'] + analysis['baseline']],
                 counters_at_start=start is not None, **analysis)
        return
    _end_batch(state, end)
    if following:
        _take_over(state, following, ok, drain_failed, now, 'ready')


def _counters_from(state, ok, hosts):
    """haproxy_info-shaped snapshots of every live balancer from its ready result,
    or None when one lacks a server's counters (the analysis then reads them)."""
    backend = state['settings']['backend']
    servers = _servers(state, hosts)
    snapshots = {}
    for balancer in live_balancers(state):
        rows = (ok.get(balancer) or {}).get('servers') or {}
        if not all('req_tot' in (rows.get(s) or {}) and 'hrsp_5xx' in rows[s] for s in servers):
            return None
        snapshots[balancer] = {'backends': {backend: dict(
            (s, {'req_tot': rows[s]['req_tot'], 'hrsp_5xx': rows[s]['hrsp_5xx']}) for s in servers)},
            'process': ok[balancer].get('process') or {}}
    return snapshots


def _probed_health(state, batch, raw, failed):
    """The health check that came with the ready: the batch's health record
    (as the probe host saw it); why it failed ('' if it did not) and the
    balancers that refused to ready the batch for it.

    A balancer that found a server unhealthy readied nothing; its failure is
    the batch's health failure, named as such. Other failures are described
    as failed readies.
    """
    probes = dict((b, r['probe']) for b, r in raw.items() if isinstance((r or {}).get('probe'), dict))
    seen = probes.get(state['probe_host']) or (probes[sorted(probes)[0]] if probes else {})
    unhealthy = sorted(set(url for p in probes.values() for url in p.get('unhealthy', [])))
    batch['health'] = {'healthy': [u for u in seen.get('healthy', []) if u not in unhealthy],
                       'unhealthy': unhealthy, 'results': seen.get('results', {}),
                       'probed_from': sorted(probes)}
    if seen.get('elapsed') is not None:
        # The call's seconds, split: the probe first, then the ready.
        ready = batch['timings']['ready']
        probed = min(float(seen['elapsed']), ready['seconds'])
        batch['timings']['health'] = {'started': ready['started'], 'seconds': round(probed, 2)}
        ready['started'] += probed
        ready['seconds'] = round(ready['seconds'] - probed, 2)
    refused = [b for b in sorted(failed) if b in probes and probes[b].get('unhealthy')]
    if not refused:
        return '', []
    # Balancers that saw the same are named together, in one reason.
    seen_as = {}
    for balancer in refused:
        msg = probes[balancer].get('msg') or 'unhealthy: %s' % ', '.join(probes[balancer]['unhealthy'])
        seen_as.setdefault(msg, []).append(balancer)
    reasons = ['%s (probed from %s)' % (msg, ', '.join(names)) for msg, names in sorted(seen_as.items())]
    others = dict((b, why) for b, why in failed.items() if b not in refused)
    return '; '.join(reasons + ([_describe_failures('ready', others)] if others else [])), refused


def _take_over(state, hosts, ok, drain_failed, now, by):
    """The next batch begins with its drain done, by the act (``by``: its ready,
    or the canary's weights restore) that ended the last one."""
    index = state['batch_index']
    if state['plan'][index] != hosts:
        raise EngineError('handed over to %s, but batch %d is %s' % (hosts, index + 1, state['plan'][index]))
    seconds = _then_drain_seconds(ok)
    if not _open_batch(state, index, now - seconds):
        return
    batch = _current_batch(state)
    batch['timings']['drain'] = {'started': now - seconds, 'seconds': round(seconds, 2)}
    batch['drain'] = _balancer_view(dict((b, r.get('then_drain') or {}) for b, r in ok.items()))
    batch['handed_over'] = True
    batch['drained_with'] = by
    if drain_failed:
        _batch_failed(state, batch, now, _describe_failures('drain', drain_failed))
        return
    _drained(state, hosts)
    _switch_act(state, batch, now)


def _analysis_act(state, step_index):
    """The analysis act's sides and what it asks of the request logs and Prometheus."""
    settings = state['settings']
    canary, baseline = _sides(state, step_index)
    looks = _looks(state)
    total = max(state.get('looks_planned') or 0, len(looks))
    # A resumed run's looks come last: the earlier runs spent the first ones.
    number = total - len(looks) + looks.index(step_index) + 1
    state['steps'][-1]['sides'] = {'canary': canary, 'baseline': baseline}
    state['steps'][-1]['look'] = {'look': number, 'looks': total, 'shared': settings['confidence'],
                                  'confidence': look_confidence(settings['confidence'], number, total)}

    def members(hosts):
        return [(server_of(state, h), prometheus_instance(state['identities'][h])) for h in hosts]

    try:
        sources = analysis_sources(settings.get('metrics') or {}, settings['backend'], members(canary),
                                   members(baseline), settings['analysis_interval'], settings['analysis_count'])
    except RolloutError as exc:
        # Its metrics then have no data: the judge (and must_have_data) says what that means.
        _say(state, 'Prometheus is not queried: %s' % exc)
        sources = {'log': None, 'prometheus': None}
        if (settings.get('metrics') or {}).get('haproxy_log'):
            sources = analysis_sources(dict(settings['metrics'], prometheus_metrics=[]), settings['backend'],
                                       members(canary), members(baseline), settings['analysis_interval'],
                                       settings['analysis_count'])
    return dict(sources, canary=canary, baseline=baseline)


def _after_analysis(state, results, now):
    batch = _timed(state, 'analysis', now)
    step = state['steps'][-1]
    settings = state['settings']
    if state['act'].get('counters_at_start'):
        start = state.pop('analysis_start')
        ok_before = dict((b, start[b]) for b in state['act']['balancers'])
        failed_before = {}
    else:
        ok_before, failed_before = _collect(state, 'balancers', results.get('before', {}), 'the analysis')
    ok_after, failed_after = _collect(state, 'balancers', results.get('after', {}), 'the analysis')
    ok_probe, failed_probe = _collect(state, 'probe', results.get('samples', {}), 'the analysis')
    failed = dict(failed_before, **failed_after)
    failed.update(failed_probe)
    sources = _source_results(state, results, failed)
    if failed:
        _batch_failed(state, batch, now, _describe_failures('analysis', failed))
        return
    canary, baseline = state['act']['canary'], state['act']['baseline']
    rounds = [r.get('samples', {}) for r in ok_probe[state['probe_host']].get('results', [])]
    record_analysis(state, step, batch, ok_before, ok_after, rounds, canary, baseline, now)
    try:
        metrics = canary_metrics(ok_before, ok_after, settings['backend'], _servers(state, canary),
                                 _servers(state, baseline), rounds,
                                 [state['identities'][h]['sample_url'] for h in canary],
                                 [state['identities'][h]['sample_url'] for h in baseline])
        metrics = _more_metrics(state, step, metrics, sources, results.get('custom'), canary, baseline)
        # Each judged step looks at the new release once more: the sequential rule gives
        # each look its share of the confidence, so that looking at every step does not
        # raise the whole rollout's false alarms above one look's.
        verdict = judge_analysis(metrics, **_judge_options(settings, step['look']['confidence']))
    except (RolloutError, JudgeError) as exc:
        _batch_failed(state, batch, now, 'the canary could not be judged: %s' % exc)
        return
    verdict['seconds_to_verdict'] = round(now - step['started'], 1)
    step['judge'] = verdict
    _say(state, 'step %d judged %s (score %s, look %d of %d): %s' % (
        step['step'], verdict['verdict'], _score(verdict['score']), step['look']['look'], step['look']['looks'],
        verdict['reason']))
    allowed = (verdict['verdict'] == 'pass'
               or (verdict['verdict'] == 'marginal' and settings['on_marginal'] == 'promote')
               or (verdict['verdict'] == 'inconclusive' and settings['on_inconclusive'] == 'promote'))
    if not allowed:
        failing = [m['reason'] for m in verdict['metrics'].values() if m.get('failed')]
        _batch_failed(state, batch, now, '%s judged %s (score %s): %s' % (
            'canary' if step['canary'] else 'step %d' % step['step'], verdict['verdict'], _score(verdict['score']),
            '; '.join(failing) or verdict['reason']))
        return
    if not step['canary']:
        # A later step is at full weight already: it ends here.
        _end_batch(state, now)
        return
    # Judged: the weights go back, and the same call can drain the next batch.
    act = _with_hand_over(state, now, {'balancers': live_balancers(state), 'servers': sorted(state['initial_weights']),
                                       'weights': dict(state['initial_weights'])}, judged=True)
    _set_act(state, 'restore', now, **act)


def _source_results(state, results, failed):
    """The request logs and Prometheus answers, when the act asked for them (failures into failed)."""
    sources = {}
    for key, role, wanted in (('logs', 'balancers', 'log'), ('prometheus', 'probe', 'prometheus')):
        if state['act'].get(wanted):
            ok, bad = _collect(state, role, results.get(key, {}), 'the analysis')
            failed.update(bad)
            sources[key] = ok
    return sources


def _more_metrics(state, step, metrics, sources, custom, canary, baseline):
    """The built-in metrics plus the request log's, Prometheus's and the user's; the step keeps what they saw."""
    canary_servers, baseline_servers = _servers(state, canary), _servers(state, baseline)
    logs = None
    if 'logs' in sources:
        logs = merge_logs(sources['logs'], canary_servers + baseline_servers)
        step['traffic'] = traffic_report(logs, canary_servers)
    prometheus = None
    if 'prometheus' in sources:
        prometheus = (sources['prometheus'].get(state['probe_host']) or {}).get('answers') or {}
        step['prometheus'] = dict((name, {'query': r.get('query'), 'values': len(r.get('values') or []),
                                          'series': r.get('series'), 'error': r.get('error')})
                                  for name, r in sorted(prometheus.items()))
    metric_settings = state['settings'].get('metrics') or {}
    return analysis_metrics(metrics, logs=logs, canary_servers=canary_servers, baseline_servers=baseline_servers,
                            prometheus=prometheus, prometheus_specs=metric_settings.get('prometheus_metrics') or (),
                            custom=custom, options=metric_settings.get('metric_options'))


def _score(score):
    return 'none' if score is None else '%.4g' % score


def _after_restore(state, results, now):
    following = state['act'].get('next_hosts') or []
    batch, raw, ok, failed, drain_failed, end = _batch_closing_results(state, 'restore', results, now)
    if failed:
        _next_batch_untouched(state, raw, following)
        _batch_failed(state, batch, now, _describe_failures('restoring the initial weights', failed))
        return
    state['canary_weights'] = {}
    _end_batch(state, end)
    if following:
        _take_over(state, following, ok, drain_failed, now, 'restore')


def _end_batch(state, now):
    batch = _current_batch(state)
    batch['outcome'] = 'ok'
    _close_batch(state, batch, now)
    step_index, in_step = _position(state, state['batch_index'])
    state['batch_index'] += 1
    state['act'] = {}
    step = state['steps'][-1]
    if in_step == len(state['plan_steps'][step_index]) - 1:
        step['outcome'] = 'ok' if step['outcome'] == 'running' else step['outcome']
        more = step_index + 1 < len(state['plan_steps'])
        pause = state['settings']['pause']
        if more and pause == 'manual' and not state['check_mode']:
            halt(state, 'paused', 'paused after step %d of %d (canary_pause=manual); run the same command again '
                 'to continue' % (step_index + 1, len(state['plan_steps'])), kind='paused')
        elif more and pause and not state['check_mode']:
            state['act'] = {'phase': 'pause', 'seconds': pause}


def _after_pause(state, results, now):
    state['act'] = {}


# ---------------------------------------------------------------- rollback

def begin_rollback(state, now):
    """After the batches: decide what goes back, in groups within max_unavailable."""
    state['messages'] = []
    state['phase'] = 'rollback'
    state['act'] = {}
    halted = state['halt']
    if halted is None or halted['kind'] == 'paused' or halted['phase'] == 'preflight' or state['check_mode']:
        return state
    rollback = state['rollback']
    limit = max(1, state.get('max_unavailable') or 1)
    if state['settings']['auto_rollback']:
        hosts = [h for h in state['app_hosts'] if h in state['switched'] or h in state['done_before']
                 or h in state['out']]
    else:
        # No rollback asked for: hosts left out of rotation on the old
        # release go back in; switched hosts stay as they are for inspection.
        hosts = [h for h in state['out'] if h not in state['switched']]
        if state['switched']:
            state['notes'].append('canary_auto_rollback=false: %s left on %s' % (
                ', '.join(state['switched']), state['settings']['version']))
    hosts = [h for h in hosts if h not in state['lost']]
    lost = [h for h in state['app_hosts'] if h in state['lost'] and (h in state['switched'] or h in state['out'])]
    if lost:
        rollback['errors'].append('not rolled back, unreachable: %s' % ', '.join(lost))
    # Hosts already out of rotation go first: putting them back costs no capacity.
    out = [h for h in hosts if h in state['out']]
    groups = [out[i:i + limit] for i in range(0, len(out), limit)]
    # A lost app host serves nothing: it counts against canary_max_unavailable,
    # so fewer serving hosts may be drained at once; none when it uses it all.
    down = [h for h in state['app_hosts'] if h in state['lost']]
    size = limit - len(down)
    serving = [h for h in hosts if h not in state['out']]
    if serving and size <= 0:
        rollback['errors'].append(
            'not rolled back, to keep the fleet within canary_max_unavailable=%d while %s cannot serve: %s '
            '(still on %s and serving; run the rollback or the rollout again once the lost hosts are back)'
            % (limit, ', '.join(down), ', '.join(serving), state['settings']['version']))
        serving = []
    groups += [serving[i:i + size] for i in range(0, len(serving), max(size, 1))]
    rollback['hosts'] = out + serving
    rollback['groups'] = groups
    return state


def begin_rollback_group(state, index, now):
    state['messages'] = []
    rollback = state['rollback']
    group = rollback['groups'][index]
    rollback['index'] = index
    record_ = {'group': index + 1, 'hosts': group, 'started': now, 'errors': []}
    rollback.setdefault('records', []).append(record_)
    in_rotation = [h for h in group if h not in state['out']]
    # What cannot serve right now (lost, or left out by an earlier group whose
    # health check failed) leaves less room to drain serving hosts.
    unavailable = [h for h in state['app_hosts'] if h not in group and (h in state['lost'] or h in state['out'])]
    room = max(1, state.get('max_unavailable') or 1) - len(unavailable) - (len(group) - len(in_rotation))
    if len(in_rotation) > max(room, 0):
        kept = in_rotation[max(room, 0):]
        record_['errors'].append(
            'not rolled back, to keep the fleet within canary_max_unavailable while %s cannot serve: %s (still on %s '
            'and serving; run the rollback or the rollout again once they are back)'
            % (', '.join(unavailable), ', '.join(kept), state['settings']['version']))
        group = [h for h in group if h not in kept]
        in_rotation = [h for h in in_rotation if h not in kept]
        record_['hosts'] = group
        if not group:
            state['act'] = {}
            return state
    state['out'] = sorted(set(state['out']) | set(group))
    _say(state, 'rollback %d/%d: %s -> %s' % (
        index + 1, len(rollback['groups']), ', '.join(group), state['previous_version']))
    if in_rotation:
        state['act'] = dict(_capacity_guard(state), phase='rollback_drain', balancers=live_balancers(state),
                            servers=_servers(state, in_rotation), state='drain')
    else:
        _rollback_switch(state)
    if state['act'].get('phase') in ('rollback_drain', 'rollback_switch') and _lock_due(state, now):
        # A long rollback keeps its lock too, so that no other run takes it over meanwhile.
        state['act']['lock'] = [state['lock_host']]
    return state


def _rollback_lock(state, results, now):
    """The lock refresh that came with a rollback group's first act."""
    if 'lock' not in state['act']:
        return
    refreshed, lost_lock = _collect(state, 'lock', results, 'the lock refresh')
    if lost_lock:
        # Going back matters more: the rollback goes on, and says so.
        _rollback_record(state)['errors'].append('could not refresh the rollout lock (another run may take it '
                                                 'over): %s' % _describe_failures('refresh', lost_lock))
    else:
        state['lock_refreshed'] = now


def _rollback_record(state):
    return state['rollback']['records'][-1]


def _rollback_switch(state):
    record_ = _rollback_record(state)
    group = record_['hosts']
    switch = [h for h in group if h in state['switched'] or h in state['done_before']]
    # A restart drops what a balancer still sends: only hosts drained on
    # every balancer that may route to them go back. A lost balancer routes
    # on for all we know, unless it had the host drained before it was lost.
    unsafe = dict((h, _routes_to(state, h)) for h in switch if _routes_to(state, h))
    if unsafe:
        record_['errors'].append(
            'not rolled back, a balancer may still send them traffic (their restart would drop it): %s; still on %s, '
            'readied again where they were drained; run the rollback or the rollout again once every balancer '
            'answers' % ('; '.join('%s (%s)' % (h, why) for h, why in sorted(unsafe.items())),
                         state['settings']['version']))
        switch = [h for h in switch if h not in unsafe]
    if switch:
        state['act'] = {'phase': 'rollback_switch', 'apps': switch, 'version': state['previous_version']}
    else:
        _rollback_health(state, group)


def _routes_to(state, host):
    """Which balancers may still route to host (why it must not restart), or ''."""
    gone = sorted(b for b, hosts in state['drained_on_lost'].items() if host not in hosts)
    where = (['not drained on every live balancer'] if host not in state['drained'] else []) + \
        ['%s unreachable, it had not drained it' % b for b in gone]
    return ', '.join(where)


# Seconds a host that was drained but never restarted has to answer: it ran
# all along, so silence means it is gone, not starting.
NOT_RESTARTED_DEADLINE = 10


def _rollback_health(state, hosts, restarted=()):
    if not hosts:
        state['act'] = {}
        return
    deadline = state['settings']['health_deadline']
    if not restarted:
        deadline = min(deadline, NOT_RESTARTED_DEADLINE)
    state['act'] = {'phase': 'rollback_health', 'probe': [state['probe_host']], 'deadline': deadline,
                    'urls': [state['identities'][h]['health_url'] for h in hosts], 'hosts': hosts}


def _after_rollback_drain(state, results, now):
    _rollback_lock(state, results, now)
    ok, failed = _collect(state, 'balancers', results, 'the rollback')
    if failed:
        _rollback_record(state)['errors'].append(_describe_failures('drain', failed))
    else:
        _drained(state, [h for h in _rollback_record(state)['hosts'] if server_of(state, h) in state['act']['servers']])
    _rollback_switch(state)


def _after_rollback_switch(state, results, now):
    _rollback_lock(state, results, now)
    ok, failed = _collect(state, 'apps', results, 'the rollback')
    record_ = _rollback_record(state)
    for host in ok:
        if host in state['switched']:
            state['switched'].remove(host)
        state['rollback']['done'].append(host)
        state['versions'][host] = ok[host].get('current') or state['previous_version']
    for host in failed:
        state['versions'][host] = None
    if failed:
        record_['errors'].append(_describe_failures('switch back', failed))
    group = [h for h in record_['hosts'] if h not in failed]
    _rollback_health(state, group, restarted=list(ok))


def _after_rollback_health(state, results, now):
    ok, failed = _collect(state, 'probe', results, 'the rollback')
    record_ = _rollback_record(state)
    hosts = state['act']['hosts']
    if failed:
        record_['errors'].append(_describe_failures('health check from', failed))
        healthy = []
    else:
        health = ok[state['probe_host']]
        # The probe reports URLs redacted (credentials hidden).
        good = set(redact(health.get('healthy', [])))
        healthy = [h for h in hosts if redact(state['identities'][h]['health_url']) in good]
        sick = [h for h in hosts if h not in healthy]
        if sick:
            record_['errors'].append('still unhealthy after the rollback, left out of rotation: %s' % ', '.join(sick))
    if not healthy:
        state['act'] = {}
        return
    # Only this group's weights: every server named gets readied, and other
    # groups may still be out. The clean-up restores the rest.
    servers = _servers(state, healthy)
    state['act'] = {'phase': 'rollback_ready', 'balancers': live_balancers(state), 'servers': servers,
                    'state': 'ready', 'weights': dict((s, state['initial_weights'][s]) for s in servers),
                    'hosts': healthy}


def _after_rollback_ready(state, results, now):
    ok, failed = _collect(state, 'balancers', results, 'the rollback')
    record_ = _rollback_record(state)
    if failed:
        record_['errors'].append(_describe_failures('ready', failed))
    if ok:
        _drained(state, state['act']['hosts'], False)
    if not failed:
        state['out'] = [h for h in state['out'] if h not in state['act']['hosts']]
    state['act'] = {}


def cleanup(state, now):
    """After the rollback: weights back, staged-but-never-switched releases removed."""
    state['messages'] = []
    if state['check_mode']:
        state['act'] = {}
        return state
    if _weights_to_restore(state):
        state['act'] = {'phase': 'cleanup_weights', 'balancers': live_balancers(state),
                        'servers': sorted(state['initial_weights']), 'weights': dict(state['initial_weights'])}
        return state
    _cleanup_staged(state)
    return state


def _after_cleanup_weights(state, results, now):
    ok, failed = _collect(state, 'balancers', results, 'the clean-up')
    if failed:
        state['rollback']['errors'].append(_describe_failures('restoring the initial weights', failed))
    else:
        state['canary_weights'] = {}
    _cleanup_staged(state)


def _weights_to_restore(state):
    return bool(state['canary_weights'] and live_balancers(state))


def _staged_never_switched(state):
    return [h for h in state['staged'] if h not in state['switched'] and h not in state['rollback']['done']
            and h not in state['lost'] and h not in state.get('unstaged', [])]


def cleanup_due(state):
    """Will cleanup() have anything to do (weights back, staged releases removed)?"""
    return not state['check_mode'] and (_weights_to_restore(state) or bool(_staged_never_switched(state)))


def _cleanup_staged(state):
    never = _staged_never_switched(state)
    if never:
        state['act'] = {'phase': 'unstage', 'apps': never}
    else:
        state['act'] = {}


def _after_unstage(state, results, now):
    ok, failed = _collect(state, 'apps', results, 'the clean-up')
    state['unstaged'] = sorted(ok)
    if failed:
        state['notes'].append('could not remove the staged release: %s' % _describe_failures('remove', failed))
    state['act'] = {}


# ---------------------------------------------------------------- finish

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


def _after_final_versions(state, results, now):
    ok, failed = _collect(state, 'apps', results, 'the finish')
    for host in ok:
        state['final_versions'][host] = ok[host].get('current') or 'unknown'
    _unlock(state)


def _unlock(state):
    state['act'] = {'phase': 'unlock', 'lock': [state['lock_host']]} if state['lock_held'] else {}


def decide(state):
    """promoted, paused, rolled_back or failed."""
    halted = state['halt']
    if halted is None:
        return 'promoted'
    if halted['kind'] == 'paused':
        return 'paused'
    rollback = state['rollback']
    errors = rollback['errors'] + [e for r in rollback.get('records', []) for e in r['errors']]
    touched_lost = [h for h in state['lost'] if h in state['app_hosts']]
    # Rolled back means: something was put back, and every host is again on
    # the old release and in rotation, with nothing lost on the way.
    if rollback['hosts'] and not errors and not state['switched'] and not state['out'] and not touched_lost \
            and not [b for b in state['lost'] if b in state['balancers']]:
        return 'rolled_back'
    return 'failed'


def finish(state, now):
    """The decision; the lock was released before (begin_finish)."""
    state['messages'] = []
    state['decision'] = decide(state)
    state['finished'] = now
    state['act'] = {}
    return state


def _after_unlock(state, results, now):
    ok, failed = _collect(state, 'lock', results, 'the finish')
    if failed:
        state['notes'].append('could not release the lock (it expires after canary_lock_ttl): %s'
                              % _describe_failures('unlock', failed))
    else:
        state['lock_held'] = False
    state['act'] = {}


def report(state, iso):
    """The report.json document (credentials in URLs redacted). iso: epoch seconds -> ISO 8601 UTC text."""
    return redact(_report(state, iso))


def _report(state, iso):
    settings = state['settings']
    halted = state['halt'] or {}
    lost = dict(state['lost'])
    may_hold = []
    for host, why in sorted(lost.items()):
        if host in state['balancers']:
            may_hold.append('%s (%s) may still hold servers drained or at canary weights; the next run repairs it'
                            % (host, why))
        elif host in state['switched'] or host in state['out']:
            may_hold.append('%s (%s) may be on %s and out of rotation' % (host, why, settings['version']))
    return {
        'decision': state['decision'],
        'reason': halted.get('reason', ''),
        'version': settings.get('version', ''),
        'previous_version': state['previous_version'],
        'backend': settings.get('backend', ''),
        'started': iso(state['started']),
        'finished': iso(state['finished'] or state['started']),
        'seconds': round((state['finished'] or state['started']) - state['started'], 1),
        'check_mode': state['check_mode'],
        'plan': state['plan'],
        'plan_steps': state['plan_steps'],
        'done_before': state['done_before'],
        'repaired': state['repaired'],
        'maintenance': [h for h in state['app_hosts'] if h in state['held']],
        # host -> what an operator set on its server (maintenance, a drain, a weight): left alone
        'operator_held': state['held'],
        'capacity': state.get('capacity'),
        'limit': settings.get('limit') or [],
        'settings': dict((k, settings.get(k)) for k in (
            'steps', 'max_unavailable', 'zone_mode', 'traffic_percent', 'analysis_interval', 'analysis_count',
            'pause', 'drain_timeout', 'auto_rollback', 'on_marginal', 'on_inconclusive', 'prestage',
            'confidence', 'critical_ratio', 'critical_difference', 'request_rate', 'min_power', 'underpowered')),
        'steps': [_report_step(step, iso, state['started']) for step in state['steps']],
        'rolled_back': state['rollback']['done'],
        'rollback': [dict(r, started=iso(r['started']), offset=round(r['started'] - state['started'], 2))
                     for r in state['rollback'].get('records', [])],
        'rollback_errors': state['rollback']['errors'] + [e for r in state['rollback'].get('records', [])
                                                          for e in r['errors']],
        'lost': lost,
        'lost_may_hold': may_hold,
        'notes': state['notes'],
        # Pre-staged by this run (beside the running release); those never switched to were removed again.
        'staged': state['staged'],
        'staged_removed': state.get('unstaged', []),
        'sample_plan': state.get('sample_plan'),
        'hosts': state['final_versions'],
    }


def fallback_report(state, iso, error):
    """report.json when the full report could not be built (a bug): the
    contract's keys from whatever the state still holds, the error as the
    reason. Never raises on a damaged state."""
    def get(key, default):
        value = state.get(key) if isinstance(state, dict) else None
        return value if isinstance(value, type(default)) else default

    try:
        decision = state.get('decision') or decide(state)
    except Exception:  # pylint: disable=broad-except
        decision = 'failed'
    settings = get('settings', {})
    started = state['started'] if isinstance(state.get('started'), (int, float)) else 0.0
    finished = state['finished'] if isinstance(state.get('finished'), (int, float)) else started
    return redact({
        'decision': decision,
        'reason': 'internal error in the coordinator (report): %s (please report it)' % error,
        'version': settings.get('version', ''),
        'previous_version': get('previous_version', ''),
        'started': iso(started),
        'finished': iso(finished),
        'plan': get('plan', []),
        'steps': [],
        'hosts': get('final_versions', {}),
        'notes': get('notes', []),
    })


def _report_step(step, iso, origin):
    # offset: seconds since the run started, for the report's timeline.
    out = dict(step, started=iso(step['started']), finished=iso(step['finished'] or step['started']),
               offset=round(step['started'] - origin, 2))
    out['batches'] = [dict(b, started=iso(b['started']), finished=iso(b['finished'] or b['started']),
                           offset=round(b['started'] - origin, 2),
                           timings=dict((k, v.get('seconds')) for k, v in b['timings'].items()))
                      for b in step['batches']]
    return out


def report_markdown(doc):
    """report.md: the same facts for a person. Every text from outside goes through md_text."""
    lines = ['# Canary rollout of %s: %s' % (md_text(doc['backend']), md_text(str(doc['decision']).upper())), '',
             '| | |', '|---|---|',
             '| decision | **%s** |' % md_text(doc['decision']),
             '| version | %s -> %s |' % (md_text(doc['previous_version']), md_text(doc['version'])),
             '| started / finished (UTC) | %s / %s (%s s) |' % (doc['started'], doc['finished'], doc['seconds'])]
    if doc['reason']:
        lines.append('| reason | %s |' % md_text(doc['reason']))
    lines += ['| rolled back | %s |' % (_md_names(doc['rolled_back']) or 'nothing'),
              '| repaired before start | %s |' % (_md_names(doc['repaired']) or 'nothing')]
    if doc['maintenance']:
        lines.append('| left alone (maintenance) | %s |' % _md_names(doc['maintenance']))
    if doc['lost']:
        lines.append('| lost | %s |' % md_text('; '.join(doc['lost_may_hold']) or ', '.join(doc['lost'])))
    lines += ['', '## Plan', '']
    for number, step in enumerate(doc['plan_steps'], 1):
        lines.append('%d. %s' % (number, md_text(' | '.join(', '.join(b) for b in step), starts_line=True)))
    if doc['done_before']:
        lines += ['', 'Already on %s before this run (resume): %s' % (md_text(doc['version']),
                                                                      _md_names(doc['done_before']))]
    lines += _sample_plan_lines(doc.get('sample_plan'))
    lines += ['', '## Steps', '', '| step | batch | hosts | canary | outcome | seconds | drain | switch | health | ready |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for step in doc['steps']:
        for batch in step['batches']:
            t = batch['timings']
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                step['step'], batch['batch'], _md_names(batch['hosts']), 'yes' if step['canary'] else '',
                md_text(batch['outcome']), batch['seconds'], t.get('drain', '-'), t.get('switch', '-'),
                t.get('health', '-'), t.get('ready', '-')))
    for step in doc['steps']:
        verdict = step.get('judge') or {}
        if not verdict.get('metrics'):
            continue
        lines += _judgement_lines(step['step'], verdict, step.get('look'))
        lines += _traffic_lines(step.get('traffic'))
    errors = [e for s in doc['steps'] for e in s['errors']]
    for title, items in (('Errors', errors), ('Rollback errors', doc['rollback_errors']), ('Notes', doc['notes'])):
        if items:
            lines += ['', '### %s' % title, ''] + ['- %s' % md_text(e, starts_line=True) for e in items]
    lines += ['', '## Hosts', '', '| host | version |', '|---|---|']
    lines += ['| %s | %s |' % (md_text(h), md_text(v)) for h, v in sorted(doc['hosts'].items())]
    return '\n'.join(lines) + '\n'


def _traffic_lines(traffic):
    """Per server, the requests HAProxy logged in the window (canary_haproxy_log)."""
    if not traffic:
        return []
    lines = ['', '#### Real traffic per server (HAProxy request log, Tr = server response time)', '',
             '| server | side | requests | 5xx | Tr p50 / p95 / max (ms) | Ta p50 (ms) | first Tr samples (ms) |',
             '|---|---|---|---|---|---|---|']
    for server, item in sorted(traffic.items()):
        tr = item['response_ms']
        lines.append('| %s | %s | %d | %d | %s / %s / %s | %s | %s |' % (
            md_text(server), md_text(item['role']), item['requests'], item['errors_5xx'], _num(tr['p50']),
            _num(tr['p95']), _num(tr['max']), _num(item['total_ms']['p50']),
            ' '.join(_num(v) for v in item['response_ms_samples'][:20])))
    return lines


def _sample_plan_lines(plan):
    if not plan:
        return []
    lines = ['', '### Sample-size plan of the canary analysis', '',
             '| | |', '|---|---|',
             '| request rate | %s req/s (%s) |' % (_num(plan['request_rate']), md_text(plan.get('rate_source', ''))),
             '| window | %s s at %s%% of the traffic |' % (_num(plan['window_seconds']), _num(plan['traffic_percent'])),
             '| expected requests | %d canary, %d baseline |' % (plan['canary_requests'], plan['baseline_requests']),
             '| power: %s errors (baseline %s) | %.2f |' % (_percent(plan['error_target_rate']),
                                                            _percent(plan['baseline_error_rate']), plan['error_power']),
             '| power: median %sx slower | %.2f |' % (_num(plan['latency_ratio']), plan['latency_power']),
             '| detectable with power %s | %s |' % (_num(plan['min_power']), ', '.join(
                 x for x in ('error rate >= %s' % _percent(plan['detectable_error_rate'])
                             if plan['detectable_error_rate'] is not None else '',
                             'median >= %sx' % _num(plan['detectable_latency_ratio'])
                             if plan['detectable_latency_ratio'] is not None else '') if x) or 'nothing')]
    if plan.get('fix'):
        lines.append('| underpowered | %s |' % md_text(plan['fix']))
    return lines


def _judgement_lines(number, verdict, look=None):
    """The verdict, what decided it, and per metric the figures and the rule."""
    heading = '### Canary judgement (step %s): %s, score %s' % (
        md_text(number), md_text(verdict['verdict']), _score(verdict['score']))
    decided = 'decided by %s: ' % verdict['decided_by'] if verdict.get('decided_by') else ''
    lines = ['', heading, '', md_text(decided + verdict.get('reason', ''), starts_line=True)]
    limits = verdict.get('thresholds')
    if limits:
        lines += ['', 'confidence %s (alpha %s), pass_score %s, marginal_score %s, critical: %s, %s'
                  % (_num(limits['confidence']), _num(limits['alpha']), _num(limits['pass_score']),
                     _num(limits['marginal_score']),
                     'median %sx' % _num(limits['critical_ratio']) if limits['critical_ratio'] else 'median off',
                     'rate +%s' % _points(limits['critical_difference']) if limits['critical_difference']
                     else 'rate off')
                  + ('; look %d of %d, sharing canary_confidence %s' % (look['look'], look['looks'], _num(look['shared']))
                     if look and look['looks'] > 1 else '')]
    lines += ['', '| metric | result | n canary / baseline | baseline | canary | effect | p-value | thresholds | rule |',
              '|---|---|---|---|---|---|---|---|---|']
    for name, metric in sorted(verdict['metrics'].items()):
        if metric.get('dry_run'):
            result = 'dry run'
        elif metric.get('critical_breach'):
            result = '**FAILED (critical)**'
        elif metric.get('failed'):
            result = '**FAILED**'
        else:
            result = md_text(metric.get('classification'))
        lines.append('| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |' % (
            md_text(name), result, _num(metric.get('canary_count')), _num(metric.get('baseline_count')),
            _num(metric.get('baseline')), _num(metric.get('canary')), md_text(metric.get('effect_text', '-')),
            md_text(metric.get('p_text') or format_p(metric.get('p_value'))), md_text(_limits_text(metric)),
            md_text(metric.get('rule') or metric.get('reason', ''))))
    return lines


def _limits_text(metric):
    limits = metric.get('thresholds') or {}
    if not limits:
        return '-'
    parts = ['tolerance %s%%' % _num(limits['tolerance'] * 100)]
    if metric.get('kind') == 'ratio':
        parts[0] += ' + %s' % _points(limits.get('max_absolute', 0))
        if limits.get('critical_difference'):
            parts.append('critical +%s' % _points(limits['critical_difference']))
    elif limits.get('critical_ratio'):
        parts.append('critical %sx' % _num(limits['critical_ratio']))
    parts.append('min %s' % _num(limits['min_samples']))
    return ', '.join(parts)


def _points(fraction):
    text = _num(fraction * 100)
    return '%s point%s' % (text, '' if text == '1' else 's')


def _percent(rate):
    return '%.3g%%' % (rate * 100)


# Control characters (ESC starts a terminal's escape sequence) other than
# the whitespace that _one_line folds.
_CONTROL_RE = re.compile('[\x00-\x08\x0e-\x1f\x7f-\x9f]')
# What text from users and hosts (names, versions, reasons, hosts' error
# messages, metric names) must not do in report.md: '|' and newlines break
# the table row; [text](url) and ![](url) make links and images, '<tag' and
# '<scheme:' HTML and autolinks, '&name;' characters; backticks, '*', '~'
# and '#', '_' change how it looks; '\' would undo an escape.
_MD_ESCAPES = {'\\': '\\\\', '`': '\\`', '*': '\\*', '_': '\\_', '[': '\\[', ']': '\\]', '|': '\\|', '#': '\\#',
               '~': '\\~', '&': '&amp;', '<': '&lt;'}
# '<' only where it could open a tag or an autolink: 'p<0.001' and '< 0.005' stay as they are.
# '_' only where it is not inside a word (CommonMark does not emphasise there): fe_demoapp stays.
_MD_SPECIAL_RE = re.compile(r'[\\`*\[\]|#~&]|<(?=[A-Za-z/!?])|(?<![^\W_])_|_(?![^\W_])')
# What makes a line a list item ('- x', '+ x', '1. x', '1) x'), a quote
# ('>') or a heading's underline ('===', '---') when text starts the line.
_MD_LINE_START_RE = re.compile(r'\A(?:[-+]|[0-9]{1,9}[.)])(?= |\Z)|\A>|\A[-=]+\Z')


def _one_line(value):
    """Outside text on one line: whitespace (newlines too) folded, control characters shown as U+FFFD."""
    return _CONTROL_RE.sub('\ufffd', ' '.join(str(value).split()))


def md_text(value, starts_line=False):
    """Outside text as literal Markdown on one line (a table cell; with starts_line, a list item or paragraph)."""
    text = _MD_SPECIAL_RE.sub(lambda match: _MD_ESCAPES[match.group()[0]], _one_line(value))
    return _MD_LINE_START_RE.sub(_md_line_start, text) if starts_line else text


def _md_line_start(match):
    marker = match.group()
    if marker[0].isdigit():
        return marker[:-1] + '\\' + marker[-1]  # 1. -> 1\.
    return '\\' + marker


def _md_names(names):
    return md_text(', '.join(str(name) for name in names))


def _num(value):
    if isinstance(value, float):
        return '%.4g' % value
    return '-' if value is None else md_text(value)


def summary_lines(doc, report_path):
    """The run's summary for the terminal and set_stats: one line per fact, whatever a host's text holds."""
    lines = ['decision: %s (%s -> %s)' % (doc['decision'], _one_line(doc['previous_version'] or '?'),
                                          _one_line(doc['version'] or '?'))]
    if doc['reason']:
        lines.append('reason: %s' % _one_line(doc['reason']))
    lines += ['%s: %s' % (_one_line(h), _one_line(v)) for h, v in sorted(doc['hosts'].items())]
    lines.append('report: %s' % report_path)
    return lines


_HANDLERS = {
    'lock': _after_lock,
    'survey': _after_survey,
    'releases': _after_releases,
    'repair': _after_repair,
    'drain': _after_drain,
    'switch': _after_switch,
    'health': _after_health,
    'ready': _after_ready,
    'analysis': _after_analysis,
    'restore': _after_restore,
    'pause': _after_pause,
    'rollback_drain': _after_rollback_drain,
    'rollback_switch': _after_rollback_switch,
    'rollback_health': _after_rollback_health,
    'rollback_ready': _after_rollback_ready,
    'cleanup_weights': _after_cleanup_weights,
    'unstage': _after_unstage,
    'final_versions': _after_final_versions,
    'unlock': _after_unlock,
}
