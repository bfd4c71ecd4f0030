# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release directories on a host, for grayrelease.canary.release.

Private to grayrelease.canary. Pure standard library. The host layout::

    ROOT/releases/VERSION/   one directory per release (with a .grayrelease-release marker)
    ROOT/current -> releases/VERSION    what runs
    ROOT/previous -> releases/OLD       what ran before the last switch
    ROOT/.staging/           unpack area of an install in progress
    ROOT/.rollback.json      written by a rollback, removed by the next release switch
    ROOT/shared/PATH         what every release links at PATH (option shared; _shared.py)

Everything that talks to systemd goes through a ``run(argv) -> (rc, out, err)``
callable, and time through ``clock()`` / ``sleep(s)``, so the unit tests fake
them. ``apply(params, ...)`` is the one entry point of the module.

The tarball itself (checksum, download, the archive's safety, unpacking) is
_artifact.py; the service under systemd is _systemd.py: their names are
imported from there.
"""

from __future__ import annotations

import grp
import json
import os
import posixpath
import pwd
import re
import shutil
import stat
import sys
import time
from urllib.parse import urlsplit

from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact_url, url_secrets

from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import (
    DIR_MODE,
    FILE_MODE,
    MARKER,
    MAX_MEMBERS,
    NOFOLLOW,
    ReleaseError,
    checksum_mismatch_msg,
    clear_for,
    download,
    hash_copy,
    is_url,
    make_dirs,
    open_src,
    parse_checksum,
    read_plan,
    remove_path,
    unpack,
    unpacked_bytes,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._shared import link_shared, parse_shared, unlinked
from ansible_collections.grayrelease.canary.plugins.module_utils._systemd import bring_up, unit_state, url_ready


STATES = ('info', 'staged', 'current', 'rollback', 'absent', 'pruned')
VERSION_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]*\Z')
# systemd unit names; a leading '-' would be read as an option by systemctl.
SERVICE_RE = re.compile(r'^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*\Z')
ROLLBACK_RECORD = '.rollback.json'
# Free space (MiB) an install must leave on the filesystem of the root: a
# host with a full disk loses its logs and the running release with them.
MIN_FREE_MB = 64


def _link_name(path):
    """Version a symlink points at (basename of its target), '' when it is no symlink."""
    try:
        target = os.readlink(path)
    except OSError:
        return ''
    return posixpath.basename(target.rstrip('/'))


def _is_link_or_missing(path):
    return os.path.islink(path) or not os.path.lexists(path)


def _write_new(path, text, mode, uid=None, gid=None):
    """Write ``text`` into a file created at ``path``, never through what is there already.

    Whatever has the name (a leftover, or a symlink planted to make root write
    elsewhere) is unlinked, not followed; O_EXCL|O_NOFOLLOW then fail rather
    than follow one planted in between.
    """
    remove_path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
        if uid is not None:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)


def _human(size):
    for unit in ('bytes', 'KiB', 'MiB', 'GiB'):
        if size < 1024 or unit == 'GiB':
            return ('%d %s' if unit == 'bytes' else '%.1f %s') % (size, unit)
        size /= 1024.0


def check_free_space(directory, need, inodes, min_free_mb, action, needs):
    """Refuse, before writing, ``need`` bytes in ``inodes`` files the filesystem of ``directory`` lacks.

    ``min_free_mb`` MiB must stay free besides. Only the space an unprivileged
    user may use counts (f_bavail): root's reserve is what keeps a full host
    able to log and log in. ``action`` and ``needs`` (with %s for the size)
    word the refusal.
    """
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    reserve = int(min_free_mb) * 1024 * 1024
    # A filesystem without an inode count (btrfs, some network ones) says 0 files.
    short_of_inodes = st.f_files and inodes > st.f_favail
    if need + reserve <= free and not short_of_inodes:
        return
    inode_part = ' and %d free inodes for %d files' % (st.f_favail, inodes) if short_of_inodes else ''
    raise ReleaseError('%s: No space left on device: %s, and the filesystem there has %s free (min_free_mb=%d of it '
                       'must stay free)%s; nothing changed. Free space on that filesystem (or lower min_free_mb), or '
                       'check that the archive is the release you meant.'
                       % (action, needs % _human(need), _human(free), min_free_mb, inode_part),
                       needed_bytes=need, free_bytes=free)


def _unsafe_dir(path, st):
    """Why someone besides root could change what is in ``path`` (a directory), '' when nobody can."""
    writable = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if st.st_uid == 0 and not writable:
        return ''
    return ('%s has owner %s, group %s, mode %04o' % (path, _user_name(st.st_uid), _group_name(st.st_gid),
                                                      stat.S_IMODE(st.st_mode)))


def _user_name(uid):
    try:
        return '%s (uid %d)' % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return 'uid %d' % uid


def _group_name(gid):
    try:
        return '%s (gid %d)' % (grp.getgrgid(gid).gr_name, gid)
    except KeyError:
        return 'gid %d' % gid


def check_root_safe(root):
    """Refuse a release root that a user other than root could write to, when the module runs as root.

    Root would otherwise follow what such a user plants there (a symlink at a
    temporary name, a staging area pointing elsewhere) and write or remove on
    their behalf. Every directory on the way counts: the root, its parents,
    and those of whatever a symlink on the way points at. A world-writable
    directory with the sticky bit (/tmp) is fine: nobody can rename or remove
    the entries of others there.
    """
    if os.geteuid() != 0:
        return
    prefixes = [root]
    while os.path.dirname(prefixes[-1]) != prefixes[-1]:
        prefixes.append(os.path.dirname(prefixes[-1]))
    seen = set()
    for prefix in prefixes:
        directory = os.path.realpath(prefix)
        while directory not in seen:
            seen.add(directory)
            _refuse_unless_root_only(directory, root)
            directory = os.path.dirname(directory)


def _refuse_unless_root_only(directory, root):
    try:
        st = os.stat(directory)
    except OSError:
        return      # not created yet: the module creates it root-owned, 0755
    problem = _unsafe_dir(directory, st)
    if problem:
        raise ReleaseError(
            'refusing to manage releases under %s as root: %s, so a user other than root could plant '
            'symlinks there that root would follow. Fix: chown root:root %s && chmod go-w %s (the '
            'service may still own its release files: see the owner option).'
            % (root, problem, directory, directory))


def resolve_owner(owner, group):
    """(uid, gid) for the owner/group options; default the user running the module."""
    uid, gid = os.geteuid(), os.getegid()
    if owner not in (None, ''):
        owner = str(owner)
        if owner.isdigit():
            uid = int(owner)
        else:
            try:
                uid = pwd.getpwnam(owner).pw_uid
            except KeyError:
                raise ReleaseError('owner %r: no such user on this host' % owner)
    if group not in (None, ''):
        group = str(group)
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ReleaseError('group %r: no such group on this host' % group)
    return uid, gid


class Host(object):
    """The release layout under one root."""

    def __init__(self, root):
        self.root = root
        self.releases = os.path.join(root, 'releases')
        self.staging = os.path.join(root, '.staging')
        self.current = os.path.join(root, 'current')
        self.previous = os.path.join(root, 'previous')
        self.record = os.path.join(root, ROLLBACK_RECORD)
        self.shared = os.path.join(root, 'shared')

    def release(self, version):
        return os.path.join(self.releases, version)

    def installed(self):
        """{name: mtime} of the release directories (not hidden, not symlinks)."""
        found = {}
        try:
            entries = list(os.scandir(self.releases))
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    found[entry.name] = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
        return found

    def marker(self, version):
        """The install marker of a release as a dict; None without one."""
        path = os.path.join(self.release(version), MARKER)
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else {}

    def completeness(self, version):
        """'missing', 'complete', 'empty' or 'notdir' for releases/<version>."""
        path = self.release(version)
        if not os.path.lexists(path):
            return 'missing'
        if not os.path.isdir(path):
            return 'notdir'
        if os.path.exists(os.path.join(path, MARKER)):
            return 'complete'
        try:
            return 'complete' if os.listdir(path) else 'empty'
        except OSError:
            return 'empty'

    def rollback_record(self):
        try:
            with open(self.record) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def refuse_unsafe(self):
        """Before any change: refuse a layout where the module would write or remove through a planted link.

        releases/ and .staging/ must be directories of their own (a symlink
        there would have root rename and remove wherever it points) and, as
        root, like the root itself and its parents, writable by root alone.
        """
        for path in (self.releases, self.staging):
            if os.path.islink(path):
                raise ReleaseError('%s is a symlink (to %s), not a directory of the release layout; the module '
                                   'writes and removes under it and would do so wherever it points. Remove the '
                                   'link (rm %s) and run again.' % (path, os.readlink(path), path))
            if os.path.lexists(path) and not os.path.isdir(path):
                raise ReleaseError('%s exists but is not a directory; the release layout keeps a directory '
                                   'there. Move it away and run again.' % path)
        check_root_safe(self.root)
        if os.geteuid() == 0:
            for path in (self.releases, self.staging):
                _refuse_unless_root_only(path, self.root)

    def replace_link(self, name, target):
        """Point ROOT/name at target in one rename(2): never missing, never half-written."""
        tmp = os.path.join(self.root, '.%s.tmp' % name)
        remove_path(tmp)
        os.symlink(target, tmp)
        os.rename(tmp, os.path.join(self.root, name))

    def discard(self, path):
        """Remove a directory tree so that it vanishes in one step (renamed away first)."""
        if not os.path.lexists(path):
            return
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        trash = os.path.join(self.staging, '.discard-%s-%d' % (os.path.basename(path), os.getpid()))
        try:
            make_dirs(self.staging)
            remove_path(trash)
            os.rename(path, trash)
        except OSError:
            trash = path
        shutil.rmtree(trash)


class Release(object):
    """One run of the module: checks first, then changes (or, in check mode, only reports)."""

    def __init__(self, params, check_mode=False, run=None, clock=time.time, sleep=time.sleep):
        self.p = params
        self.check = check_mode
        self.run = run
        self.clock = clock
        self.sleep = sleep
        self.state = params.get('state') or 'info'
        self.version = params.get('version') or ''
        self.service = params.get('service') or ''
        self.changed = False
        self.done = []      # one-line summary parts
        self.result = {'switched': False, 'switched_from': '', 'installed_now': False, 'pruned': [],
                       'shared_linked': []}
        self._validate()
        self.host = Host(os.path.normpath(params['root']))
        # What the host looks like; kept up to date as the run (would) change it.
        self.cur = _link_name(self.host.current)
        self.prev = _link_name(self.host.previous)
        self.inst = self.host.installed()
        self.before = self._view()

    # -------------------------------------------------------- checks

    def _validate(self):
        root = self.p.get('root')
        if not root or not os.path.isabs(root):
            raise ReleaseError('root must be an absolute path, got %r' % (root,))
        if self.state not in STATES:
            raise ReleaseError('state must be one of %s, got %r' % (', '.join(STATES), self.state))
        if self.version and not VERSION_RE.match(self.version):
            raise ReleaseError('version %r is not a valid release name: use letters, digits and . _ + - '
                               '(not first), it becomes a directory name' % (self.version,))
        if not self.version and self.state in ('staged', 'current', 'absent'):
            raise ReleaseError('version is required with state=%s' % self.state)
        keep = self.p.get('keep')
        if keep is not None and keep < 1:
            raise ReleaseError('keep must be at least 1, got %r' % (keep,))
        if self.state == 'pruned' and keep is None:
            raise ReleaseError('keep is required with state=pruned')
        if self.service and not SERVICE_RE.match(self.service):
            raise ReleaseError('service %r is not a valid systemd unit name' % (self.service,))
        settle = self.p.get('settle')
        if settle is not None and settle < 0:
            raise ReleaseError('settle must be >= 0 seconds, got %r' % (settle,))
        self.min_free_mb = self.p.get('min_free_mb')
        self.min_free_mb = MIN_FREE_MB if self.min_free_mb is None else self.min_free_mb
        if self.min_free_mb < 0:
            raise ReleaseError('min_free_mb must be >= 0 MiB, got %r' % (self.min_free_mb,))
        self.max_members = self.p.get('max_members')
        self.max_members = MAX_MEMBERS if self.max_members is None else self.max_members
        if self.max_members < 1:
            raise ReleaseError('max_members must be at least 1, got %r' % (self.max_members,))
        self.shared = parse_shared(self.p.get('shared'))
        self.expected = None
        if self.p.get('checksum'):
            self.expected = parse_checksum(self.p['checksum'])
        src = self.p.get('src')
        if src and self.p.get('remote_src') and is_url(src) and not self.expected:
            # Each host downloads on its own: only the sum proves they all got the same bytes.
            raise ReleaseError('checksum is required when the host downloads src (%s): give checksum=sha256:<hex>'
                               % redact_url(src))

    def _refuse_non_link(self, name):
        path = os.path.join(self.host.root, name)
        if not _is_link_or_missing(path):
            raise ReleaseError('%s exists but is not a symlink; refusing to replace it. Move it away '
                               '(the release layout keeps %s as a symlink into releases/).' % (path, name))

    def _view(self):
        return {'current': self.cur, 'previous': self.prev, 'installed': sorted(self.inst)}

    def _part(self, done, would):
        self.done.append(would if self.check else done)

    # -------------------------------------------------------- install

    def _artifact_name(self):
        src = self.p.get('src') or ''
        if is_url(src):
            src = urlsplit(src.strip()).path
        return posixpath.basename(src) or '(no src)'

    def ensure_staged(self):
        """Install releases/<version> unless it is there and complete."""
        version = self.version
        path = self.host.release(version)
        status = self.host.completeness(version)
        src = self.p.get('src')
        if status == 'notdir':
            raise ReleaseError('%s exists but is not a directory: not a release. Remove it to let the module '
                               'install %s from src.' % (path, version))
        if status == 'empty':
            raise ReleaseError('%s exists but is empty: not a usable release. Remove it (rmdir %s) to let the '
                               'module install %s from src.' % (path, path, version))
        if status == 'complete':
            self._check_installed(path)
            return
        if not src:
            raise ReleaseError('release %s is not installed (%s is missing) and src is not set' % (version, path))
        if not self.p.get('remote_src'):
            if self.check:
                self._installed(version)
                return
            # The action plugin runs the module once without copying src and
            # copies it only when this answer asks for it.
            raise ReleaseError('release %s is not installed: src %s must be copied to the host first (the '
                               'action plugin does that)' % (version, src), needs_src=True)
        self._install_from(src)

    def _check_installed(self, path):
        if not self.p.get('verify_checksum', True):
            return
        marker = self.host.marker(self.version)
        recorded = str((marker or {}).get('sha256') or '').lower()
        if not recorded:
            return
        actual = self.expected
        src = self.p.get('src')
        if src and self.p.get('remote_src') and not is_url(src):
            actual = self._hash_src(src)
        if actual and actual != recorded:
            raise ReleaseError(
                '%s was installed from an artifact with sha256 %s, but %s has sha256 %s. Give the new build '
                'its own version, or remove the old release directory (it must not be current), or set '
                'verify_checksum=false (release_verify_checksum in the release role) to keep the installed one.'
                % (path, recorded, src or 'checksum', actual))

    def _hash_src(self, src):
        with open_src(src) as handle:
            return self._verify(src, hash_copy(handle))

    def _verify(self, src, actual):
        if self.expected and actual != self.expected:
            raise ReleaseError(checksum_mismatch_msg(src, self.expected, actual),
                               expected_sha256=self.expected, sha256=actual)
        return actual

    def _installed(self, version):
        self.inst[version] = self.clock()
        self.result['installed_now'] = True
        self.changed = True
        self._part('installed %s from %s' % (version, self._artifact_name()),
                   'would install %s from %s' % (version, self._artifact_name()))
        self._shared_part(self.shared)

    def _shared_part(self, paths):
        if paths:
            self.result['shared_linked'] = list(paths)
            self._part('linked shared %s' % ', '.join(paths), 'would link shared %s' % ', '.join(paths))

    def ensure_shared(self):
        """An installed release that current does not point at gets the shared links it lacks."""
        if not self.shared or self.result['installed_now'] or self.version == self.cur:
            return
        path = self.host.release(self.version)
        if self.check:
            missing = unlinked(path, self.host.shared, self.shared)
        else:
            uid, gid = resolve_owner(self.p.get('owner'), self.p.get('group'))
            missing = link_shared(path, self.host.shared, self.shared, uid, gid, self.host.discard)
        if missing:
            self.changed = True
            self._shared_part(missing)

    def _install_from(self, src):
        """Install from a path on the host, or from a URL downloaded next to the unpack area."""
        if not is_url(src):
            self._install(src)
            return
        if self.check:
            # Check mode downloads nothing.
            self._installed(self.version)
            return
        make_dirs(self.host.staging)
        fetched = os.path.join(self.host.staging, '%s.download' % self.version)
        remove_path(fetched)     # left by an interrupted download
        try:
            download(src, fetched, self.expected, validate_certs=self.p.get('validate_certs', True))
            self._install(fetched, private=True)
        finally:
            remove_path(fetched)
            try:
                os.rmdir(self.host.staging)     # only when empty: a failed download leaves nothing
            except OSError:
                pass

    def _install(self, src, private=False):
        """Unpack src as releases/<version>; the bytes whose sum is checked are the bytes unpacked.

        src is opened once. Unless it is ``private`` (downloaded by this run
        into the staging area, which only root can write), it is copied into
        a file only root can write, hashed on the way, and the checksum, the
        archive checks and the unpack all read that copy: src swapped or
        rewritten meanwhile changes none of them. A failure leaves nothing,
        not even the directories this install created.
        """
        version = self.version
        uid, gid = resolve_owner(self.p.get('owner'), self.p.get('group'))
        with open_src(src) as source:
            if self.check:
                self._verify(src, hash_copy(source))
                source.seek(0)
                tar, _plan = read_plan(source, self._artifact_name(), self.max_members)
                tar.close()
                self._installed(version)
                return
            host = self.host
            created = make_dirs(host.releases) + make_dirs(host.staging)
            stage = os.path.join(host.staging, version)
            done = False
            try:
                remove_path(stage)      # left by an interrupted install
                os.mkdir(stage, 0o700)
                content = self._unpack_verified(src, source, private, stage, uid, gid)
                link_shared(content, self.host.shared, self.shared, uid, gid, self.host.discard)
                if os.path.lexists(host.release(version)):
                    raise ReleaseError('%s appeared while %s was being unpacked; not replacing it'
                                       % (host.release(version), version))
                os.rename(content, host.release(version))
                done = True
            finally:
                remove_path(stage)
                if not done:
                    for directory in reversed(created):
                        try:
                            os.rmdir(directory)
                        except OSError:
                            pass
        self._installed(version)

    def _unpack_verified(self, src, source, private, stage, uid, gid):
        """Check and unpack into ``stage``/content what ``source`` reads; returns content's path."""
        artifact = self._artifact_name()
        staging = self.host.staging
        if private:
            archive = source
            digest = hash_copy(source)
            source.seek(0)
        else:
            check_free_space(staging, os.fstat(source.fileno()).st_size, 1, self.min_free_mb,
                             'cannot copy %s into %s' % (src, staging), 'the archive takes %s')
            fd = os.open(os.path.join(stage, 'archive'), os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
            archive = os.fdopen(fd, 'w+b')
        try:
            if not private:
                try:
                    digest = hash_copy(source, archive)
                    archive.seek(0)
                except OSError as exc:
                    raise ReleaseError('cannot copy %s into %s: %s' % (src, staging, exc))
            self._verify(src, digest)
            tar, plan = read_plan(archive, artifact, self.max_members)
            with tar:
                check_free_space(staging, unpacked_bytes(plan), len(plan), self.min_free_mb,
                                 'cannot unpack %s into %s' % (artifact, staging),
                                 'it unpacks to about %%s (%d member%s)' % (len(plan), '' if len(plan) == 1 else 's'))
                content = os.path.join(stage, 'content')
                unpack(tar, plan, content, uid, gid, artifact)
            self._write_marker(content, digest, uid, gid)
            return content
        finally:
            if archive is not source:
                archive.close()

    def _write_marker(self, content, digest, uid, gid):
        marker = os.path.join(content, MARKER)
        clear_for(marker, MARKER, self._artifact_name())
        data = {'version': self.version, 'artifact': self._artifact_name(), 'sha256': digest,
                'installed': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.clock()))}
        _write_new(marker, json.dumps(data, indent=4, sort_keys=True) + '\n', FILE_MODE, uid, gid)
        os.chmod(content, DIR_MODE)
        os.chown(content, uid, gid)

    # -------------------------------------------------------- switch

    def switch(self, target):
        """Point current at releases/<target>; previous gets the old target verbatim."""
        host = self.host
        old = self.cur
        if old == target:
            return False
        if not self.check:
            try:
                old_target = os.readlink(host.current)
            except OSError:
                old_target = None
            if old_target is not None:
                host.replace_link('previous', old_target)
            host.replace_link('current', posixpath.join('releases', target))
            remove_path(host.record)
        if old:
            self.prev = old
        self.cur = target
        self.changed = True
        self.result.update(switched=True, switched_from=old)
        return True

    def bring_up_service(self, switched):
        """Restart after a switch (restart=true); with rollback also start a stopped unit."""
        service = self.service
        if not service:
            return
        settle = self.p.get('settle')
        settle = 2 if settle is None else settle
        reload_ = bool(self.p.get('daemon_reload'))
        ready = url_ready(self.p['ready_url']) if self.p.get('ready_url') else None
        if switched:
            if not self.p.get('restart', True):
                return
            self._part('restarted %s' % service, 'would restart %s' % service)
            if not self.check:
                bring_up(self.run, self.sleep, service, 'restart', settle, reload_, ready, self.clock)
            return
        if self.state != 'rollback':
            return
        state = unit_state(self.run, service)
        if state['active_state'] == 'active':
            return
        self.changed = True
        self._part('started %s' % service, 'would start %s' % service)
        if not self.check:
            bring_up(self.run, self.sleep, service, 'start', settle, reload_, ready, self.clock)

    # -------------------------------------------------------- prune / absent

    def prune(self, keep, protect):
        protected = set(p for p in protect if p) | set(p for p in (self.cur, self.prev) if p)
        excess = len(self.inst) - keep
        if excess <= 0:
            return
        candidates = sorted((mtime, name) for name, mtime in self.inst.items() if name not in protected)
        for _mtime, name in candidates[:excess]:
            if not self.check:
                self.host.discard(self.host.release(name))
            del self.inst[name]
            self.result['pruned'].append(name)
        if self.result['pruned']:
            self.changed = True
            self._part('pruned %s' % ', '.join(self.result['pruned']),
                       'would prune %s' % ', '.join(self.result['pruned']))

    def absent(self):
        version = self.version
        if version in (self.cur, self.prev):
            self.done.append('%s is the %s release; not removed' % (version, 'current' if version == self.cur else 'previous'))
            return
        path = self.host.release(version)
        leftover = os.path.join(self.host.staging, version)
        if not os.path.lexists(path) and not os.path.lexists(leftover):
            self.done.append('%s is not installed' % version)
            return
        if not self.check:
            self.host.discard(path)
            remove_path(leftover)
        self.inst.pop(version, None)
        self.changed = True
        self._part('removed %s' % path, 'would remove %s' % path)

    # -------------------------------------------------------- states

    def rollback_target(self):
        host = self.host
        if self.version:
            return self.version, 'given as version'
        record = host.rollback_record()
        if self.cur and record.get('to') == self.cur and record.get('from') == self.prev:
            return self.cur, 'recorded in %s' % host.record
        if not self.prev:
            reason = 'is not a symlink' if os.path.lexists(host.previous) else 'does not exist'
            raise ReleaseError('cannot roll back: no previous release recorded (%s %s; current is %s) and version '
                               'is not set' % (host.previous, reason, self.cur or 'not set'))
        return self.prev, 'recorded in %s' % host.previous

    def execute(self):
        state = self.state
        if state != 'info':
            self.host.refuse_unsafe()
        if state in ('current', 'rollback'):
            self._refuse_non_link('current')
            self._refuse_non_link('previous')
        if state == 'staged':
            if self.p.get('require_current') and not self.cur:
                # A host not on the release layout yet (not adopted) is not written to.
                self.done.append('no current release under %s: %s not staged (require_current)'
                                 % (self.host.root, self.version))
            else:
                self.ensure_staged()
                if not self.result['installed_now']:
                    self.done.append('%s is installed' % self.version)
                self.ensure_shared()
        elif state == 'current':
            self.ensure_staged()
            self.ensure_shared()
            switched = self.switch(self.version)
            if switched:
                self.done.append('current %s -> %s' % (self.result['switched_from'] or '(none)', self.version)
                                 if not self.check else
                                 'would switch current %s -> %s' % (self.result['switched_from'] or '(none)',
                                                                    self.version))
            else:
                self.done.append('current is %s' % self.version)
            self.bring_up_service(switched)
            if self.p.get('keep') is not None:
                self.prune(self.p['keep'], [self.version, self.result['switched_from']])
        elif state == 'rollback':
            target, why = self.rollback_target()
            if not os.path.isdir(self.host.release(target)):
                raise ReleaseError('cannot roll back to %s: %s is missing (%s; current is %s)'
                                   % (target, self.host.release(target), why, self.cur or 'not set'))
            old = self.cur
            switched = self.switch(target)
            if switched:
                if not self.check:
                    record = {'from': old, 'to': target,
                              'at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.clock()))}
                    _write_new(self.host.record + '.tmp', json.dumps(record, indent=4, sort_keys=True) + '\n',
                               FILE_MODE)
                    os.rename(self.host.record + '.tmp', self.host.record)
                self._part('rolled back %s -> %s' % (old or '(none)', target),
                           'would roll back %s -> %s' % (old or '(none)', target))
            else:
                self.done.append('current is %s (%s)' % (target, why))
            self.bring_up_service(switched)
        elif state == 'absent':
            self.absent()
        elif state == 'pruned':
            self.prune(self.p['keep'], [self.version])
            if not self.result['pruned']:
                self.done.append('nothing to prune (%d installed, keep %d)' % (len(self.inst), self.p['keep']))
        else:
            self.done.append('current is %s' % (self.cur or 'not set'))
        return self.report()

    def report(self):
        result = dict(self.result)
        result.update(self._view())
        result['staged'] = bool(self.version) and (
            (self.version in self.inst and self.host.completeness(self.version) == 'complete')
            or (self.check and self.result['installed_now']))
        result['service'] = unit_state(self.run, self.service) if self.service and self.run else {}
        result['changed'] = self.changed
        result['msg'] = '; '.join(self.done)
        return result


# The options every release kind's module takes (release, container_release);
# each adds what only it has.
RELEASE_OPTIONS = dict(
    root=dict(type='path', required=True),
    version=dict(type='str'),
    # Checked by apply(): see the note in the documentation of state.
    state=dict(type='str', default='info'),
    # str, not path: a URL must not be expanded as a path.
    src=dict(type='str'),
    remote_src=dict(type='bool', default=False),
    copy_first=dict(type='bool', default=False),
    require_current=dict(type='bool', default=False),
    validate_certs=dict(type='bool', default=True),
    checksum=dict(type='str'),
    service=dict(type='str'),
    restart=dict(type='bool', default=True),
    daemon_reload=dict(type='bool', default=False),
    settle=dict(type='float', default=2),
    ready_url=dict(type='str'),
    keep=dict(type='int'),
)
RELEASE_REQUIRED_IF = [('state', 'staged', ['version']), ('state', 'current', ['version']),
                       ('state', 'absent', ['version']), ('state', 'pruned', ['keep'])]


def release_module(module, apply_kind):
    """A release kind's module, given its AnsibleModule and its ``apply``: exit
    with the result, or fail with the ReleaseError's message and result."""
    # Not no_log: Ansible would then mask the whole of src (a path, mostly)
    # in every message that names it; only a URL's credentials are masked.
    module.no_log_values.update(url_secrets(module.params['src']))
    try:
        result = apply_kind(module.params, check_mode=module.check_mode, diff=module._diff, run=module.run_command)
    except ReleaseError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    # The rollout's pre-flight reads it: the host-side code needs MIN_HOST_PYTHON.
    result['python'] = '%d.%d.%d' % tuple(sys.version_info[:3])
    module.exit_json(**result)


def apply(params, check_mode=False, run=None, clock=time.time, sleep=time.sleep, diff=False):
    """Run the module's logic; returns the result dict or raises ReleaseError."""
    src = params.get('src')
    if src and not is_url(src):
        # src is a path or a URL, so the argument spec cannot say type=path;
        # a path gets the same expansion type=path would give it.
        params = dict(params, src=os.path.expanduser(os.path.expandvars(src)))
    release = Release(params, check_mode=check_mode, run=run, clock=clock, sleep=sleep)
    result = release.execute()
    if diff:
        result['diff'] = {'before': release.before, 'after': release._view()}
    return result
