# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gray release by user on HAProxy: the routing plan (pure stdlib).

Used by grayrelease.canary.haproxy_route (on a balancer) and
grayrelease.canary.routing_config (on the controller). See docs/routing.md.

How a request is routed, decided by HAProxy at request time from the rules
that render_haproxy() returns, in this order:

1. ``=mode`` in the routing map is ``stable`` or ``canary``: every request
   goes there (route ``stable/all`` or ``canary/all``). One map commit moves
   every user at once (rollback, finish).
2. opt-out: the user key (``u:<key>``), a header value (``h:<name>=<value>``)
   or the source address (network map) is listed with ``stable/optout:<group>``.
3. opt-in: the same lookups with ``canary/optin:<group>`` (only the groups
   active at the current step are in the maps).
4. a request with a user key: bucket = crc32(key) with HAProxy's full
   avalanche, mod 10000 (bucket_of() is the same function in Python);
   ``canary/bucket`` when bucket < ``=limit`` (P% = P * 100 buckets), else
   ``stable/bucket``. As P grows a user only moves from stable to canary.
5. a request without a key (keyless ``share``): a random bucket per request,
   route ``canary/share`` or ``stable/share``. With keyless ``assign`` no
   request is keyless: HAProxy draws a uuid, routes by it and sets it as the
   key cookie on the response.

Facts about HAProxy 2.6 checked on the fleet image: ``crc32(1)`` is zlib's
CRC32 followed by Bob Jenkins' full avalanche (HAProxy's full_hash());
``map_str_int`` refuses a map file whose values are not all integers, so the
limit is read with ``map_str`` and cast by ``sub(<var>)``; ``prepare map``
answers ``New version created: N``, ``add map @N`` and ``commit map @N``
answer nothing on success; ``show map`` without argument lists every map
with its file name in parentheses.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tempfile
import zlib

BUCKETS = 10000
NAME_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
# A value that goes into a map file as a key: no whitespace, no '#' (a comment
# in a map file), no backslash (an escape), no ';' (a command separator on the
# runtime API), printable ASCII only.
KEY_VALUE_RE = re.compile(r'^[!-~]{1,256}$')
KEY_VALUE_FORBIDDEN = ('#', '\\', ';')
PERCENT_RE = re.compile(r'^\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*$')
STATES = ('step', 'stable', 'canary')
KEYLESS = ('assign', 'share')
DEFAULT_MAP_DIR = '/etc/haproxy/routing'
DEFAULT_COOKIE_MAX_AGE = 31536000
SPEC_KEYS = ('backend', 'canary_backend', 'map_dir', 'key', 'keyless', 'cookie_max_age', 'opt_in', 'opt_out',
             'steps')
GROUP_KINDS = ('header', 'users', 'networks')


class RoutingError(ValueError):
    """A routing spec, a state or a balancer that does not fit; the message names the value and the fix."""

    def __init__(self, message, kind='invalid'):
        super(RoutingError, self).__init__(message)
        self.kind = kind


# --- the hash ---------------------------------------------------------------

_M32 = 0xffffffff


def full_hash(value):
    """HAProxy's full_hash() (Bob Jenkins' full avalanche on 32 bits), as ``crc32(1)`` applies it."""
    a = value & _M32
    a = ((a + 0x7ed55d16) + (a << 12)) & _M32
    a = ((a ^ 0xc761c23c) ^ (a >> 19)) & _M32
    a = ((a + 0x165667b1) + (a << 5)) & _M32
    a = ((a + 0xd3a2646c) ^ (a << 9)) & _M32
    a = ((a + 0xfd7046c5) + (a << 3)) & _M32
    a = ((a ^ 0xb55a4f09) ^ (a >> 16)) & _M32
    return (a * 3221225473) & _M32


def bucket_of(key, buckets=BUCKETS):
    """The bucket HAProxy puts a user key in: ``<key>,crc32(1),mod(buckets)``."""
    if not isinstance(key, bytes):
        key = str(key).encode('utf-8')
    return full_hash(zlib.crc32(key)) % buckets


def limit_of(percent):
    """P% as the bucket limit (buckets below it go to the canary): P * 100, 0..10000."""
    return int(round(float(percent) * BUCKETS / 100.0))


def routes_to_canary(key, percent):
    return bucket_of(key) < limit_of(percent)


# --- the spec ---------------------------------------------------------------

def _name(value, what, fix):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise RoutingError('%s %r is not a name HAProxy can use: %s (letters, digits, - and _, 1 to 64 '
                           'characters)' % (what, value, fix))
    return value


def _map_token(value, what):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RoutingError('%s %r must be a string' % (what, value))
    text = str(value)
    if not KEY_VALUE_RE.match(text) or any(c in text for c in KEY_VALUE_FORBIDDEN):
        raise RoutingError('%s %r cannot go into an HAProxy map: use 1 to 256 printable ASCII characters '
                           'without spaces, "#", ";" or backslash' % (what, value))
    return text


def parse_percent(value, what='percent'):
    """A share of users: 0..100 as a number or a text "N%" (at most 2 decimals)."""
    if isinstance(value, bool):
        raise RoutingError('%s %r is not a percentage: give a number 0-100 or "N%%"' % (what, value))
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and PERCENT_RE.match(value):
        number = float(PERCENT_RE.match(value).group(1))
    else:
        raise RoutingError('%s %r is not a percentage: give a number 0-100 or "N%%"' % (what, value))
    if math.isnan(number) or number < 0 or number > 100:
        raise RoutingError('%s %r is outside 0-100: give a share of users between 0 and 100' % (what, value))
    if abs(number * 100 - round(number * 100)) > 1e-6:
        raise RoutingError('%s %r is finer than 0.01%%: the buckets are 1/10000 of the users' % (what, value))
    return number


def _network(value, group):
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise RoutingError('group %s: %r is not a network: give a CIDR such as 10.1.0.0/16 or 2001:db8::/32, '
                           'or a single address' % (group, value))


def _group(raw, side, seen):
    where = 'opt_%s' % side
    if not isinstance(raw, dict):
        raise RoutingError('%s: each group is a dict with name and one of %s, got %r'
                           % (where, ', '.join(GROUP_KINDS), raw))
    unknown = sorted(set(raw) - set(('name',) + GROUP_KINDS))
    if unknown:
        raise RoutingError('%s: group %r has unknown keys %s: allowed are name, %s'
                           % (where, raw.get('name'), ', '.join(map(str, unknown)), ', '.join(GROUP_KINDS)))
    name = _name(raw.get('name'), '%s group name' % where, 'rename the group')
    if name in seen:
        raise RoutingError('group name %r is used twice: every opt-in and opt-out group needs its own name' % name)
    seen.add(name)
    kinds = [k for k in GROUP_KINDS if k in raw]
    if len(kinds) != 1:
        raise RoutingError('%s group %s: give exactly one of %s, got %s'
                           % (where, name, ', '.join(GROUP_KINDS), ', '.join(kinds) or 'none'))
    kind = kinds[0]
    value = raw[kind]
    group = {'name': name, 'side': side, 'kind': kind}
    if kind == 'header':
        if not isinstance(value, dict) or len(value) != 1:
            raise RoutingError('%s group %s: header must be one header name and its value, e.g. '
                               '{X-Canary: "1"}, got %r' % (where, name, value))
        (header, wanted), = value.items()
        _name(header, 'group %s: header name' % name, 'HAProxy reads the header by this name')
        group['header'] = header.lower()
        group['value'] = _map_token(wanted, 'group %s: header %s value' % (name, header))
    elif kind == 'users':
        if not isinstance(value, list) or not value:
            raise RoutingError('%s group %s: users must be a non-empty list of user keys, got %r'
                               % (where, name, value))
        group['users'] = [_map_token(u, 'group %s: user key' % name) for u in value]
    else:
        if not isinstance(value, list) or not value:
            raise RoutingError('%s group %s: networks must be a non-empty list of CIDRs, got %r'
                               % (where, name, value))
        group['networks'] = [_network(n, name) for n in value]
    return group


def _step(raw, index, groups_in):
    what = 'steps[%d]' % index
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {'group', 'groups', 'users'})
        if unknown or not raw:
            raise RoutingError('%s %r: a step is a percentage, or a dict with group, groups and/or users (e.g. '
                               '{group: staff} or {users: "5%%"})' % (what, raw))
        names = []
        if 'group' in raw:
            names.append(raw['group'])
        if 'groups' in raw:
            if not isinstance(raw['groups'], list):
                raise RoutingError('%s: groups must be a list of opt-in group names, got %r' % (what, raw['groups']))
            names.extend(raw['groups'])
        for name in names:
            if name not in groups_in:
                raise RoutingError('%s names group %r, which is not an opt-in group: known opt-in groups are %s'
                                   % (what, name, ', '.join(sorted(groups_in)) or 'none (define it under opt_in)'))
        percent = parse_percent(raw['users'], '%s users' % what) if 'users' in raw else None
        return {'groups': names, 'percent': percent}
    return {'groups': [], 'percent': parse_percent(raw, what)}


def parse_spec(spec):
    """Validate a routing spec and return it normalized; RoutingError names the first bad value."""
    if not isinstance(spec, dict):
        raise RoutingError('routing must be a dict (backend, key, keyless, opt_in, opt_out, steps), got %r' % (spec,))
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise RoutingError('routing has unknown keys %s: allowed are %s' % (', '.join(map(str, unknown)),
                                                                            ', '.join(SPEC_KEYS)))
    backend = _name(spec.get('backend'), 'backend', 'give the name of the stable backend')
    canary_backend = _name(spec.get('canary_backend') or '%s_canary' % backend, 'canary_backend',
                           'give the name of the canary backend')
    if canary_backend == backend:
        raise RoutingError('canary_backend %r is the stable backend: the canary needs a backend of its own'
                           % canary_backend)
    map_dir = spec.get('map_dir') or DEFAULT_MAP_DIR
    if not isinstance(map_dir, str) or not map_dir.startswith('/') or re.search(r'[\s,;#\\()]', map_dir):
        raise RoutingError('map_dir %r must be an absolute path without spaces, commas, parentheses, "#", ";" '
                           'or backslash' % (map_dir,))
    key = spec.get('key')
    if not isinstance(key, dict) or len(key) != 1 or list(key)[0] not in ('header', 'cookie'):
        raise RoutingError('key %r: give where the user key is, {cookie: NAME} or {header: NAME}' % (key,))
    (source, key_name), = key.items()
    _name(key_name, 'key %s name' % source, 'HAProxy reads the user key by this name')
    keyless = spec.get('keyless') or ('assign' if source == 'cookie' else 'share')
    if keyless not in KEYLESS:
        raise RoutingError('keyless %r: give assign (a cookie set on the first response) or share (routed by '
                           'share, request by request)' % (keyless,))
    if keyless == 'assign' and source != 'cookie':
        raise RoutingError('keyless assign needs a cookie key (HAProxy can set a cookie, not a request header): '
                           'use key {cookie: NAME} or keyless share')
    max_age = spec.get('cookie_max_age', DEFAULT_COOKIE_MAX_AGE)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
        raise RoutingError('cookie_max_age %r must be a number of seconds >= 1' % (max_age,))
    seen = set()
    groups = []
    for side in ('out', 'in'):
        raw = spec.get('opt_%s' % side) or []
        if not isinstance(raw, list):
            raise RoutingError('opt_%s must be a list of groups, got %r' % (side, raw))
        groups.extend(_group(g, side, seen) for g in raw)
    _check_networks(groups)
    groups_in = [g['name'] for g in groups if g['side'] == 'in']
    raw_steps = spec.get('steps')
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RoutingError('steps must be a non-empty list, e.g. [{group: staff}, {users: "5%%"}, "50%%", "100%%"], '
                           'got %r' % (raw_steps,))
    steps = [_step(s, i, groups_in) for i, s in enumerate(raw_steps)]
    # Cumulative: a step keeps the groups and the share of the steps before it.
    named = set(n for s in steps for n in s['groups'])
    active = [g for g in groups_in if g not in named]   # groups no step names: on from the first step
    percent = 0.0
    for index, step in enumerate(steps):
        if step['percent'] is not None:
            if step['percent'] < percent:
                raise RoutingError('steps[%d]: users %s%% is below the %s%% of an earlier step: a user on the '
                                   'canary would go back to stable; make the shares non-decreasing'
                                   % (index, _fmt(step['percent']), _fmt(percent)))
            percent = step['percent']
        active = active + [g for g in step['groups'] if g not in active]
        step['percent'] = percent
        step['active'] = list(active)
    return {'backend': backend, 'canary_backend': canary_backend, 'map_dir': map_dir.rstrip('/') or '/',
            'key': {'source': source, 'name': key_name}, 'keyless': keyless, 'cookie_max_age': max_age,
            'groups': groups, 'steps': steps}


def _fmt(percent):
    return ('%.2f' % percent).rstrip('0').rstrip('.')


def _check_networks(groups):
    """A network map answers with the longest matching prefix: an opt-in network inside (or equal to) an
    opt-out network would win over it, which breaks "opt-out first"; refuse it."""
    outs = [(n, g['name']) for g in groups if g['side'] == 'out' and g['kind'] == 'networks' for n in g['networks']]
    for g in groups:
        if g['side'] != 'in' or g['kind'] != 'networks':
            continue
        for net in g['networks']:
            for out, out_name in outs:
                if net.version == out.version and net.subnet_of(out):
                    raise RoutingError('opt-in network %s (group %s) lies inside opt-out network %s (group %s): '
                                       'every address of it is opted out; remove it from one of the groups'
                                       % (net, g['name'], out, out_name))


def canary_backend_of(spec):
    """The canary backend a routing spec names, raw or parsed (default <backend>_canary)."""
    return spec.get('canary_backend') or '%s_canary' % spec['backend']


def map_files(routing):
    """The two map files: (routing map of strings, network map)."""
    base = os.path.join(routing['map_dir'], routing['backend'])
    return base + '.map', base + '.net.map'


# --- the plan: what the maps hold at a state ---------------------------------

def plan(routing, state, step=None, percent=None):
    """The maps' contents at ``state``: {'mode', 'step', 'percent', 'groups' (active opt-in), 'str': [(key,
    value)], 'ip': [(cidr, value)]}. ``step`` is 1-based; ``percent`` (with state step) overrides the share
    and activates every opt-in group."""
    if state not in STATES:
        raise RoutingError('state %r: give one of %s' % (state, ', '.join(STATES)))
    index = None
    if state == 'step':
        if step is None and percent is None:
            raise RoutingError('state step needs step (1..%d, the step of routing.steps) or percent'
                               % len(routing['steps']))
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= len(routing['steps']):
                raise RoutingError('step %r is not a step of routing.steps: give 1..%d'
                                   % (step, len(routing['steps'])))
            index = step
            chosen = routing['steps'][step - 1]
            share, active = chosen['percent'], chosen['active']
        else:
            active = [g['name'] for g in routing['groups'] if g['side'] == 'in']
        if percent is not None:
            share = parse_percent(percent)
    else:
        share = 0.0 if state == 'stable' else 100.0
        active = []
    str_entries = [('=mode', state)]
    if state == 'step':
        str_entries.append(('=limit', str(limit_of(share))))
        if index is not None:
            str_entries.append(('=step', str(index)))
    ip_entries = []
    seen_str, seen_ip = set(k for k, _v in str_entries), set()
    # opt-out first: its entries win a key that an opt-in group also lists.
    groups = [g for g in routing['groups'] if g['side'] == 'out'] + \
             [g for g in routing['groups'] if g['side'] == 'in' and g['name'] in active]
    for g in groups:
        value = ('stable/optout:%s' if g['side'] == 'out' else 'canary/optin:%s') % g['name']
        if g['kind'] == 'networks':
            for net in g['networks']:
                if str(net) not in seen_ip:
                    seen_ip.add(str(net))
                    ip_entries.append((str(net), value))
            continue
        keys = ['u:%s' % u for u in g['users']] if g['kind'] == 'users' else ['h:%s=%s' % (g['header'], g['value'])]
        for k in keys:
            if k not in seen_str:
                seen_str.add(k)
                str_entries.append((k, value))
    return {'state': state, 'mode': state, 'step': index, 'percent': share if state == 'step' else None,
            'groups': active, 'str': str_entries, 'ip': ip_entries}


def map_text(entries):
    return ''.join('%s %s\n' % (k, v) for k, v in entries)


def parse_map_text(text, ip=False):
    """Entries of a map file (comments and blank lines skipped)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.split(None, 1)
        entries.append((_norm_key(parts[0], ip), parts[1].strip() if len(parts) > 1 else ''))
    return entries


def parse_show_map(text, ip=False):
    """Entries of ``show map <file>``: lines ``0xADDR key value``."""
    entries = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0].startswith('0x'):
            entries.append((_norm_key(parts[1], ip), parts[2].strip() if len(parts) > 2 else ''))
    return entries


def _norm_key(key, ip):
    if not ip:
        return key
    try:
        return str(ipaddress.ip_network(key, strict=False))
    except ValueError:
        return key


def parse_map_list(text):
    """File names of the maps that ``show map`` lists (``<id> (<file>) <description>``)."""
    files = set()
    for line in text.splitlines():
        match = re.match(r'^-?\d+ \((.*?)\) ', line)
        if match:
            files.add(match.group(1))
    return files


def parse_backend_list(text):
    return set(line.strip() for line in text.splitlines() if line.strip() and not line.startswith('#'))


def same_entries(a, b):
    return sorted(a) == sorted(b)


# --- the HAProxy configuration ----------------------------------------------

def render_haproxy(spec, servers=None, server_options='check', backend_options=None, route_header=None,
                   log_capture=True):
    """The configuration the user adds once: {'frontend': rules for the frontend, before its use_backend /
    default_backend lines; 'backend': the canary backend section ('' without servers); 'maps': the two map
    files; 'initial_maps': file -> content at state stable (create them before HAProxy starts)}."""
    r = parse_spec(spec)
    str_map, ip_map = map_files(r)
    if route_header is not None:
        _name(route_header, 'route_header', 'give a response header name')
    lines = ['# grayrelease.canary user routing for backend %s (docs/routing.md). The knobs are in the maps;'
             % r['backend'],
             '# changing a step needs no reload. Keep these rules before use_backend / default_backend.']

    def add(rule):
        lines.append(rule)

    fetch = 'req.cook(%s)' % r['key']['name'] if r['key']['source'] == 'cookie' else 'req.hdr(%s)' % r['key']['name']
    add('http-request set-var(txn.gr_key) %s if { %s -m found }' % (fetch, fetch))
    if r['keyless'] == 'assign':
        add('http-request set-var(txn.gr_new) uuid if !{ var(txn.gr_key) -m found }')
        add('http-request set-var(txn.gr_key) var(txn.gr_new) if { var(txn.gr_new) -m found }')
    add('http-request set-var(txn.gr_mode) str(=mode),map_str(%s,stable)' % str_map)
    add('http-request set-var(txn.gr_limit) str(=limit),map_str(%s,0)' % str_map)
    # lookups: user key, source network, one per header a group reads
    add('http-request set-var(txn.gr_lu) str(u:),concat(,txn.gr_key,),map_str(%s) if { var(txn.gr_key) -m found }'
        % str_map)
    add('http-request set-var(txn.gr_ln) src,map_ip(%s)' % ip_map)
    lookups = ['txn.gr_lu', 'txn.gr_ln']
    headers = []
    for g in r['groups']:
        if g['kind'] == 'header' and g['header'] not in headers:
            headers.append(g['header'])
    for i, header in enumerate(headers):
        add('http-request set-var(txn.gr_hv%d) req.hdr(%s) if { req.hdr(%s) -m found }' % (i, header, header))
        add('http-request set-var(txn.gr_lh%d) str(h:%s=),concat(,txn.gr_hv%d,),map_str(%s) if { var(txn.gr_hv%d) '
            '-m found }' % (i, header, i, str_map, i))
        lookups.append('txn.gr_lh%d' % i)
    unset = '!{ var(txn.gr_route) -m found }'
    add('http-request set-var(txn.gr_route) str(stable/all) if { var(txn.gr_mode) -m str stable }')
    add('http-request set-var(txn.gr_route) str(canary/all) if { var(txn.gr_mode) -m str canary }')
    for prefix in ('stable/optout:', 'canary/optin:'):
        for var in lookups:
            add('http-request set-var(txn.gr_route) var(%s) if %s { var(%s) -m beg %s }' % (var, unset, var, prefix))
    add('http-request set-var(txn.gr_bucket) var(txn.gr_key),crc32(1),mod(%d) if { var(txn.gr_key) -m found }'
        % BUCKETS)
    add('http-request set-var(txn.gr_route) str(canary/bucket) if %s { var(txn.gr_bucket),sub(txn.gr_limit) lt 0 }'
        % unset)
    add('http-request set-var(txn.gr_route) str(stable/bucket) if %s { var(txn.gr_bucket) -m found }' % unset)
    add('http-request set-var(txn.gr_route) str(canary/share) if %s { rand(%d),sub(txn.gr_limit) lt 0 }'
        % (unset, BUCKETS))
    add('http-request set-var(txn.gr_route) str(stable/share) if %s' % unset)
    # No fallback to stable when the canary backend has no usable server: right after a reload HAProxy
    # reports none for a moment (measured on 2.6), and such a rule flipped users to stable then.
    if log_capture:
        add('http-request capture var(txn.gr_route) len 64')
    if r['keyless'] == 'assign':
        add('http-response add-header Set-Cookie "%s=%%[var(txn.gr_new)]; Path=/; Max-Age=%d; SameSite=Lax" '
            'if { var(txn.gr_new) -m found }' % (r['key']['name'], r['cookie_max_age']))
    if route_header:
        add('http-response set-header %s %%[var(txn.gr_route)]' % route_header)
    add('use_backend %s if { var(txn.gr_route) -m beg canary/ }' % r['canary_backend'])
    frontend = ''.join('    %s\n' % line for line in lines)
    backend = ''
    if servers:
        blines = ['backend %s' % r['canary_backend'],
                  '    # The same servers as backend %s. During a rollout only the canary hosts serve here (the'
                  % r['backend'],
                  '    # others in maint) and the canary hosts are out of %s. Not "disabled": HAProxy keeps a'
                  % r['backend'],
                  '    # configured-disabled server in maintenance (CMAINT) after the runtime API readies it.']
        for option in backend_options or []:
            blines.append('    %s' % option)
        for server in servers:
            if not isinstance(server, dict) or 'name' not in server or 'address' not in server:
                raise RoutingError('servers: each server is a dict with name and address, got %r' % (server,))
            _map_token(server['name'], 'server name')
            _map_token(server['address'], 'server address')
            options = server.get('options', server_options)
            blines.append('    server %s %s %s' % (server['name'], server['address'], options))
        backend = '\n'.join(blines) + '\n'
    stable = plan(r, 'stable')
    return {'frontend': frontend, 'backend': backend, 'maps': [str_map, ip_map],
            'initial_maps': {str_map: map_text(stable['str']), ip_map: map_text(stable['ip'])}}


# --- applying a plan on a balancer ----------------------------------------------

def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_file(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def preflight(api, routing):
    """Refuse (nothing changed) when HAProxy lacks a map or a backend the routing needs."""
    str_map, ip_map = map_files(routing)
    loaded = parse_map_list(api.command('show map'))
    missing = [f for f in (str_map, ip_map) if f not in loaded]
    if missing:
        raise RoutingError(
            'HAProxy on %s has no map loaded from %s: add the frontend rules of grayrelease.canary.routing_config '
            '(docs/routing.md), create the map files, then reload HAProxy' % (api.spec, ' and '.join(missing)),
            kind='missing_config')
    backends = parse_backend_list(api.command('show backend'))
    absent = [b for b in (routing['backend'], routing['canary_backend']) if b not in backends]
    if absent:
        raise RoutingError('HAProxy on %s has no backend %s: add it (grayrelease.canary.routing_config renders the '
                           'canary backend), then reload HAProxy' % (api.spec, ' and '.join(absent)),
                           kind='missing_config')


def live_entries(api, path, ip):
    return parse_show_map(api.command('show map %s' % path), ip)


def commit_entries(api, path, entries):
    """Replace a map's live content in one commit: prepare, add every entry to the new version, commit."""
    answer = api.command('prepare map %s' % path).strip()
    match = re.match(r'^New version created: (\d+)$', answer)
    if not match:
        raise RoutingError('HAProxy answered %r to "prepare map %s" (HAProxy 2.4+ is needed for map versions)'
                           % (answer, path), kind='rejected')
    version = match.group(1)
    for key, value in entries:
        api.set_command('add map @%s %s %s %s' % (version, path, key, value))
    api.set_command('commit map @%s %s' % (version, path))


def apply(api, routing, state, step=None, percent=None, check_mode=False, verify_rounds=3):
    """Bring both map files and HAProxy's live maps to the plan. Returns the module's result."""
    wanted = plan(routing, state, step, percent)
    api.require_admin()
    preflight(api, routing)
    str_map, ip_map = map_files(routing)
    maps = [(str_map, wanted['str'], False), (ip_map, wanted['ip'], True)]
    result = {'changed': False, 'state': state, 'step': wanted['step'], 'percent': wanted['percent'],
              'groups': wanted['groups'], 'maps': {}, 'diff': []}
    for path, entries, ip in maps:
        before_file = read_file(path)
        file_entries = parse_map_text(before_file, ip) if before_file is not None else None
        live = live_entries(api, path, ip)
        norm = [(_norm_key(k, ip), v) for k, v in entries]
        file_ok = file_entries is not None and same_entries(file_entries, norm) and before_file == map_text(entries)
        live_ok = same_entries(live, norm)
        result['maps'][path] = {'entries': len(entries), 'file_changed': not file_ok, 'live_changed': not live_ok,
                                'live_differed_from_file': file_entries is not None and not same_entries(live,
                                                                                                         file_entries)}
        if not file_ok or not live_ok:
            result['changed'] = True
            result['diff'].append({'before_header': path, 'after_header': path,
                                   'before': before_file if before_file is not None else map_text(live),
                                   'after': map_text(entries)})
    if check_mode or not result['changed']:
        return result
    # The string map first: it holds the mode, so a rollback moves everyone in its one commit.
    for path, entries, ip in maps:
        info = result['maps'][path]
        if info['file_changed']:
            write_atomic(path, map_text(entries))
        norm = [(_norm_key(k, ip), v) for k, v in entries]
        commits = 0
        live = live_entries(api, path, ip)
        while not same_entries(live, norm):
            if commits >= verify_rounds:
                raise RoutingError('HAProxy on %s still serves map %s different from the file after %d commits: %s'
                                   % (api.spec, path, commits, _difference(live, norm)), kind='verify')
            commit_entries(api, path, entries)
            commits += 1
            live = live_entries(api, path, ip)
        info['commits'] = commits
    return result


def _difference(live, wanted):
    extra = sorted(set(live) - set(wanted))
    missing = sorted(set(wanted) - set(live))
    return 'extra %s, missing %s' % (extra[:5], missing[:5])
