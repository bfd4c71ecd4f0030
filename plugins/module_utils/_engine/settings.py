# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's inputs: every canary_* setting checked, coerced and given its
default (DEFAULTS, the one source the role defaults are tested against), and
the participants (app hosts, balancers, probe host) checked. Nothing here
reads or writes the state.
"""

from __future__ import annotations

import ast
import json
import re

from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import SHA256_RE, ReleaseError, is_url
from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import (
    DRIVERS,
    RELEASE_KINDS,
    capabilities as driver_capabilities,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._notify import (
    DEFAULT_RETRIES as NOTIFY_RETRIES,
    DEFAULT_TIMEOUT as NOTIFY_TIMEOUT,
    EVENTS as NOTIFY_EVENTS,
    check_settings as check_notify,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._judge import (
    CRITICAL_DIFFERENCE,
    CRITICAL_RATIO,
    JudgeError,
    check_critical,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import PlanError, plan_steps
from ansible_collections.grayrelease.canary.plugins.module_utils._power import UNDERPOWERED_POLICIES
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact_url
from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import check_metric_settings
from ansible_collections.grayrelease.canary.plugins.module_utils._routing import RoutingError, parse_spec as parse_routing
from ansible_collections.grayrelease.canary.plugins.module_utils._shared import parse_shared


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
    'canary_shared_paths': [],
    'canary_release_owner': '',
    'canary_release_group': '',
    'canary_lock_ttl': 600,
    'canary_lock_takeover': False,
    'canary_prestage': True,
    'canary_artifact_remote': False,
    'canary_settle_seconds': 2,
    'canary_haproxy_socket': '/run/haproxy/admin.sock',
    'canary_balancer_driver': 'haproxy',
    'canary_release_kind': 'tarball',
    # canary_release_kind=container: a registry reference (repo:tag, or repo@sha256:...) instead of an
    # image archive as canary_artifact; a tag is pinned to its digest once, at the start of the run.
    'canary_image': '',
    # Empty: /etc/nginx/grayrelease/<canary_backend>.conf.
    'canary_nginx_upstream_file': '',
    # Empty: no request counters from nginx (the judge has the probe's samples only).
    'canary_nginx_access_log': '',
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
    # Webhook notifications (module_utils/_notify): off while the URL is empty.
    'canary_notify_url': '',
    'canary_notify_format': 'json',
    'canary_notify_headers': {},
    'canary_notify_events': list(NOTIFY_EVENTS),
    'canary_notify_timeout': NOTIFY_TIMEOUT,
    'canary_notify_retries': NOTIFY_RETRIES,
    # Gray release by user (docs/routing.md): the routing haproxy_route takes; empty routes by share of requests.
    'canary_routing': {},
    # Hooks the engine acts on (each is a phase of its own): task files run on each app host of a
    # batch before the balancers drain it, and after they ready it. '' none. The switch hooks
    # (canary_before_switch_tasks, canary_after_switch_tasks) sit inside the switch: the role's alone.
    'canary_before_drain_tasks': '',
    'canary_after_ready_tasks': '',
}

# The hooks that are phases of a batch: setting -> the phase that runs it.
HOOK_PHASES = (('canary_before_drain_tasks', 'before_drain'), ('canary_after_ready_tasks', 'after_ready'))


# A registry reference as podman takes it: [registry/]repository[:tag][@sha256:digest], no spaces or options.
# A user or group as the release module takes it: a name (useradd's rules) or a numeric id.
ACCOUNT_RE = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]+)\Z')
IMAGE_RE = re.compile(r'^[a-z0-9][a-z0-9._/:-]*(?:@sha256:[0-9a-f]{64})?\Z')

# How Ansible reports a task that hit its `timeout` (the host froze mid-task): ansible-core
# up to 2.18 "... failed to execute in the expected time frame (N) and was terminated", 2.19
# "Timed out after N second(s)." (ansible/_internal/_errors/_alarm_timeout.py).
TASK_TIMEOUTS = ('in the expected time frame', 'Timed out after ')
# How a container connection (community.docker.docker, podman) reports a host that
# is frozen or stopped: the engine's "Error response from daemon" in the module's
# stderr, with an unreadable result; the host is lost as an unreachable one is.
HOST_GONE = ('is paused, unpause the container', 'is not running')


class EngineError(ValueError):
    """A decision cannot be made from the given input (a bug in the caller)."""


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


def judge_options(settings, confidence=None):
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
    _check_release(raw, get, settings, errors, artifact_exists)

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
    _check_balancer(get, settings, errors)
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
    # Neither the webhook's URL nor its headers are kept (the state is printed at -vvv):
    # the coordinator reads them again when it sends.
    settings['notify'], notify_errors = check_notify(*[get('canary_notify_' + name) for name in (
        'url', 'format', 'headers', 'events', 'timeout', 'retries')])
    errors += notify_errors
    settings['routing'] = _check_routing(get('canary_routing'), settings, errors)
    settings['hooks'] = _check_hooks(get, errors)
    return settings, errors


def _check_hooks(get, errors):
    """The batch phases that run a hook: those whose task file is set."""
    hooks = []
    for name, phase in HOOK_PHASES:
        value = get(name)
        if value in (None, ''):
            continue
        if not isinstance(value, str) or not value.strip() or '\n' in value:
            errors.append('%s=%r must be the path of a task file (e.g. /srv/deploy/hooks/%s.yml), or empty for none'
                          % (name, value, phase.replace('_', '-')))
            continue
        hooks.append(phase)
    return hooks


def _check_routing(raw, settings, errors):
    """canary_routing: the user routing (the stable backend filled in), or None; refused where the
    rollout cannot run it yet, naming the setting."""
    if raw in (None, '', {}):
        return None
    if not isinstance(raw, dict):
        errors.append('canary_routing=%r must be a mapping (key, opt_in, opt_out, steps; docs/routing.md)' % (raw,))
        return None
    spec = dict(raw)
    spec.setdefault('backend', settings['backend'])
    found = len(errors)
    if spec['backend'] != settings['backend']:
        errors.append('canary_routing.backend=%r is not canary_backend=%r: the routing moves the users of the '
                      'backend the rollout rolls' % (spec['backend'], settings['backend']))
    try:
        parsed = parse_routing(spec)
    except RoutingError as exc:
        errors.append('canary_routing: %s' % exc)
        return None
    steps = settings.get('steps') or []
    if steps and len(parsed['steps']) != len(steps):
        errors.append('canary_routing.steps has %d steps and canary_steps %d (%s): step N of the rollout moves the '
                      'hosts of canary_steps[N] to the canary backend, then routes the users of '
                      'canary_routing.steps[N]; give both the same length' % (len(parsed['steps']), len(steps), steps))
    if settings.get('driver') != 'haproxy':
        errors.append('canary_routing needs canary_balancer_driver=haproxy (the maps are HAProxy\'s), not %r'
                      % settings.get('driver'))
    if settings.get('pause') == 'manual':
        errors.append("canary_pause='manual' with canary_routing is not supported yet: a paused run would leave "
                      "users on the canary backend for the next run to find; use canary_pause in seconds")
    if settings.get('limit'):
        errors.append('canary_limit=%r with canary_routing is not supported yet: the run ends with every user on '
                      'the stable backend, which needs every host on one release' % (settings['limit'],))
    return spec if len(errors) == found else None


def _check_balancer(get, settings, errors):
    """settings['balancer']: the driver and its connection options, as the balancer_* action plugins take them."""
    driver = get('canary_balancer_driver')
    if driver not in DRIVERS:
        errors.append('canary_balancer_driver=%r must be one of %s' % (driver, ', '.join(sorted(DRIVERS))))
        driver = 'haproxy'
    settings['driver'] = driver
    settings['capabilities'] = driver_capabilities(driver)
    if driver == 'haproxy':
        settings['balancer'] = {'driver': driver, 'socket': settings['socket']}
        return
    upstream_file = get('canary_nginx_upstream_file') or '/etc/nginx/grayrelease/%s.conf' % settings['backend']
    if not isinstance(upstream_file, str) or not upstream_file.startswith('/') or '/../' in upstream_file + '/':
        errors.append('canary_nginx_upstream_file=%r must be an absolute path without ..' % (upstream_file,))
    settings['balancer'] = {'driver': driver, 'upstream_file': upstream_file}
    access_log = get('canary_nginx_access_log')
    if access_log:
        if not isinstance(access_log, str) or not access_log.startswith('/'):
            errors.append('canary_nginx_access_log=%r must be an absolute path' % (access_log,))
        settings['balancer']['access_log'] = access_log


def _limit(value, errors):
    """canary_limit: app hosts (a list, or names separated by commas) this run rolls; [] rolls them all."""
    if value in (None, ''):
        return []
    names = value.split(',') if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        errors.append('canary_limit=%r must be app host names, a list or separated by commas' % (value,))
        return []
    return [n.strip() for n in names]


def _check_release(raw, get, settings, errors, artifact_exists):
    """settings['release']: the kind and its options, as the rollout_release action plugin takes them.
    A container image from a registry (canary_image) needs no canary_artifact; its digest is pinned by the
    coordinator at the start of the run (settings['release']['digest'])."""
    kind = get('canary_release_kind')
    if kind not in RELEASE_KINDS:
        errors.append('canary_release_kind=%r must be one of %s' % (kind, ', '.join(sorted(RELEASE_KINDS))))
        kind = 'tarball'
    settings['release_kind'] = kind
    settings['release'] = {'kind': kind}
    _check_shared(get('canary_shared_paths'), kind, settings, errors)
    _check_owner(get, kind, settings, errors)
    image = get('canary_image')
    image = image.strip() if isinstance(image, str) else image
    if image and kind != 'container':
        errors.append('canary_image=%r needs canary_release_kind=container (it is %s)' % (image, kind))
    if kind == 'container' and image:
        if not isinstance(image, str) or not IMAGE_RE.match(image):
            errors.append('canary_image=%r must be a registry reference: REPOSITORY:TAG or REPOSITORY@sha256:DIGEST'
                          % (image,))
        if raw.get('canary_artifact'):
            errors.append('give canary_image (a registry reference) or canary_artifact (an image archive), not both')
        settings['release']['image'] = image
        settings.update(artifact='', artifact_remote=False, artifact_url=False, checksum='')
        return
    _check_artifact(raw, get, settings, errors, artifact_exists)


def _check_shared(value, kind, settings, errors):
    """canary_shared_paths: what every release of a tarball links to ROOT/shared (the release module's shared)."""
    if isinstance(value, str):
        value = [p for p in value.split(',') if p.strip()]   # a survey's text field
    if not value:
        return
    if kind != 'tarball':
        errors.append('canary_shared_paths=%r applies to canary_release_kind=tarball only (it is %s): a container '
                      'mounts what it shares' % (value, kind))
        return
    try:
        settings['release']['shared'] = parse_shared(value)
    except ReleaseError as exc:
        errors.append('canary_shared_paths: %s' % exc.msg)


def _check_owner(get, kind, settings, errors):
    """canary_release_owner, canary_release_group: who owns each release's files and its shared
    directories (the release module's owner and group); by default the user the tasks run as."""
    for var, option in (('canary_release_owner', 'owner'), ('canary_release_group', 'group')):
        value = get(var)
        value = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else value
        if value in (None, ''):
            continue
        if not isinstance(value, str) or not ACCOUNT_RE.match(value):
            errors.append('%s=%r must be a user or group name (e.g. demoapp) or a numeric id' % (var, value))
        elif kind != 'tarball':
            errors.append('%s=%r applies to canary_release_kind=tarball only (it is %s): a container runs as '
                          'its image and unit say' % (var, value, kind))
        else:
            settings['release'][option] = value


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
