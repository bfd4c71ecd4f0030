# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of grayrelease.canary.release on temporary roots, real tar files, a fake systemd."""
from __future__ import annotations

import io
import json
import os
import stat
import tarfile

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _artifact, _release
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import (
    ReleaseError, UnsafeArchive, file_sha256, parse_checksum)
from ansible_collections.grayrelease.canary.plugins.module_utils._release import apply
from ansible_collections.grayrelease.canary.plugins.module_utils._systemd import bring_up, url_ready

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# ------------------------------------------------------------------ helpers

def make_tar(path, entries, compression='gz'):
    """entries: (name, kind, data) with kind file/exec/dir/sym/link/fifo/chr or a TarInfo tweak dict."""
    with tarfile.open(str(path), 'w:' + compression) as tar:
        for entry in entries:
            name, kind = entry[0], entry[1]
            extra = entry[2] if len(entry) > 2 else None
            info = tarfile.TarInfo(name)
            info.mtime = 1_704_067_200
            info.uid, info.gid, info.uname, info.gname = 4242, 4243, 'builder', 'builders'
            payload = None
            if kind in ('file', 'exec', 'suid'):
                payload = (extra if isinstance(extra, bytes) else b'data of ' + name.encode())
                info.size = len(payload)
                info.mode = {'file': 0o664, 'exec': 0o750, 'suid': 0o4755}[kind]
            elif kind == 'dir':
                info.type, info.mode = tarfile.DIRTYPE, 0o3777
            elif kind == 'sym':
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == 'link':
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == 'fifo':
                info.type = tarfile.FIFOTYPE
            elif kind == 'chr':
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return str(path)


def app_tar(tmp_path, version='v2', top=True, name=None):
    prefix = 'demoapp-%s/' % version if top else ''
    entries = ([(prefix, 'dir')] if top else []) + [
        (prefix + 'app.py', 'exec', b'print("%s")\n' % version.encode()),
        (prefix + 'release.json', 'file', b'{"version": "%s"}\n' % version.encode()),
        (prefix + 'lib/', 'dir'),
        (prefix + 'lib/util.py', 'file'),
    ]
    return make_tar(tmp_path / (name or 'demoapp-%s.tar.gz' % version), entries)


class FakeSystemd(object):
    """Records systemctl/journalctl calls; answers `show` with the configured state."""

    def __init__(self, active='active', sub='running', log=None, fail=()):
        self.calls = []
        self.active, self.sub = active, sub
        self.log = log if log is not None else ['line %d' % i for i in range(1, 21)]
        self.fail = fail

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == 'journalctl':
            count = int(argv[argv.index('-n') + 1])
            return 0, '\n'.join(self.log[-count:]) + '\n', ''
        if argv[1] == 'show':
            return 0, 'ActiveState=%s\nSubState=%s\n' % (self.active, self.sub), ''
        if argv[1] in self.fail:
            return 1, '', 'Job for demoapp.service failed.'
        return 0, '', ''

    def actions(self):
        return [c[1:] for c in self.calls if c[0] == 'systemctl' and c[1] != 'show']


class Sleeper(object):
    def __init__(self):
        self.slept = []

    def __call__(self, seconds):
        self.slept.append(seconds)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / 'opt' / 'demoapp'
    path.mkdir(parents=True)
    return path


def run(root, state='info', check=False, systemd=None, sleeper=None, **params):
    params = dict(params, root=str(root), state=state)
    params.setdefault('remote_src', True)
    return apply(params, check_mode=check, run=systemd or FakeSystemd(), clock=lambda: NOW,
                 sleep=sleeper or Sleeper())


def install_dir(root, version, content=True, marker=None):
    path = root / 'releases' / version
    path.mkdir(parents=True)
    if content:
        (path / 'app.py').write_text('print(%r)\n' % version)
    if marker is not None:
        (path / '.grayrelease-release').write_text(json.dumps(marker))
    return path


def link(root, name, target):
    os.symlink(target, str(root / name))


def tree(path):
    """Sorted relative paths under path (files, dirs, links)."""
    found = []
    for base, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(base, name), str(path)))
    return sorted(found)


def snapshot(root):
    out = {}
    for rel in tree(root):
        full = os.path.join(str(root), rel)
        st = os.lstat(full)
        out[rel] = (stat.S_IFMT(st.st_mode), os.readlink(full) if os.path.islink(full) else None,
                    st.st_mtime)
    return out


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize('version', ['', '../x', '-v1', '.hidden', 'v 1', 'v1/x', 'a;b'])
def test_bad_version_fails_naming_it(root, version):
    state = 'staged' if version else 'current'
    with pytest.raises(ReleaseError) as err:
        run(root, state, version=version)
    assert (repr(version) in err.value.msg) if version else 'version is required' in err.value.msg


def test_relative_root_and_bad_options(root):
    with pytest.raises(ReleaseError, match='absolute'):
        apply({'root': 'opt/demoapp'})
    with pytest.raises(ReleaseError, match='keep must be at least 1'):
        run(root, 'pruned', keep=0)
    with pytest.raises(ReleaseError, match='keep is required'):
        run(root, 'pruned')
    with pytest.raises(ReleaseError, match='not a valid systemd unit'):
        run(root, 'current', version='v1', service='-x')
    with pytest.raises(ReleaseError, match="sha256"):
        run(root, 'staged', version='v1', checksum='md5:abc')
    with pytest.raises(ReleaseError, match="state must be one of info, staged, current, rollback, absent, pruned"):
        run(root, 'list')


def test_parse_checksum_forms():
    hexsum = 'AB' * 32
    assert parse_checksum('sha256:' + hexsum) == 'ab' * 32
    assert parse_checksum(hexsum) == 'ab' * 32
    with pytest.raises(ReleaseError):
        parse_checksum('sha256:' + 'ab' * 31)


# ------------------------------------------------------------------ staged

def test_staged_installs_strips_top_dir_and_writes_marker(root, tmp_path):
    src = app_tar(tmp_path)
    res = run(root, 'staged', version='v2', src=src)
    rel = root / 'releases' / 'v2'
    assert res['changed'] and res['installed_now'] and res['staged']
    assert not res['switched'] and res['current'] == '' and res['installed'] == ['v2']
    assert tree(rel) == ['.grayrelease-release', 'app.py', 'lib', 'lib/util.py', 'release.json']
    marker = json.loads((rel / '.grayrelease-release').read_text())
    assert marker == {'version': 'v2', 'artifact': 'demoapp-v2.tar.gz', 'sha256': file_sha256(src),
                      'installed': '2026-01-01T00:00:00Z'}
    assert (rel / 'app.py').read_text() == 'print("v2")\n'
    # staging emptied, current untouched, nothing asked of systemd
    assert os.listdir(str(root / '.staging')) == []
    assert not os.path.lexists(str(root / 'current'))
    assert 'installed v2 from demoapp-v2.tar.gz' in res['msg']


def test_staged_with_require_current_leaves_a_host_off_the_layout_untouched(root, tmp_path):
    src = app_tar(tmp_path)
    # A hand-installed service where ROOT would be: not adopted, nothing written.
    (root / 'app.py').write_text('print("by hand")\n')
    before = snapshot(root)
    res = run(root, 'staged', version='v2', src=src, require_current=True)
    assert not res['changed'] and not res['installed_now'] and not res['staged']
    assert res['current'] == '' and res['installed'] == []
    assert res['msg'] == 'no current release under %s: v2 not staged (require_current)' % root
    assert snapshot(root) == before
    # On the layout (current is a link) it stages as usual.
    install_dir(root, 'v1')
    link(root, 'current', 'releases/v1')
    res = run(root, 'staged', version='v2', src=src, require_current=True)
    assert res['changed'] and res['installed_now'] and res['staged'] and res['current'] == 'v1'


def test_staged_without_top_dir_keeps_layout(root, tmp_path):
    src = app_tar(tmp_path, top=False)
    run(root, 'staged', version='v2', src=src)
    assert tree(root / 'releases' / 'v2') == ['.grayrelease-release', 'app.py', 'lib', 'lib/util.py',
                                              'release.json']


def test_single_top_level_file_is_not_stripped(root, tmp_path):
    src = make_tar(tmp_path / 'one.tar.gz', [('app.py', 'file')])
    run(root, 'staged', version='v2', src=src)
    assert tree(root / 'releases' / 'v2') == ['.grayrelease-release', 'app.py']


def test_implicit_top_dir_is_stripped(root, tmp_path):
    src = make_tar(tmp_path / 'imp.tar', [('top/app.py', 'file'), ('top/x/y.txt', 'file')], compression='')
    run(root, 'staged', version='v2', src=src)
    assert tree(root / 'releases' / 'v2') == ['.grayrelease-release', 'app.py', 'x', 'x/y.txt']


def test_modes_and_owner_normalized_setuid_dropped(root, tmp_path):
    src = make_tar(tmp_path / 'm.tar.gz', [
        ('top/', 'dir'), ('top/run.sh', 'suid'), ('top/bin/', 'dir'), ('top/bin/tool', 'exec'),
        ('top/conf.ini', 'file'), ('top/link', 'sym', 'conf.ini'), ('top/hard', 'link', 'top/conf.ini')])
    run(root, 'staged', version='v2', src=src)
    rel = root / 'releases' / 'v2'

    def mode(name):
        return stat.S_IMODE(os.lstat(str(rel / name)).st_mode)
    assert mode('.') == 0o755 and mode('bin') == 0o755
    assert mode('run.sh') == 0o755  # setuid dropped, exec kept
    assert mode('bin/tool') == 0o755
    assert mode('conf.ini') == 0o644 and mode('hard') == 0o644
    assert mode('.grayrelease-release') == 0o644
    assert os.readlink(str(rel / 'link')) == 'conf.ini'
    assert (rel / 'hard').read_bytes() == (rel / 'conf.ini').read_bytes()
    for name in tree(rel) + ['.']:
        st = os.lstat(str(rel / name))
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), name  # never the archive's 4242
    # file mtimes come from the archive, the release dir itself is fresh
    assert os.stat(str(rel / 'conf.ini')).st_mtime == 1_704_067_200


def test_owner_and_group_options(root, tmp_path, monkeypatch):
    src = app_tar(tmp_path)
    calls = []
    monkeypatch.setattr(_release.os, 'fchown', lambda fd, u, g: calls.append((u, g)))
    monkeypatch.setattr(_release.os, 'lchown', lambda p, u, g: calls.append((u, g)))
    monkeypatch.setattr(_release.os, 'chown', lambda p, u, g: calls.append((u, g)))
    run(root, 'staged', version='v2', src=src, owner='1234', group='2345')
    assert calls and set(calls) == {(1234, 2345)}
    with pytest.raises(ReleaseError, match="no such user"):
        run(root, 'staged', version='v3', src=app_tar(tmp_path, 'v3'), owner='no-such-user-xyz')


def test_staged_again_is_no_change_and_checks_the_sum(root, tmp_path):
    src = app_tar(tmp_path)
    run(root, 'staged', version='v2', src=src)
    before = snapshot(root)
    res = run(root, 'staged', version='v2', src=src)
    assert not res['changed'] and not res['installed_now'] and res['staged']
    assert snapshot(root) == before
    # same name, other content
    (tmp_path / 'other').mkdir()
    other = make_tar(tmp_path / 'other' / 'demoapp-v2.tar.gz', [('x/app.py', 'file', b'other')])
    with pytest.raises(ReleaseError) as err:
        run(root, 'staged', version='v2', src=other)
    assert 'was installed from an artifact with sha256 %s' % file_sha256(src) in err.value.msg
    assert file_sha256(other) in err.value.msg and 'verify_checksum' in err.value.msg
    assert snapshot(root) == before
    res = run(root, 'staged', version='v2', src=other, verify_checksum=False)
    assert not res['changed']
    # the controller path given (the action plugin's first pass) compares its checksum
    with pytest.raises(ReleaseError, match='was installed from an artifact'):
        run(root, 'staged', version='v2', src='/controller/demoapp-v2.tar.gz', remote_src=False,
            checksum=file_sha256(other))
    res = run(root, 'staged', version='v2', src='/controller/demoapp-v2.tar.gz', remote_src=False,
              checksum=file_sha256(src))
    assert not res['changed']


def test_checksum_verified_before_unpacking(root, tmp_path):
    src = app_tar(tmp_path)
    wrong = 'sha256:' + '0' * 64
    with pytest.raises(ReleaseError) as err:
        run(root, 'staged', version='v2', src=src, checksum=wrong)
    assert file_sha256(src) in err.value.msg and '0' * 64 in err.value.msg
    assert tree(root) == []
    res = run(root, 'staged', version='v2', src=src, checksum=file_sha256(src).upper())
    assert res['installed_now']


def test_controller_src_not_installed_asks_for_the_file(root):
    with pytest.raises(ReleaseError) as err:
        run(root, 'current', version='v2', src='/ctl/demoapp-v2.tar.gz', remote_src=False, service='demoapp')
    assert err.value.result == {'needs_src': True}
    assert tree(root) == []
    # check mode reports the install without the file
    res = run(root, 'current', version='v2', src='/ctl/demoapp-v2.tar.gz', remote_src=False, check=True)
    assert res['changed'] and res['installed_now'] and res['switched'] and res['current'] == 'v2'
    assert tree(root) == []


def test_not_installed_without_src(root):
    with pytest.raises(ReleaseError, match=r'release v7 is not installed \(.*releases/v7 is missing\) and src is not set'):
        run(root, 'staged', version='v7')


def test_unmarked_nonempty_dir_counts_as_installed(root, tmp_path):
    install_dir(root, 'v1')
    res = run(root, 'staged', version='v1', src=app_tar(tmp_path, 'v1'))
    assert not res['changed'] and res['staged']


def test_empty_dir_or_file_in_the_way_fails_saying_what_to_do(root, tmp_path):
    install_dir(root, 'v2', content=False)
    with pytest.raises(ReleaseError, match=r'exists but is empty.*Remove it'):
        run(root, 'staged', version='v2', src=app_tar(tmp_path))
    (root / 'releases' / 'v3').write_text('oops')
    with pytest.raises(ReleaseError, match=r'exists but is not a directory.*Remove it'):
        run(root, 'staged', version='v3', src=app_tar(tmp_path, 'v3'))


def test_interrupted_install_leftovers_are_replaced(root, tmp_path):
    stale = root / '.staging' / 'v2' / 'content'
    stale.mkdir(parents=True)
    (stale / 'half-written.py').write_text('x')
    run(root, 'staged', version='v2', src=app_tar(tmp_path))
    assert 'half-written.py' not in tree(root / 'releases' / 'v2')
    assert os.listdir(str(root / '.staging')) == []


def test_empty_archive_fails(root, tmp_path):
    with pytest.raises(ReleaseError, match='is empty'):
        run(root, 'staged', version='v2', src=make_tar(tmp_path / 'e.tar.gz', []))
    with pytest.raises(ReleaseError, match='is empty'):
        run(root, 'staged', version='v2', src=make_tar(tmp_path / 'd.tar.gz', [('top/', 'dir')]))
    assert not os.path.lexists(str(root / 'releases' / 'v2'))


def test_not_a_tar_fails(root, tmp_path):
    bad = tmp_path / 'bad.tar.gz'
    bad.write_bytes(b'not a tar at all')
    with pytest.raises(ReleaseError, match='not a readable tar archive'):
        run(root, 'staged', version='v2', src=str(bad))
    assert tree(root) == []


@pytest.mark.parametrize('entries, member', [
    ([('top/a', 'file'), ('/etc/passwd', 'file')], '/etc/passwd'),
    ([('top/a', 'file'), ('top/../../evil', 'file')], 'top/../../evil'),
    ([('top/a', 'file'), ('../evil', 'file')], '../evil'),
    ([('top/a', 'file'), ('top/esc', 'sym', '../../etc')], 'top/esc'),
    ([('top/a', 'file'), ('top/abs', 'sym', '/etc/passwd')], 'top/abs'),
    ([('a', 'file'), ('deep/x', 'sym', '../../x')], 'deep/x'),
    ([('top/a', 'file'), ('top/h', 'link', '/etc/shadow')], 'top/h'),
    ([('top/a', 'file'), ('top/h', 'link', 'top/../../x')], 'top/h'),
    ([('top/a', 'file'), ('top/h', 'link', 'top/missing')], 'top/h'),
    ([('top/a', 'file'), ('top/a', 'dir'), ('top/h', 'link', 'top/a')], 'top/h'),
    ([('top/d/', 'dir'), ('top/h', 'link', 'top/d')], 'top/h'),
    ([('top/a', 'file'), ('top/self', 'sym', '.'), ('top/self/b', 'file')], 'top/self/b'),
    ([('top/a', 'file'), ('top/pipe', 'fifo')], 'top/pipe'),
    ([('top/a', 'file'), ('top/null', 'chr')], 'top/null'),
    # chains: each link looks inside on its own, followed through the others it leads out
    ([('top/d/', 'dir'), ('top/d/b', 'sym', '..'), ('top/d/a', 'sym', 'b/..')], 'top/d/a'),
    ([('top/d/', 'dir'), ('top/d/a', 'sym', 'b/..'), ('top/d/b', 'sym', '..')], 'top/d/a'),
    ([('top/x/y/', 'dir'), ('top/x/y/up', 'sym', '../..'), ('top/x/y/esc', 'sym', 'up/../z')], 'top/x/y/esc'),
    ([('top/a', 'file'), ('top/l1', 'sym', 'l2'), ('top/l2', 'sym', 'l1')], 'top/l1'),
])
def test_unsafe_members_refused_nothing_left(root, tmp_path, entries, member):
    src = make_tar(tmp_path / 'evil.tar.gz', entries)
    with pytest.raises(UnsafeArchive) as err:
        run(root, 'current', version='v2', src=src, service='demoapp')
    assert repr(member) in err.value.msg
    assert tree(root) == []
    assert not os.path.exists(str(tmp_path / 'evil')) and not os.path.exists(str(tmp_path.parent / 'evil'))


def test_unpack_errors_leave_nothing(root, tmp_path, monkeypatch):
    def no_space(*_args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(_release.shutil, 'copyfileobj', no_space)
    with pytest.raises(ReleaseError, match='cannot unpack demoapp-v2.tar.gz into .*No space left'):
        run(root, 'staged', version='v2', src=app_tar(tmp_path))
    # not even the directories the failed install created
    assert tree(root) == []


def test_inside_symlinks_are_fine(root, tmp_path):
    src = make_tar(tmp_path / 'ok.tar.gz', [('top/lib/', 'dir'), ('top/lib/a.py', 'file'),
                                            ('top/bin/', 'dir'), ('top/bin/a', 'sym', '../lib/a.py')])
    run(root, 'staged', version='v2', src=src)
    assert (root / 'releases' / 'v2' / 'bin' / 'a').read_bytes() == b'data of top/lib/a.py'


def test_check_mode_staged_validates_and_changes_nothing(root, tmp_path):
    res = run(root, 'staged', version='v2', src=app_tar(tmp_path), check=True)
    assert res['changed'] and res['installed_now'] and res['staged'] and res['installed'] == ['v2']
    assert tree(root) == []
    with pytest.raises(UnsafeArchive):
        run(root, 'staged', version='v2', check=True,
            src=make_tar(tmp_path / 'e.tar.gz', [('a', 'file'), ('../b', 'file')]))


# ------------------------------------------------------------------ current

def test_first_switch_and_restart(root, tmp_path):
    systemd, sleeper = FakeSystemd(), Sleeper()
    res = run(root, 'current', version='v2', src=app_tar(tmp_path), service='demoapp', daemon_reload=True,
              systemd=systemd, sleeper=sleeper)
    assert os.readlink(str(root / 'current')) == 'releases/v2'
    assert not os.path.lexists(str(root / 'previous'))
    assert res['switched'] and res['switched_from'] == '' and res['current'] == 'v2' and res['previous'] == ''
    assert systemd.actions() == [['daemon-reload'], ['reset-failed', 'demoapp'], ['restart', 'demoapp']]
    assert sleeper.slept == [2]
    assert res['service'] == {'active_state': 'active', 'sub_state': 'running'}


def test_switch_writes_previous_verbatim_and_forgets_rollback(root):
    install_dir(root, 'v1')
    install_dir(root, 'v2')
    link(root, 'current', '/somewhere/else/v1')  # set up by other means
    (root / '.rollback.json').write_text('{"from": "v2", "to": "v1"}')
    res = run(root, 'current', version='v2', service='demoapp')
    assert os.readlink(str(root / 'previous')) == '/somewhere/else/v1'
    assert os.readlink(str(root / 'current')) == 'releases/v2'
    assert not os.path.lexists(str(root / '.rollback.json'))
    assert not os.path.lexists(str(root / '.current.tmp')) and not os.path.lexists(str(root / '.previous.tmp'))
    assert res['switched_from'] == 'v1' and res['previous'] == 'v1'


def test_switch_is_a_rename_never_a_missing_current(root, monkeypatch):
    install_dir(root, 'v1')
    install_dir(root, 'v2')
    link(root, 'current', 'releases/v1')
    seen = []
    real_rename = os.rename

    def watching_rename(a, b):
        seen.append((os.path.basename(a), os.path.basename(b), os.path.lexists(str(root / 'current'))))
        return real_rename(a, b)
    monkeypatch.setattr(_release.os, 'rename', watching_rename)
    monkeypatch.setattr(_release.os, 'unlink', lambda p: pytest.fail('unlinked %s' % p)
                        if p.endswith('current') else os.remove(p))
    run(root, 'current', version='v2')
    assert seen == [('.previous.tmp', 'previous', True), ('.current.tmp', 'current', True)]


def test_same_version_again_changes_nothing_and_restarts_nothing(root, tmp_path):
    src = app_tar(tmp_path)
    install_dir(root, 'v1')
    link(root, 'current', 'releases/v1')
    run(root, 'current', version='v2', src=src, service='demoapp', keep=5)
    before = snapshot(root)
    systemd = FakeSystemd()
    res = run(root, 'current', version='v2', src=src, service='demoapp', keep=5, systemd=systemd)
    assert not res['changed'] and not res['switched'] and res['switched_from'] == ''
    assert res['current'] == 'v2' and res['previous'] == 'v1'
    assert systemd.actions() == []
    assert snapshot(root) == before


def test_restart_false_and_no_service(root):
    install_dir(root, 'v2')
    systemd = FakeSystemd()
    res = run(root, 'current', version='v2', service='demoapp', restart=False, systemd=systemd)
    assert res['switched'] and systemd.actions() == []
    res = run(root, 'current', version='v2', systemd=systemd)
    assert res['service'] == {}


def test_current_not_a_symlink_fails_before_anything(root, tmp_path):
    (root / 'current').mkdir()
    with pytest.raises(ReleaseError, match='current exists but is not a symlink'):
        run(root, 'current', version='v2', src=app_tar(tmp_path))
    assert tree(root) == ['current']


def test_settle_failure_names_state_and_last_log_lines(root):
    install_dir(root, 'v2')
    systemd = FakeSystemd(active='failed', sub='failed')
    sleeper = Sleeper()
    with pytest.raises(ReleaseError) as err:
        run(root, 'current', version='v2', service='demoapp', settle=3, systemd=systemd, sleeper=sleeper)
    msg = err.value.msg
    assert msg.startswith('demoapp did not stay up after the restart (ActiveState=failed, SubState=failed); '
                          'its last log lines: ')
    assert msg.endswith(' | '.join('line %d' % i for i in range(13, 21)))
    assert 'line 12' not in msg
    assert ['journalctl', '-u', 'demoapp', '-n', '8', '--no-pager', '-o', 'cat'] in systemd.calls
    assert sleeper.slept == [3]
    assert err.value.result['service'] == {'active_state': 'failed', 'sub_state': 'failed'}
    # the switch itself happened (the rollout rolls the host back)
    assert os.readlink(str(root / 'current')) == 'releases/v2'


def test_settle_zero_does_not_watch(root):
    install_dir(root, 'v2')
    systemd, sleeper = FakeSystemd(active='activating', sub='start'), Sleeper()
    res = run(root, 'current', version='v2', service='demoapp', settle=0, systemd=systemd, sleeper=sleeper)
    assert sleeper.slept == [] and res['service']['active_state'] == 'activating'


def test_restart_command_failure(root):
    install_dir(root, 'v2')
    with pytest.raises(ReleaseError, match=r'systemctl restart demoapp failed \(rc 1\).*last log lines: .*line 20'):
        run(root, 'current', version='v2', service='demoapp', systemd=FakeSystemd(fail=('restart',)))


def test_check_mode_current_changes_nothing(root, tmp_path):
    install_dir(root, 'v1')
    link(root, 'current', 'releases/v1')
    before = snapshot(root)
    systemd = FakeSystemd()
    res = run(root, 'current', version='v2', src=app_tar(tmp_path), service='demoapp', keep=1,
              check=True, systemd=systemd)
    assert res['changed'] and res['switched'] and res['installed_now'] and res['switched_from'] == 'v1'
    assert res['current'] == 'v2' and res['previous'] == 'v1' and res['pruned'] == []
    assert systemd.actions() == []
    assert snapshot(root) == before
    assert res['msg'].startswith('would install v2')


def test_diff_mode(root):
    install_dir(root, 'v1')
    install_dir(root, 'v2')
    link(root, 'current', 'releases/v1')
    res = apply({'root': str(root), 'state': 'current', 'version': 'v2'}, diff=True, run=FakeSystemd())
    assert res['diff']['before']['current'] == 'v1' and res['diff']['after']['current'] == 'v2'


# ------------------------------------------------------------------ prune

def _aged(root, versions):
    for age, version in enumerate(versions):
        path = install_dir(root, version)
        os.utime(str(path), (NOW - 1000 + age, NOW - 1000 + age))


def test_prune_protects_current_previous_new_and_from(root):
    _aged(root, ['v1', 'v2', 'v3', 'v4', 'v5'])
    link(root, 'current', 'releases/v5')
    link(root, 'previous', 'releases/v1')
    res = run(root, 'current', version='v3', keep=2)
    # after the switch: current v3, previous v5 (switched from); v1 was previous before
    assert res['current'] == 'v3' and res['previous'] == 'v5'
    assert res['pruned'] == ['v1', 'v2', 'v4']
    assert sorted(os.listdir(str(root / 'releases'))) == ['v3', 'v5']


def test_prune_never_goes_below_protected(root):
    _aged(root, ['v1', 'v2', 'v3'])
    link(root, 'current', 'releases/v3')
    link(root, 'previous', 'releases/v1')
    res = run(root, 'pruned', keep=1)
    assert res['pruned'] == ['v2'] and res['changed']
    assert sorted(os.listdir(str(root / 'releases'))) == ['v1', 'v3']
    res = run(root, 'pruned', keep=1)
    assert res['pruned'] == [] and not res['changed']


def test_prune_oldest_first_and_check_mode(root):
    _aged(root, ['b', 'a', 'c', 'd'])  # mtime order b < a < c < d
    link(root, 'current', 'releases/d')
    res = run(root, 'pruned', keep=2, check=True)
    assert res['pruned'] == ['b', 'a'] and res['installed'] == ['c', 'd']
    assert sorted(os.listdir(str(root / 'releases'))) == ['a', 'b', 'c', 'd']
    res = run(root, 'pruned', keep=3)
    assert res['pruned'] == ['b']
    assert not os.listdir(str(root / '.staging'))


# ------------------------------------------------------------------ rollback

def _two_releases(root):
    install_dir(root, 'v1')
    install_dir(root, 'v2')
    link(root, 'current', 'releases/v2')
    link(root, 'previous', 'releases/v1')


def test_rollback_to_previous_records_it_and_restarts(root):
    _two_releases(root)
    systemd = FakeSystemd()
    res = run(root, 'rollback', service='demoapp', daemon_reload=True, systemd=systemd)
    assert res['switched'] and res['switched_from'] == 'v2' and res['current'] == 'v1' and res['previous'] == 'v2'
    assert os.readlink(str(root / 'current')) == 'releases/v1'
    assert os.readlink(str(root / 'previous')) == 'releases/v2'
    record = json.loads((root / '.rollback.json').read_text())
    assert record == {'from': 'v2', 'to': 'v1', 'at': '2026-01-01T00:00:00Z'}
    assert ['restart', 'demoapp'] in systemd.actions()
    assert sorted(os.listdir(str(root / 'releases'))) == ['v1', 'v2']  # kept for inspection


def test_rollback_again_is_idempotent_and_only_starts(root):
    _two_releases(root)
    run(root, 'rollback', service='demoapp')
    before = snapshot(root)
    systemd = FakeSystemd()
    res = run(root, 'rollback', service='demoapp', systemd=systemd)
    assert not res['switched'] and not res['changed'] and res['current'] == 'v1'
    assert systemd.actions() == [] and snapshot(root) == before
    # a stopped service is started
    systemd = FakeSystemd(active='inactive', sub='dead')
    with pytest.raises(ReleaseError, match='did not stay up after the start'):
        run(root, 'rollback', service='demoapp', systemd=systemd)
    assert systemd.actions() == [['reset-failed', 'demoapp'], ['start', 'demoapp']]


def test_rollback_start_in_check_mode(root):
    _two_releases(root)
    systemd = FakeSystemd(active='inactive', sub='dead')
    res = run(root, 'rollback', version='v2', service='demoapp', systemd=systemd, check=True)
    assert res['changed'] and not res['switched'] and systemd.actions() == []


def test_rollback_explicit_version_and_release_clears_record(root):
    _two_releases(root)
    install_dir(root, 'v0')
    res = run(root, 'rollback', version='v0')
    assert res['current'] == 'v0' and res['previous'] == 'v2'
    # a new release switch forgets the rollback: the next rollback goes to previous again
    run(root, 'current', version='v1')
    assert not os.path.lexists(str(root / '.rollback.json'))
    res = run(root, 'rollback')
    assert res['current'] == 'v0'


def test_rollback_without_previous_fails_explaining(root):
    with pytest.raises(ReleaseError) as err:
        run(root, 'rollback')
    assert 'no previous release recorded' in err.value.msg
    assert '%s/previous does not exist' % root in err.value.msg
    assert tree(root) == []


def test_rollback_to_missing_dir_fails(root):
    _two_releases(root)
    with pytest.raises(ReleaseError, match=r'cannot roll back to v9: .*releases/v9 is missing \(given as version'):
        run(root, 'rollback', version='v9')
    (root / 'releases' / 'v1' / 'app.py').unlink()
    (root / 'releases' / 'v1').rmdir()
    with pytest.raises(ReleaseError, match=r'releases/v1 is missing \(recorded in .*previous; current is v2\)'):
        run(root, 'rollback')


def test_rollback_check_mode(root):
    _two_releases(root)
    before = snapshot(root)
    res = run(root, 'rollback', service='demoapp', check=True)
    assert res['switched'] and res['current'] == 'v1' and snapshot(root) == before


# ------------------------------------------------------------------ absent / info

def test_absent_refuses_current_and_previous(root):
    _two_releases(root)
    for version, which in (('v2', 'current'), ('v1', 'previous')):
        res = run(root, 'absent', version=version)
        assert not res['changed'] and 'is the %s release; not removed' % which in res['msg']
    assert sorted(os.listdir(str(root / 'releases'))) == ['v1', 'v2']


def test_absent_removes_a_staged_release_and_leftovers(root, tmp_path):
    _two_releases(root)
    run(root, 'staged', version='v3', src=app_tar(tmp_path, 'v3'))
    (root / '.staging' / 'v3').mkdir()
    res = run(root, 'absent', version='v3', check=True)
    assert res['changed'] and os.path.isdir(str(root / 'releases' / 'v3'))
    res = run(root, 'absent', version='v3')
    assert res['changed'] and res['installed'] == ['v1', 'v2'] and not res['staged']
    assert sorted(os.listdir(str(root / 'releases'))) == ['v1', 'v2']
    assert os.listdir(str(root / '.staging')) == []
    res = run(root, 'absent', version='v3')
    assert not res['changed'] and 'not installed' in res['msg']


def test_info_is_read_only(root):
    _two_releases(root)
    before = snapshot(root)
    res = run(root, version='v1', service='demoapp')
    assert res == dict(res, changed=False, current='v2', previous='v1', installed=['v1', 'v2'], staged=True,
                       switched=False, switched_from='', installed_now=False, pruned=[],
                       service={'active_state': 'active', 'sub_state': 'running'})
    assert snapshot(root) == before
    res = run(root, version='v9')
    assert res['staged'] is False
    assert run(root / 'missing')['installed'] == []


class Clock(object):
    """Time that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_settle_with_ready_ends_as_soon_as_the_service_answers():
    clock = Clock()
    answers = iter([False, False, True])
    state = bring_up(FakeSystemd(), clock.sleep, 'demoapp', 'restart', 2, False,
                     ready=lambda: next(answers), clock=lambda: clock.now)
    assert state['active_state'] == 'active'
    assert clock.slept == [0.2, 0.2]  # 0.4 s instead of the full 2 s


def test_settle_with_ready_fails_at_once_when_the_process_is_gone():
    clock = Clock()
    systemd = FakeSystemd(active='activating', sub='auto-restart')
    with pytest.raises(ReleaseError, match=r'demoapp did not stay up after the restart \(ActiveState=activating, '
                                           r'SubState=auto-restart\); its last log lines: .*line 20'):
        bring_up(systemd, clock.sleep, 'demoapp', 'restart', 2, False, ready=lambda: False, clock=lambda: clock.now)
    assert clock.slept == []


def test_settle_with_ready_that_never_answers_still_requires_an_active_unit():
    clock = Clock()
    state = bring_up(FakeSystemd(), clock.sleep, 'demoapp', 'restart', 1, False,
                     ready=lambda: False, clock=lambda: clock.now)
    assert state['active_state'] == 'active'
    assert abs(sum(clock.slept) - 1.0) < 1e-9


def test_url_ready_probes_real_http():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # pylint: disable=invalid-name
            self.send_response(200 if self.path == '/healthz' else 503)
            self.send_header('Content-Length', '0')
            self.end_headers()

        def log_message(self, *args):  # pylint: disable=arguments-differ
            return

    server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert url_ready('http://127.0.0.1:%d/healthz' % port)() is True
        assert url_ready('http://127.0.0.1:%d/other' % port)() is False
    finally:
        server.shutdown()
        server.server_close()
    assert url_ready('http://127.0.0.1:%d/healthz' % port, timeout=0.5)() is False  # closed now


def test_check_artifact_on_the_controller_names_every_problem(tmp_path):
    from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import check_artifact
    good = app_tar(tmp_path)
    assert check_artifact(good) == []
    assert check_artifact(good, 'sha256:' + file_sha256(good)) == []
    problems = check_artifact(good, '0' * 64)
    assert len(problems) == 1 and 'checksum mismatch' in problems[0] and '0' * 64 in problems[0]
    evil = tmp_path / 'evil.tar.gz'
    make_tar(evil, [('top/a', 'file'), ('../evil', 'file')])
    assert '../evil' in check_artifact(str(evil))[0]
    junk = tmp_path / 'junk.tar.gz'
    junk.write_bytes(b'not a tar at all')
    assert 'not a readable tar archive' in check_artifact(str(junk))[0]
    assert 'cannot read' in check_artifact(str(tmp_path / 'missing.tar.gz'))[0]


def test_chained_symlinks_that_stay_inside_are_fine(root, tmp_path):
    src = make_tar(tmp_path / 'ok.tar.gz', [('top/lib/', 'dir'), ('top/lib/a.py', 'file'),
                                            ('top/cur', 'sym', 'lib'), ('top/bin/', 'dir'),
                                            ('top/bin/a', 'sym', '../cur/../lib/a.py')])
    run(root, 'staged', version='v2', src=src)
    assert (root / 'releases' / 'v2' / 'bin' / 'a').read_bytes() == b'data of top/lib/a.py'


# ------------------------------------------------------------------ hostile hosts

def victim_file(tmp_path):
    """A file a planted symlink points at, as /etc/shadow would be."""
    victim = tmp_path / 'victim'
    victim.write_text('secret\n')
    os.chmod(str(victim), 0o600)
    return victim


def test_planted_symlink_at_the_rollback_temp_name_is_not_followed(root, tmp_path):
    _two_releases(root)
    victim = victim_file(tmp_path)
    link(root, '.rollback.json.tmp', str(victim))
    run(root, 'rollback')
    assert victim.read_text() == 'secret\n' and stat.S_IMODE(os.stat(str(victim)).st_mode) == 0o600
    record = root / '.rollback.json'
    assert not os.path.islink(str(record)) and json.loads(record.read_text())['to'] == 'v1'
    assert stat.S_IMODE(os.lstat(str(record)).st_mode) == 0o644
    assert not os.path.lexists(str(root / '.rollback.json.tmp'))


@pytest.mark.parametrize('name, state', [('.staging', 'staged'), ('.staging', 'absent'), ('releases', 'absent')])
def test_planted_layout_symlink_is_refused_and_nothing_elsewhere_removed(root, tmp_path, name, state):
    _two_releases(root)
    run(root, 'staged', version='v3', src=app_tar(tmp_path, 'v3'))
    elsewhere = tmp_path / 'elsewhere'
    for version in ('v3', 'v4'):
        (elsewhere / version).mkdir(parents=True)
        (elsewhere / version / 'keep').write_text('not the module\'s\n')
    planted = root / name
    os.rename(str(planted), str(tmp_path / 'moved-away'))
    link(root, name, str(elsewhere))
    with pytest.raises(ReleaseError) as err:
        run(root, state, version='v3' if state == 'absent' else 'v4', src=app_tar(tmp_path, 'v4'))
    assert str(planted) in err.value.msg and str(elsewhere) in err.value.msg and 'rm %s' % planted in err.value.msg
    assert tree(elsewhere) == ['v3', 'v3/keep', 'v4', 'v4/keep']


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='the check applies when the module runs as root')


@needs_root
@pytest.mark.parametrize('mode, owner, refused', [
    (0o777, 0, True),           # world-writable
    (0o775, 0, True),           # group-writable
    (0o1777, 0, False),         # /tmp-like: sticky, nobody renames the entries of others
    (0o755, 65534, True),       # another user's
    (0o755, 0, False),
])
def test_root_or_parent_writable_by_others_is_refused_as_root(root, tmp_path, mode, owner, refused):
    parent = root.parent
    os.chown(str(parent), owner, 0)
    os.chmod(str(parent), mode)
    try:
        if refused:
            with pytest.raises(ReleaseError) as err:
                run(root, 'staged', version='v2', src=app_tar(tmp_path))
            msg = err.value.msg
            assert str(root) in msg and '%s has owner' % parent in msg and 'mode %04o' % mode in msg
            assert 'uid %d' % owner in msg and 'chown root:root %s && chmod go-w %s' % (parent, parent) in msg
            assert tree(root) == []
            # reading changes nothing: info still answers
            assert run(root)['current'] == ''
        else:
            assert run(root, 'staged', version='v2', src=app_tar(tmp_path))['installed_now']
    finally:
        os.chown(str(parent), 0, 0)
        os.chmod(str(parent), 0o755)


@needs_root
def test_releases_dir_of_another_user_is_refused_as_root(root, tmp_path):
    (root / 'releases').mkdir()
    os.chown(str(root / 'releases'), 65534, 65534)
    with pytest.raises(ReleaseError, match=r'releases has owner .*uid 65534.* chmod go-w'):
        run(root, 'staged', version='v2', src=app_tar(tmp_path))


def test_root_check_does_not_apply_to_an_unprivileged_run(root, tmp_path, monkeypatch):
    os.chmod(str(root), 0o777)
    monkeypatch.setattr(_release.os, 'geteuid', lambda: 1000)
    assert run(root, 'staged', version='v2', src=app_tar(tmp_path))['installed_now']


class SwapAfterHashing(object):
    """hashlib.sha256 whose first digest swaps the bytes at ``path``: the artifact changing after its check."""

    def __init__(self, path, evil, how):
        self.path, self.evil, self.how = path, evil, how
        self.real = _artifact.hashlib.sha256
        self.swapped = False

    def __call__(self, *args):
        digest = self.real(*args)
        outer = self

        class Digest(object):
            def update(self, data):
                digest.update(data)

            def hexdigest(self):
                value = digest.hexdigest()
                if not outer.swapped:
                    outer.swapped = True
                    if outer.how == 'rename':
                        os.replace(outer.evil, outer.path)
                    else:       # the same inode rewritten: an open file descriptor sees it too
                        with open(outer.path, 'r+b') as handle:
                            handle.write(open(outer.evil, 'rb').read())
                return value
        return Digest()


@pytest.mark.parametrize('how', ['rename', 'rewrite'])
def test_the_bytes_checked_are_the_bytes_unpacked(root, tmp_path, monkeypatch, how):
    good = app_tar(tmp_path)
    checksum = file_sha256(good)
    evil = make_tar(tmp_path / 'evil.tar.gz', [('demoapp-v2/', 'dir'), ('demoapp-v2/app.py', 'exec', b'evil\n'),
                                               ('demoapp-v2/backdoor', 'exec', b'evil\n')])
    swapper = SwapAfterHashing(good, evil, how)
    monkeypatch.setattr(_artifact.hashlib, 'sha256', swapper)
    run(root, 'staged', version='v2', src=good, checksum=checksum)
    assert swapper.swapped
    rel = root / 'releases' / 'v2'
    assert not (rel / 'backdoor').exists() and (rel / 'app.py').read_bytes() == b'print("v2")\n'
    assert json.loads((rel / '.grayrelease-release').read_text())['sha256'] == checksum


def fake_statvfs(free, frsize=4096, files=10 ** 6, favail=10 ** 6):
    """os.statvfs as a filesystem with ``free`` bytes available (rounded down to blocks)."""
    def statvfs(_path):
        return os.statvfs_result((frsize, frsize, 10 ** 9, free // frsize, free // frsize,
                                  files, favail, favail, 0, 255))
    return statvfs


MIB = 1024 * 1024


def big_tar(tmp_path, size):
    """A release that unpacks to ``size`` bytes of zeros (and compresses to almost nothing)."""
    return make_tar(tmp_path / 'demoapp-v2.tar.gz', [('demoapp-v2/', 'dir'), ('demoapp-v2/blob', 'file', b'\0' * size)])


def test_archive_that_does_not_fit_is_refused_naming_both_figures(root, tmp_path, monkeypatch):
    src = big_tar(tmp_path, 8 * MIB)
    monkeypatch.setattr(_release.os, 'statvfs', fake_statvfs(70 * MIB))
    with pytest.raises(ReleaseError) as err:
        run(root, 'staged', version='v2', src=src)
    msg = err.value.msg
    assert 'cannot unpack demoapp-v2.tar.gz into %s' % (root / '.staging') in msg
    assert 'No space left on device' in msg and 'unpacks to about 8.0 MiB (1 member)' in msg and '70.0 MiB free' in msg
    assert 'min_free_mb=64' in msg and 'nothing changed' in msg
    assert err.value.result['needed_bytes'] >= 8 * MIB and err.value.result['free_bytes'] == 70 * MIB
    assert tree(root) == []
    # what the reserve leaves is what counts: without one the same archive fits
    assert run(root, 'staged', version='v2', src=src, min_free_mb=0)['installed_now']


def test_archive_that_cannot_even_be_copied_is_refused(root, tmp_path, monkeypatch):
    src = app_tar(tmp_path)
    monkeypatch.setattr(_release.os, 'statvfs', fake_statvfs(64 * MIB + 16, frsize=1))
    with pytest.raises(ReleaseError, match=r'cannot copy .*demoapp-v2.tar.gz into .*\.staging: No space left on '
                                           r'device: the archive takes [0-9.]+ (bytes|KiB), and the filesystem '
                                           r'there has 64.0 MiB free'):
        run(root, 'staged', version='v2', src=src)
    assert tree(root) == []


def test_many_empty_members_count_against_space_and_inodes(root, tmp_path, monkeypatch):
    entries = [('demoapp-v2/', 'dir')] + [('demoapp-v2/f%04d' % i, 'file', b'') for i in range(1000)]
    src = make_tar(tmp_path / 'demoapp-v2.tar.gz', entries)
    # no data at all, but 1000 inodes and directory entries: about 4 MB
    monkeypatch.setattr(_release.os, 'statvfs', fake_statvfs(65 * MIB))
    with pytest.raises(ReleaseError, match=r'unpacks to about 3.9 MiB \(1000 members\)'):
        run(root, 'staged', version='v2', src=src)
    monkeypatch.setattr(_release.os, 'statvfs', fake_statvfs(10 ** 12, favail=500))
    with pytest.raises(ReleaseError, match='500 free inodes for 1000 files'):
        run(root, 'staged', version='v2', src=src)
    assert tree(root) == []


def test_member_count_is_capped_while_reading(root, tmp_path):
    entries = [('demoapp-v2/', 'dir')] + [('demoapp-v2/f%02d' % i, 'file') for i in range(30)]
    src = make_tar(tmp_path / 'demoapp-v2.tar.gz', entries)
    with pytest.raises(ReleaseError, match=r'demoapp-v2.tar.gz: it has more than max_members=10 members'):
        run(root, 'staged', version='v2', src=src, max_members=10)
    assert tree(root) == []
    assert run(root, 'staged', version='v2', src=src, max_members=31)['installed_now']


@pytest.mark.parametrize('option, value', [('min_free_mb', -1), ('max_members', 0)])
def test_space_options_are_checked(root, option, value):
    with pytest.raises(ReleaseError, match='%s must be .*got %d' % (option, value)):
        run(root, 'staged', version='v2', **{option: value})
