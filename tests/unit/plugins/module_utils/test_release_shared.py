# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release module's shared paths (module_utils/_shared.py through _release.apply)
on temporary roots with real tar files and a fake systemd."""
from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import ReleaseError
from ansible_collections.grayrelease.canary.plugins.module_utils._shared import parse_shared

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_release import install_dir, link, make_tar, run, snapshot  # noqa: E402


@pytest.fixture
def root(tmp_path):
    """An empty release root (test_release's helpers take it)."""
    path = tmp_path / 'opt' / 'demoapp'
    path.mkdir(parents=True)
    return path


def tar_with_logs(tmp_path, version):
    """A release whose archive carries its own logs/ and uploads/ (to be replaced by the shared ones)."""
    p = 'demoapp-%s/' % version
    return make_tar(tmp_path / ('demoapp-%s.tar.gz' % version), [
        (p, 'dir'), (p + 'app.py', 'exec', b'print(1)\n'),
        (p + 'logs/', 'dir'), (p + 'logs/old.log', 'file', b'from the archive\n'),
        (p + 'var/', 'dir'), (p + 'var/uploads', 'file', b'a file in the way\n'),
    ])


def test_a_new_release_appears_with_its_links_and_the_shared_directories_made(root, tmp_path):
    src = tar_with_logs(tmp_path, 'v2')
    res = run(root, 'current', version='v2', src=src, shared=['logs', 'var/uploads'])
    assert res['changed'] and res['installed_now'] and res['current'] == 'v2'
    assert res['shared_linked'] == ['logs', 'var/uploads']
    assert 'linked shared logs, var/uploads' in res['msg'], res['msg']
    release = root / 'releases' / 'v2'
    for path in ('logs', 'var/uploads'):
        assert os.readlink(str(release / path)) == str(root / 'shared' / path)
        assert (root / 'shared' / path).is_dir() and not (root / 'shared' / path).is_symlink()
    # The archive's own copy is gone, not merged into the shared directory.
    assert os.listdir(str(root / 'shared' / 'logs')) == []
    assert (release / 'app.py').is_file()
    # Nothing left in the unpack area.
    assert os.listdir(str(root / '.staging')) == []


def test_what_is_in_the_shared_directory_stays_from_release_to_release(root, tmp_path):
    run(root, 'current', version='v1', src=tar_with_logs(tmp_path, 'v1'), shared=['logs'])
    (root / 'current' / 'logs' / 'app.log').write_text('written by v1\n')
    res = run(root, 'current', version='v2', src=tar_with_logs(tmp_path, 'v2'), shared=['logs'])
    assert res['current'] == 'v2' and res['switched_from'] == 'v1'
    assert (root / 'current' / 'logs' / 'app.log').read_text() == 'written by v1\n'
    assert os.readlink(str(root / 'releases' / 'v1' / 'logs')) == os.readlink(str(root / 'releases' / 'v2' / 'logs'))


def test_an_installed_release_gets_its_links_before_current_moves_and_the_running_one_never(root, tmp_path):
    install_dir(root, 'v1')
    v2 = install_dir(root, 'v2')
    (v2 / 'logs').mkdir()
    link(root, 'current', 'releases/v1')
    # Pre-staging an installed release links it (current still v1, untouched).
    res = run(root, 'staged', version='v2', shared=['logs'])
    assert res['changed'] and res['shared_linked'] == ['logs'] and res['current'] == 'v1'
    assert os.path.islink(str(v2 / 'logs'))
    assert not os.path.lexists(str(root / 'releases' / 'v1' / 'logs'))
    # The same again changes nothing.
    again = run(root, 'current', version='v1', shared=['logs'])
    assert again['changed'] is False and again['shared_linked'] == []
    assert not os.path.lexists(str(root / 'releases' / 'v1' / 'logs'))   # current: never modified
    # Switching to v1 -> v2 is then only the switch.
    res = run(root, 'current', version='v2', shared=['logs'])
    assert res['switched'] and res['shared_linked'] == []


def test_check_mode_reports_the_links_and_changes_nothing(root, tmp_path):
    install_dir(root, 'v1')
    install_dir(root, 'v2')
    link(root, 'current', 'releases/v1')
    before = snapshot(root)
    res = run(root, 'current', check=True, version='v2', shared=['logs', 'data'])
    assert res['changed'] and res['shared_linked'] == ['logs', 'data']
    assert 'would link shared logs, data' in res['msg'], res['msg']
    assert snapshot(root) == before
    fresh = run(root, 'current', check=True, version='v3', src=tar_with_logs(tmp_path, 'v3'), shared=['logs'])
    assert fresh['shared_linked'] == ['logs'] and 'would link shared logs' in fresh['msg']
    assert snapshot(root) == before


@pytest.mark.parametrize('value, named', [
    (['/var/log/app'], "'/var/log/app'"),
    (['../outside'], "'../outside'"),
    (['logs/../../x'], "'logs/../../x'"),
    ([''], "''"),
    (['.'], "'.'"),
    (['logs', 'logs/app'], "'logs' and 'logs/app' overlap"),
    (['logs', './logs/'], "'logs' and 'logs' overlap"),
    (['.grayrelease-release'], "'.grayrelease-release'"),
    ('logs', "shared='logs' must be a list"),
    ([3], '3'),
])
def test_a_bad_shared_path_is_named_and_nothing_changes(root, tmp_path, value, named):
    install_dir(root, 'v1')
    link(root, 'current', 'releases/v1')
    src = tar_with_logs(tmp_path, 'v2')
    before = snapshot(root)
    with pytest.raises(ReleaseError) as err:
        run(root, 'current', version='v2', src=src, shared=value)
    assert named in err.value.msg, err.value.msg
    assert snapshot(root) == before


def test_paths_are_normalized():
    assert parse_shared(['logs/', './var//uploads', ' tmp ']) == ['logs', 'var/uploads', 'tmp']
    assert parse_shared(None) == [] and parse_shared([]) == []


def test_a_symlink_below_shared_is_refused_not_followed(root, tmp_path):
    """An application user who can write ROOT/shared plants a link there: root must not mkdir through it."""
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (root / 'shared').mkdir()
    os.symlink(str(elsewhere), str(root / 'shared' / 'var'))
    with pytest.raises(ReleaseError) as err:
        run(root, 'current', version='v2', src=tar_with_logs(tmp_path, 'v2'), shared=['var/uploads'])
    assert str(root / 'shared' / 'var/uploads') in err.value.msg and 'symlink' in err.value.msg
    assert os.listdir(str(elsewhere)) == []
    # The failed install left no release behind.
    assert not os.path.lexists(str(root / 'releases' / 'v2'))


def test_shared_itself_may_be_the_operators_link_to_another_disk(root, tmp_path):
    disk = tmp_path / 'data' / 'demoapp-shared'
    disk.mkdir(parents=True)
    os.symlink(str(disk), str(root / 'shared'))
    run(root, 'current', version='v2', src=tar_with_logs(tmp_path, 'v2'), shared=['logs'])
    assert (disk / 'logs').is_dir()
    assert os.readlink(str(root / 'releases' / 'v2' / 'logs')) == str(root / 'shared' / 'logs')


def test_a_release_whose_parent_of_a_shared_path_is_a_symlink_is_refused(root, tmp_path):
    v2 = install_dir(root, 'v2')
    install_dir(root, 'v1')
    link(root, 'current', 'releases/v1')
    os.symlink('/etc', str(v2 / 'var'))
    with pytest.raises(ReleaseError) as err:
        run(root, 'current', version='v2', shared=['var/uploads'])
    assert str(v2 / 'var') in err.value.msg
    assert os.readlink(str(root / 'current')) == 'releases/v1'
