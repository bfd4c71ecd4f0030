# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_routing: the user routing plan, its hash, the rendered HAProxy rules and the map apply (fake socket)."""

from __future__ import annotations

import re

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import HAProxyError
from ansible_collections.grayrelease.canary.plugins.module_utils._routing import (
    RoutingError,
    apply,
    bucket_of,
    limit_of,
    map_files,
    map_text,
    parse_map_list,
    parse_show_map,
    parse_spec,
    plan,
    render_haproxy,
    routes_to_canary,
)

SPEC = {
    'backend': 'demoapp',
    'key': {'cookie': 'uid'},
    'opt_in': [{'name': 'staff', 'header': {'X-Canary': '1'}},
               {'name': 'beta', 'users': ['alice', 'bob']},
               {'name': 'office', 'networks': ['10.20.0.0/16']}],
    'opt_out': [{'name': 'vip', 'users': ['carol', 'alice']},
                {'name': 'lab', 'networks': ['10.9.0.0/16']}],
    'steps': [{'group': 'staff'}, {'users': '5%'}, {'users': 50}, '100%'],
}

# Measured on HAProxy 2.6.12 (the fleet image): <key>,crc32(1),mod(10000).
HAPROXY_BUCKETS = {'alice': 5328, 'bob': 5877, 'user0007': 5017, 'aae70e69-8789-4bd0-9822-5e1a429747b4': 5833}


def spec(**changes):
    out = dict(SPEC)
    out.update(changes)
    return out


@pytest.mark.parametrize('key,bucket', sorted(HAPROXY_BUCKETS.items()))
def test_bucket_matches_haproxy(key, bucket):
    assert bucket_of(key) == bucket


def test_buckets_spread_evenly_over_sequential_ids():
    counts = [0] * 10
    for i in range(20000):
        counts[bucket_of('u%05d' % i) // 1000] += 1
    assert all(1800 <= c <= 2200 for c in counts), counts
    for percent in (1, 5, 20, 50, 90):
        share = sum(routes_to_canary('u%05d' % i, percent) for i in range(20000)) / 200.0
        assert abs(share - percent) < 1.0, (percent, share)


def test_users_only_move_from_stable_to_canary():
    shares = [0, 0.5, 1, 5, 12.5, 50, 99.99, 100]
    for i in range(3000):
        seen = [routes_to_canary('user-%d' % i, p) for p in shares]
        assert seen == sorted(seen)
    assert limit_of('12.5') == 1250 and limit_of(100) == 10000 and limit_of(0) == 0


def test_steps_are_cumulative():
    r = parse_spec(SPEC)
    assert [(s['percent'], s['active']) for s in r['steps']] == [
        (0.0, ['beta', 'office', 'staff']), (5.0, ['beta', 'office', 'staff']),
        (50.0, ['beta', 'office', 'staff']), (100.0, ['beta', 'office', 'staff'])]
    late = parse_spec(spec(steps=[{'group': 'staff'}, {'users': 5, 'group': 'beta'}, 100]))
    assert [s['active'] for s in late['steps']] == [['office', 'staff'], ['office', 'staff', 'beta'],
                                                    ['office', 'staff', 'beta']]
    assert late['canary_backend'] == 'demoapp_canary' and late['keyless'] == 'assign'
    assert parse_spec(spec(key={'header': 'X-User'}, steps=[5]))['keyless'] == 'share'


@pytest.mark.parametrize('changes,needle', [
    ({'steps': [{'group': 'staf'}]}, "'staf'"),
    ({'steps': [{'group': 'vip'}]}, "'vip', which is not an opt-in group"),
    ({'opt_in': [{'name': 'office', 'networks': ['10.20.0.300/16']}]}, "'10.20.0.300/16' is not a network"),
    ({'opt_in': [{'name': 'office', 'networks': ['10.0.0.0/33']}]}, "'10.0.0.0/33'"),
    ({'steps': ['101%']}, "'101%' is outside 0-100"),
    ({'steps': [{'users': -1}]}, "-1 is outside 0-100"),
    ({'steps': ['ten']}, "'ten' is not a percentage"),
    ({'steps': ['1.234%']}, "finer than 0.01%"),
    ({'steps': [50, 10]}, "users 10% is below the 50%"),
    ({'steps': []}, "steps must be a non-empty list"),
    ({'key': {'cookie': 'u id'}}, "'u id' is not a name HAProxy can use"),
    ({'key': {'cookie': 'uid;x'}}, "'uid;x'"),
    ({'key': {'header': 'X-User'}, 'keyless': 'assign'}, "keyless assign needs a cookie key"),
    ({'key': {'query': 'uid'}}, "{cookie: NAME} or {header: NAME}"),
    ({'keyless': 'random'}, "keyless 'random'"),
    ({'backend': 'demo app'}, "backend 'demo app'"),
    ({'canary_backend': 'demoapp'}, "needs a backend of its own"),
    ({'map_dir': 'relative'}, "map_dir 'relative' must be an absolute path"),
    ({'opt_in': [{'name': 'staff', 'header': {'X Canary': '1'}}]}, "'X Canary'"),
    ({'opt_in': [{'name': 'staff', 'header': {'X-Canary': 'a b'}}]}, "'a b' cannot go into an HAProxy map"),
    ({'opt_in': [{'name': 'beta', 'users': ['ok', 'bad#1']}]}, "'bad#1' cannot go into an HAProxy map"),
    ({'opt_in': [{'name': 'beta', 'users': []}]}, "users must be a non-empty list"),
    ({'opt_in': [{'name': 'beta', 'users': ['a'], 'networks': ['10.0.0.0/8']}]}, "exactly one of"),
    ({'opt_in': [{'name': 'vip', 'users': ['a']}]}, "group name 'vip' is used twice"),
    ({'opt_in': [{'name': 'lab2', 'networks': ['10.9.1.0/24']}]}, "lies inside opt-out network 10.9.0.0/16"),
    ({'colour': 'blue'}, "unknown keys colour"),
])
def test_bad_input_names_the_value(changes, needle):
    with pytest.raises(RoutingError) as err:
        parse_spec(spec(**changes))
    assert needle in str(err.value), str(err.value)


def test_plan_per_state():
    r = parse_spec(SPEC)
    first = plan(r, 'step', step=1)
    assert dict(first['str'])['=mode'] == 'step' and dict(first['str'])['=limit'] == '0'
    entries = dict(first['str'])
    # opt-out first: alice is in vip and in beta, vip wins.
    assert entries['u:alice'] == 'stable/optout:vip' and entries['u:carol'] == 'stable/optout:vip'
    assert entries['u:bob'] == 'canary/optin:beta' and entries['h:x-canary=1'] == 'canary/optin:staff'
    assert first['ip'] == [('10.9.0.0/16', 'stable/optout:lab'), ('10.20.0.0/16', 'canary/optin:office')]
    assert dict(plan(r, 'step', step=3)['str'])['=limit'] == '5000'
    assert dict(plan(r, 'step', step=2, percent='12.5%')['str'])['=limit'] == '1250'
    stable = plan(r, 'stable')
    assert dict(stable['str'])['=mode'] == 'stable' and 'u:bob' not in dict(stable['str'])
    assert stable['ip'] == [('10.9.0.0/16', 'stable/optout:lab')]
    assert dict(plan(r, 'canary')['str'])['=mode'] == 'canary'
    for bad, needle in [(dict(state='step'), 'needs step'), (dict(state='step', step=5), 'give 1..4'),
                        (dict(state='step', step=0), 'give 1..4'), (dict(state='step', percent=120), 'outside'),
                        (dict(state='done'), "state 'done'")]:
        with pytest.raises(RoutingError) as err:
            plan(r, **bad)
        assert needle in str(err.value)


def test_render_rules_order_and_names():
    out = render_haproxy(SPEC, servers=[{'name': 'app1', 'address': '10.0.0.1:8080'}], route_header='X-Gray-Route',
                         backend_options=['balance roundrobin'])
    lines = [line.strip() for line in out['frontend'].splitlines()]
    text = '\n'.join(lines)
    assert 'http-request set-var(txn.gr_key) req.cook(uid) if { req.cook(uid) -m found }' in lines
    assert 'crc32(1),mod(10000)' in text and 'map_ip(/etc/haproxy/routing/demoapp.net.map)' in text
    order = [i for i, line in enumerate(lines) if 'set-var(txn.gr_route)' in line]
    kinds = [re.search(r'(stable/all|canary/all|stable/optout:|canary/optin:|canary/bucket|stable/bucket|'
                       r'canary/share|stable/share|no-canary-server)', lines[i]).group(1) for i in order]
    assert kinds.index('stable/optout:') < kinds.index('canary/optin:') < kinds.index('canary/bucket')
    assert kinds[:2] == ['stable/all', 'canary/all']
    assert lines[-1] == 'use_backend demoapp_canary if { var(txn.gr_route) -m beg canary/ }'
    assert 'Set-Cookie "uid=%[var(txn.gr_new)]; Path=/; Max-Age=31536000; SameSite=Lax"' in text
    assert 'http-request capture var(txn.gr_route) len 64' in lines
    assert out['backend'].splitlines()[0] == 'backend demoapp_canary'
    assert '    server app1 10.0.0.1:8080 check' in out['backend'].splitlines()
    str_map, ip_map = map_files(parse_spec(SPEC))
    assert out['maps'] == [str_map, ip_map]
    assert out['initial_maps'][str_map].startswith('=mode stable\n')
    header_mode = render_haproxy(spec(key={'header': 'X-User'}, keyless='share'))
    assert 'uuid' not in header_mode['frontend'] and 'Set-Cookie' not in header_mode['frontend']
    assert header_mode['backend'] == ''


def test_parsers_of_haproxy_answers():
    listing = ("# id (file) description\n2 (/etc/haproxy/routing/demoapp.map) pattern loaded from file "
               "'/etc/haproxy/routing/demoapp.map' used by map at file '/etc/haproxy/haproxy.cfg' line 13. "
               "curr_ver=0 next_ver=0 entry_cnt=3\n4 (/etc/haproxy/routing/demoapp.net.map) pattern loaded "
               "...\n\n")
    assert parse_map_list(listing) == {'/etc/haproxy/routing/demoapp.map', '/etc/haproxy/routing/demoapp.net.map'}
    shown = '0x559c71b35e20 =limit 5000\n0x559c71b35eb0 =mode step\n0x559c u:alice canary/optin:beta\n\n'
    assert parse_show_map(shown) == [('=limit', '5000'), ('=mode', 'step'), ('u:alice', 'canary/optin:beta')]
    assert parse_show_map('0x1 2001:db8:0::/32 stable/optout:x\n', ip=True) == [('2001:db8::/32', 'stable/optout:x')]


class FakeHAProxy(object):
    """The runtime API's map commands as HAProxy 2.6 answers them, over maps held in memory."""

    spec = '/run/haproxy/admin.sock'

    def __init__(self, maps, backends=('demoapp', 'demoapp_canary'), level='admin'):
        self.maps = dict((path, list(entries)) for path, entries in maps.items())
        self.versions = {}
        self.backends = backends
        self.levels = level
        self.sent = []

    def require_admin(self):
        if self.levels != 'admin':
            raise HAProxyError('not admin', kind='not_admin')

    def command(self, cmd):
        self.sent.append(cmd)
        words = cmd.split()
        if cmd == 'show map':
            return '# id (file) description\n' + ''.join(
                '%d (%s) pattern loaded from file ...\n' % (i, p) for i, p in enumerate(sorted(self.maps)))
        if cmd == 'show backend':
            return '# name\n' + ''.join('%s\n' % b for b in self.backends)
        if words[:2] == ['show', 'map']:
            return ''.join('0x%x %s %s\n' % (i, k, v) for i, (k, v) in enumerate(self.maps[words[2]])) + '\n'
        if words[:2] == ['prepare', 'map']:
            self.versions[words[2]] = []
            return 'New version created: 7\n\n'
        if words[:2] == ['add', 'map']:
            assert words[2] == '@7'
            self.versions[words[3]].append((words[4], words[5]))
            return '\n'
        if words[:2] == ['commit', 'map']:
            self.maps[words[3]] = self.versions.pop(words[3])
            return '\n'
        return 'Unknown command\n'

    def set_command(self, cmd):
        out = self.command(cmd).strip()
        if out:
            raise HAProxyError(out, kind='rejected')


def routing_in(tmp_path):
    return parse_spec(spec(map_dir=str(tmp_path)))


def fake_with_files(tmp_path, r, state='stable'):
    start = plan(r, state)
    str_map, ip_map = map_files(r)
    with open(str_map, 'w') as handle:
        handle.write(map_text(start['str']))
    with open(ip_map, 'w') as handle:
        handle.write(map_text(start['ip']))
    return FakeHAProxy({str_map: start['str'], ip_map: start['ip']})


def test_apply_writes_files_then_commits_and_verifies(tmp_path):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    result = apply(api, r, 'step', step=2)
    str_map, ip_map = map_files(r)
    wanted = plan(r, 'step', step=2)
    assert result['changed'] and result['percent'] == 5.0 and result['step'] == 2
    assert open(str_map).read() == map_text(wanted['str']) and open(ip_map).read() == map_text(wanted['ip'])
    assert sorted(api.maps[str_map]) == sorted(wanted['str'])
    assert [c for c in api.sent if c.startswith(('prepare', 'commit'))] == [
        'prepare map %s' % str_map, 'commit map @7 %s' % str_map, 'prepare map %s' % ip_map,
        'commit map @7 %s' % ip_map]
    assert result['maps'][str_map]['commits'] == 1
    # Again: nothing to do, nothing committed.
    api.sent = []
    again = apply(api, r, 'step', step=2)
    assert not again['changed'] and not [c for c in api.sent if not c.startswith('show')]


def test_apply_reapplies_a_live_map_that_differs_from_the_file(tmp_path):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    str_map = map_files(r)[0]
    api.maps[str_map] = [('=mode', 'canary')]   # e.g. a runtime change by hand
    result = apply(api, r, 'stable')
    assert result['changed'] and result['maps'][str_map]['live_differed_from_file']
    assert not result['maps'][str_map]['file_changed'] and result['maps'][str_map]['commits'] == 1
    assert sorted(api.maps[str_map]) == sorted(plan(r, 'stable')['str'])


def test_check_mode_changes_nothing_and_shows_the_diff(tmp_path):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    str_map = map_files(r)[0]
    before = open(str_map).read()
    result = apply(api, r, 'canary', check_mode=True)
    assert result['changed'] and open(str_map).read() == before
    assert not [c for c in api.sent if not c.startswith('show')]
    diff = [d for d in result['diff'] if d['before_header'] == str_map][0]
    assert diff['before'] == before and diff['after'].startswith('=mode canary\n')


@pytest.mark.parametrize('maps,backends,needle', [
    ('str', ('demoapp', 'demoapp_canary'), 'has no map loaded from'),
    ('both', ('demoapp',), 'has no backend demoapp_canary'),
])
def test_refuses_a_balancer_without_the_configuration(tmp_path, maps, backends, needle):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    api.backends = backends
    if maps == 'str':
        del api.maps[map_files(r)[1]]
    before = open(map_files(r)[0]).read()
    with pytest.raises(RoutingError) as err:
        apply(api, r, 'step', step=3)
    assert needle in str(err.value) and err.value.kind == 'missing_config'
    assert open(map_files(r)[0]).read() == before
    assert not [c for c in api.sent if not c.startswith('show')]


def test_bad_step_refused_before_any_command(tmp_path):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    with pytest.raises(RoutingError):
        apply(api, r, 'step', step=9)
    assert api.sent == []


def test_verify_fails_when_haproxy_keeps_a_different_map(tmp_path):
    r = routing_in(tmp_path)
    api = fake_with_files(tmp_path, r)
    str_map = map_files(r)[0]
    real = api.command

    def lossy(cmd):
        out = real(cmd)
        if cmd.startswith('commit'):
            api.maps[str_map] = [('=mode', 'stable')]
        return out
    api.command = lossy
    with pytest.raises(RoutingError) as err:
        apply(api, r, 'canary')
    assert err.value.kind == 'verify' and 'after 3 commits' in str(err.value)
