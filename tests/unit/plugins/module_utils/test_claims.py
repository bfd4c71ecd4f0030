# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Claims (what a run set on a balancer's servers) and the capacity guard:
the file on its own, and haproxy_server's logic against a real HAProxy on loopback."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _haproxy_fixture import running_lab  # noqa: E402

from ansible_collections.grayrelease.canary.plugins.module_utils import _claims as claims  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import (  # noqa: E402
    HAProxyError,
    RuntimeAPI,
    ServerControl,
    gather_info,
    hand_over,
)

lab = pytest.fixture(running_lab)


def info(admin='ready', weight=1, initial=1, status='UP'):
    return {'admin_state': admin, 'weight': weight, 'initial_weight': initial, 'status': status}


# ---------------------------------------------------------------- the file


def test_out_of_rotation_names_why_each_server_takes_no_traffic():
    assert claims.out_of_rotation({
        'a': info(), 'b': info('maint', status='MAINT'), 'c': info('drain', status='DRAIN'),
        'd': info(status='DOWN'), 'e': info(weight=0), 'f': info(weight=5, initial=10), 'g': info(status='NOLB'),
    }) == {'b': 'maint', 'c': 'drain', 'd': 'DOWN', 'e': 'weight 0', 'g': 'NOLB'}


def test_a_claim_is_written_before_and_dropped_once_the_server_is_normal(tmp_path):
    path = str(tmp_path / 'lb' / 'demoapp.claims.json')
    claims.claim(path, 'demoapp', {'app2': info('drain')}, {'app1': info(), 'app2': info()}, 'run-1', 10.0)
    # The directory is created private.
    assert os.stat(str(tmp_path / 'lb')).st_mode & 0o777 == 0o700
    assert claims.load(path) == {'demoapp': {'app2': {'admin_state': 'drain', 'weight': 1, 'owner': 'run-1',
                                                      'at': 10.0}}}
    assert claims.matches(claims.load(path)['demoapp']['app2'], info('drain'))
    assert not claims.matches(claims.load(path)['demoapp']['app2'], info('maint'))
    claims.release(path, 'demoapp', {'app1': info(), 'app2': info()})
    assert claims.load(path) == {}


def test_a_stale_claim_on_a_normal_server_is_dropped_by_the_next_claim(tmp_path):
    # A run killed between its ready and the claim's removal left app1's claim.
    path = str(tmp_path / 'c.json')
    claims.save(path, {'demoapp': {'app1': {'admin_state': 'drain', 'weight': 1}}})
    claims.claim(path, 'demoapp', {'app3': info('drain')}, {'app1': info(), 'app3': info()}, 'run-2', 11.0)
    assert sorted(claims.load(path)['demoapp']) == ['app3']


@pytest.mark.parametrize('content', ['{not json', '[1, 2]', '{"demoapp": "x"}', ''])
def test_a_damaged_file_reads_as_no_claims(tmp_path, content):
    path = tmp_path / 'c.json'
    path.write_text(content)
    assert claims.load(str(path)) in ({}, {'demoapp': {}}) and not claims.load(str(path)).get('demoapp')


def test_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    with pytest.raises(claims.ClaimsError) as err:
        claims.save(str(shared / 'c.json'), {'demoapp': {}})
    assert str(shared) in str(err.value) and '0777' in str(err.value)
    assert os.listdir(str(shared)) == []


def test_a_planted_link_is_never_followed(tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('precious')
    directory = tmp_path / 'lb'
    directory.mkdir(mode=0o700)
    path = directory / 'c.json'
    os.symlink(str(victim), str(path))
    # Read: a link is no claims file. Write: the link itself is replaced, the target untouched.
    assert claims.load(str(path)) == {}
    claims.save(str(path), {'demoapp': {}})
    assert victim.read_text() == 'precious' and not os.path.islink(str(path))


# ---------------------------------------------------------------- haproxy_server's logic, real HAProxy


def control(lab, servers, path, **extra):
    return ServerControl(RuntimeAPI(lab.admin), 'web', servers, claims=path, owner='run-7', **extra)


def test_a_drain_is_claimed_and_the_ready_at_initial_weight_drops_it(lab, tmp_path):
    path = str(tmp_path / 'claims' / 'web.claims.json')
    control(lab, ['s1'], path).run(state='drain', drain_timeout=5)
    mine = claims.load(path)['web']
    assert mine == {'s1': {'admin_state': 'drain', 'weight': 1, 'owner': 'run-7', 'at': mine['s1']['at']}}
    control(lab, ['s2', 's3'], path).run(weights={'s2': 0, 's3': 5})
    assert sorted(claims.load(path)['web']) == ['s1', 's2', 's3']
    control(lab, ['s1'], path).run(state='ready', health_timeout=10)
    control(lab, ['s2', 's3'], path).run(weights={'s2': '100%', 's3': '100%'})
    assert claims.load(path) == {}


def test_check_mode_claims_nothing(lab, tmp_path):
    path = str(tmp_path / 'web.claims.json')
    control(lab, ['s1'], path).run(state='drain', check_mode=True)
    assert not os.path.exists(path)


def test_the_capacity_guard_refuses_a_drain_that_passes_the_cap_and_changes_nothing(lab, tmp_path):
    path = str(tmp_path / 'web.claims.json')
    fleet = ['s1', 's2', 's3']
    # An operator's maintenance on s2: with a cap of 1 there is no room for s1.
    ServerControl(RuntimeAPI(lab.admin), 'web', ['s2']).run(state='maint')
    with pytest.raises(HAProxyError) as err:
        control(lab, ['s1'], path, max_unavailable=1, fleet=fleet).run(state='drain', drain_timeout=5)
    assert err.value.kind == 'capacity'
    assert 'max_unavailable=1' in err.value.msg and 's2 (maint)' in err.value.msg and 's1 (drain)' in err.value.msg
    states = gather_info(RuntimeAPI(lab.admin), 'web')['web']
    assert states['s1']['admin_state'] == 'ready' and not os.path.exists(path)
    # 'bad' (DOWN, outside the fleet) does not count; with a cap of 2 the drain goes through.
    control(lab, ['s1'], path, max_unavailable=2, fleet=fleet).run(state='drain', drain_timeout=5)
    assert gather_info(RuntimeAPI(lab.admin), 'web')['web']['s1']['admin_state'] == 'drain'


def test_the_capacity_guard_holds_for_the_drain_that_follows_a_ready(lab, tmp_path):
    path = str(tmp_path / 'web.claims.json')
    ServerControl(RuntimeAPI(lab.admin), 'web', ['s3']).run(state='maint')
    control(lab, ['s1'], path).run(state='drain', drain_timeout=5)
    # s1 back, then s2 out: 2 out with s3's maintenance, over a cap of 1.
    with pytest.raises(HAProxyError) as err:
        hand_over(RuntimeAPI(lab.admin), 'web', ['s1'], ['s2'], run_args={'health_timeout': 10},
                  control_args={'claims': path, 'owner': 'run-7', 'max_unavailable': 1,
                                'fleet': ['s1', 's2', 's3']})
    assert err.value.result['then_drain']['failed'] and 'max_unavailable=1' in err.value.msg
    states = gather_info(RuntimeAPI(lab.admin), 'web')['web']
    assert states['s1']['admin_state'] == 'ready' and states['s2']['admin_state'] == 'ready'
    assert json.dumps(claims.load(path)) == '{}'
