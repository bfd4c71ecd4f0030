"""The rollout role's tasks against the contract table (plugins/module_utils/_contract.py).

A register name that does not match what the coordinator reads back reads as
"no answer" and the engine marks a healthy host lost; a phase the engine sets
that no task acts on stalls the run. These tests parse roles/rollout/tasks/*.yml.
"""
from __future__ import annotations

import ast
import pathlib
import re

import yaml

from ansible_collections.grayrelease.canary.plugins.module_utils import _contract as contract
from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine

ROOT = pathlib.Path(__file__).resolve().parents[4]
TASKS = ROOT / 'roles' / 'rollout' / 'tasks'
ENGINE = ROOT / 'plugins' / 'module_utils' / '_engine'
ROLE_OF = dict((register, role) for role, register in contract.REGISTERS.items())
ROLE_OF.update((register, role) for role, register in contract.ANALYSIS_REGISTERS.values())
PHASE_RE = re.compile(r"rollout_phase == '(\w+)'")
# An include that picks its file by phase: 'a.yml' if rollout_phase == 'p' else 'b.yml'.
PICK_RE = re.compile(r"'([\w]+\.yml)' if rollout_phase == '(\w+)' else '([\w]+\.yml)'")


def _module(task):
    names = [k for k in task if k.startswith(('grayrelease.canary.', 'ansible.builtin.'))]
    assert len(names) == 1, task
    return names[0]


def _phases(task):
    return PHASE_RE.findall(str(task.get('when', '')))


def _register(item, module):
    """What the task registers: its register, or the register a set_fact sets (a hook's outcome)."""
    if module == 'ansible.builtin.set_fact' and isinstance(item[module], dict):
        return next((name for name in item[module] if name in ROLE_OF), None)
    return item.get('register')


def _included(target, phases):
    """(file, the phases it inherits) of an include's target: a file picked by phase
    inherits that phase, the other one the rest."""
    picked = PICK_RE.search(target)
    if picked:
        chosen, phase, other = picked.groups()
        return [(chosen, [phase]), (other, [p for p in phases if p != phase])]
    return [(name, phases) for name in re.findall(r'[\w]+\.yml', target)]


def _walk(path, inherited):
    """(file, module, register, phases) of every task, the phases of the include that brings a file in inherited."""
    for task in yaml.safe_load(path.read_text()) or []:
        for item in _flatten(task):
            phases = _phases(item) or inherited
            module = _module(item)
            if module in ('ansible.builtin.include_tasks', 'ansible.builtin.import_tasks'):
                for name, its_phases in _included(str(item[module]), phases):
                    yield from _walk(TASKS / name, its_phases)
                continue
            yield path.name, module, _register(item, module), phases


def _flatten(task):
    if 'block' in task:
        for sub in task['block'] + task.get('rescue', []) + task.get('always', []):
            yield from _flatten(sub)
    else:
        yield task


def _actor_tasks():
    return [t for t in _walk(TASKS / 'main.yml', []) if t[2] in ROLE_OF]


def test_every_actor_task_registers_what_the_coordinator_reads_for_its_phase():
    tasks = _actor_tasks()
    assert len(tasks) >= 20, tasks
    for name, module, register, phases in tasks:
        role = ROLE_OF[register]
        # A task with no phase of its own (the analysis's reads, a rollback group's lock refresh) acts in
        # every phase whose table has its actor and module.
        candidates = phases or [p for p, actors in contract.PHASES.items() if module in actors.get(role, ())]
        assert candidates, (name, module, register)
        for phase in candidates:
            assert phase in contract.PHASES, (name, phase)
            assert module in contract.PHASES[phase].get(role, ()), (
                '%s: %s registers %s (actor %s) in phase %s, the table says %s'
                % (name, module, register, role, phase, contract.PHASES[phase]))


def test_every_phase_and_actor_of_the_table_has_its_task():
    seen = set()
    for name, module, register, phases in _actor_tasks():
        for phase in phases or contract.PHASES:
            seen.add((phase, ROLE_OF[register], module))
    for phase, actors in contract.PHASES.items():
        for role, modules in actors.items():
            assert any((phase, role, m) in seen for m in modules), (phase, role, modules)


def test_the_phases_the_engine_sets_are_the_table_and_the_dispatch():
    set_by_engine = set()
    for path in ENGINE.glob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'set_act':
                set_by_engine.add(node.args[1].value)
            # state['act'] = {'phase': ..., ...}
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Subscript) and getattr(t.slice, 'value', None) == 'act' for t in node.targets)):
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and key.value == 'phase':
                        set_by_engine.add(value.value)
    assert len(set_by_engine) >= 15, set_by_engine
    assert set_by_engine <= set(contract.PHASES), set_by_engine - set(contract.PHASES)
    assert set(engine.HANDLERS) == set(contract.PHASES)


def test_the_batch_phases_are_in_the_order_of_the_table():
    order = list(contract.PHASES)
    assert [order.index(p) for p in contract.BATCH_PHASES] == sorted(order.index(p) for p in contract.BATCH_PHASES)


def test_the_release_and_balancer_seams_name_each_kind_and_driver_and_refuse_others():
    from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import DriverError, module_call, release_call
    assert release_call({'kind': 'tarball'}, {'root': '/opt/x'}) == ('grayrelease.canary.release', {'root': '/opt/x'})
    name, args = release_call({'kind': 'container', 'image': 'r/app@sha256:' + 'a' * 64, 'digest': ''}, {'state': 'info'})
    assert name == 'grayrelease.canary.container_release' and args == {'state': 'info', 'image': 'r/app@sha256:' + 'a' * 64}
    assert module_call({'driver': 'nginx', 'upstream_file': '/etc/u.conf'}, 'server', {'servers': ['a']}) == (
        'grayrelease.canary.nginx_server', {'servers': ['a'], 'upstream_file': '/etc/u.conf'})
    for bad, call in (({'kind': 'rpm'}, release_call), ({'kind': 'tarball', 'image': 'x'}, release_call),
                      ({'driver': 'f5'}, lambda b, a: module_call(b, 'info', a)),
                      ({'driver': 'haproxy', 'upstream_file': '/x'}, lambda b, a: module_call(b, 'info', a))):
        try:
            call(bad, {})
        except DriverError as exc:
            assert repr(bad.get('kind') or bad.get('driver')) in str(exc) or 'upstream_file' in str(exc) or 'image' in str(exc)
        else:
            raise AssertionError('accepted %r' % (bad,))


def test_the_engine_settings_refuse_an_unknown_kind_or_driver_and_an_image_without_the_container_kind():
    base = {'canary_version': 'v2', 'canary_backend': 'web', 'canary_service': 'web', 'canary_artifact': '/tmp/x.tar.gz'}
    settings, errors = engine.check_settings(dict(base, canary_release_kind='rpm', canary_balancer_driver='f5'))
    assert any("canary_release_kind='rpm'" in e for e in errors) and any("canary_balancer_driver='f5'" in e for e in errors)
    settings, errors = engine.check_settings(dict(base, canary_image='r/app:v2'))
    assert any('canary_image' in e and 'container' in e for e in errors)
    settings, errors = engine.check_settings(dict(base, canary_release_kind='container', canary_artifact='',
                                                  canary_image='r/app:v2'))
    assert not errors and settings['release'] == {'kind': 'container', 'image': 'r/app:v2'} and settings['artifact'] == ''
    settings, errors = engine.check_settings(dict(base, canary_release_kind='container', canary_image='r/app:v2 --rm'))
    assert any("canary_image='r/app:v2 --rm'" in e for e in errors)
    settings, errors = engine.check_settings(dict(base, canary_balancer_driver='nginx'))
    assert not errors and settings['balancer'] == {'driver': 'nginx', 'upstream_file': '/etc/nginx/grayrelease/web.conf'}


def test_the_shared_paths_go_to_the_tarball_kind_and_a_bad_one_is_named():
    from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import release_call
    base = {'canary_version': 'v2', 'canary_backend': 'web', 'canary_service': 'web', 'canary_artifact': '/tmp/x.tar.gz'}
    settings, errors = engine.check_settings(dict(base, canary_shared_paths=['logs/', 'var/uploads']))
    assert not errors and settings['release'] == {'kind': 'tarball', 'shared': ['logs', 'var/uploads']}
    # The release act hands them to the release module as its shared option.
    assert release_call(settings['release'], {'state': 'current'}) == (
        'grayrelease.canary.release', {'state': 'current', 'shared': ['logs', 'var/uploads']})
    settings, errors = engine.check_settings(dict(base, canary_shared_paths='logs, uploads'))   # a survey's text
    assert not errors and settings['release']['shared'] == ['logs', 'uploads']
    settings, errors = engine.check_settings(dict(base))
    assert not errors and settings['release'] == {'kind': 'tarball'}
    settings, errors = engine.check_settings(dict(base, canary_shared_paths=['../etc']))
    assert errors == ["canary_shared_paths: shared path '../etc' must be relative to the release and stay inside it "
                      "(no leading /, no ..), e.g. logs or var/uploads"]
    settings, errors = engine.check_settings(dict(base, canary_release_kind='container', canary_artifact='',
                                                  canary_image='r/app:v2', canary_shared_paths=['logs']))
    assert any('canary_shared_paths' in e and 'tarball only' in e for e in errors), errors


def test_the_release_owner_goes_to_the_tarball_kind_and_a_bad_one_is_named():
    from ansible_collections.grayrelease.canary.plugins.module_utils._drivers import release_call
    base = {'canary_version': 'v2', 'canary_backend': 'web', 'canary_service': 'web', 'canary_artifact': '/tmp/x.tar.gz'}
    settings, errors = engine.check_settings(dict(base, canary_release_owner='demoapp', canary_release_group='1001',
                                                  canary_shared_paths=['logs']))
    assert not errors and settings['release'] == {'kind': 'tarball', 'shared': ['logs'], 'owner': 'demoapp',
                                                  'group': '1001'}
    # Every release act (pre-stage, switch, rollback) hands them to the release module as owner and group.
    assert release_call(settings['release'], {'state': 'staged'}) == (
        'grayrelease.canary.release', {'state': 'staged', 'shared': ['logs'], 'owner': 'demoapp', 'group': '1001'})
    # A survey's numeric answer, and an empty one (the default: the user the tasks run as).
    settings, errors = engine.check_settings(dict(base, canary_release_owner=1001, canary_release_group=''))
    assert not errors and settings['release'] == {'kind': 'tarball', 'owner': '1001'}
    for bad in ('demo app', 'root;id', '-x', True, ['demoapp']):
        settings, errors = engine.check_settings(dict(base, canary_release_owner=bad))
        assert errors == ['canary_release_owner=%r must be a user or group name (e.g. demoapp) or a numeric id'
                          % (bad,)], (bad, errors)
    settings, errors = engine.check_settings(dict(base, canary_release_kind='container', canary_artifact='',
                                                  canary_image='r/app:v2', canary_release_group='demoapp'))
    assert errors == ["canary_release_group='demoapp' applies to canary_release_kind=tarball only (it is container): "
                      "a container runs as its image and unit say"], errors
