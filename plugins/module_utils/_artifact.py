# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The artifact of a tarball release: its checksum, its download (one
redirect policy, a deadline, credentials never sent to another origin) and
the archive's safety (a plan of every member before anything is written: no
path outside the release, no link out of it, no device, bounded members and
bytes), then its unpacking. Stdlib only: runs on the app hosts.

Private to grayrelease.canary.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import zlib
from http.client import HTTPException
from urllib.error import HTTPError, URLError

from ansible_collections.grayrelease.canary.plugins.module_utils._http import Deadline, open_url
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact_url


SHA256_RE = re.compile(r'^(?:sha256:)?([0-9a-fA-F]{64})\Z')
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
# The file that marks a release directory complete: the release layout keeps
# its name for itself (a shared path may not take it over).
MARKER = '.grayrelease-release'
CHUNK = 1024 * 1024
URL_RE = re.compile(r'^https?://', re.IGNORECASE)
# Seconds one network read may stall (not the whole download).
DOWNLOAD_TIMEOUT = 60
# Seconds a whole download may take, redirects included: a server that
# trickles its answer never trips the per-read timeout, and a rollout's
# coordinator waits for the download.
DOWNLOAD_DEADLINE = 1800
# Tar members read at most: each costs the host ~0.5 KB of memory while the
# archive is checked, so a header bomb is cut off before it exhausts memory.
MAX_MEMBERS = 200000
# Links followed in a row when a symlink is resolved, as the kernel's SYMLOOP_MAX.
SYMLOOP_MAX = 40
NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)


class ReleaseError(Exception):
    """A failure of the module; ``result`` goes into the failed task's result."""

    def __init__(self, msg, **result):
        super(ReleaseError, self).__init__(msg)
        self.msg = msg
        self.result = result


class UnsafeArchive(ReleaseError):
    """The archive holds a member that must not be unpacked."""


def parse_checksum(value, what='checksum'):
    """'sha256:<hex>' or bare hex -> lower-case hex; ReleaseError otherwise."""
    match = SHA256_RE.match(str(value).strip())
    if not match:
        raise ReleaseError("%s must be a sha256 as 'sha256:<64 hex digits>' or 64 hex digits, got %r"
                           % (what, value))
    return match.group(1).lower()


def file_sha256(path):
    with open(path, 'rb') as handle:
        return hash_copy(handle)


def hash_copy(handle, dest=None):
    """sha256 of what ``handle`` reads from where it stands, written on into ``dest`` when given."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(CHUNK), b''):
        digest.update(block)
        if dest is not None:
            dest.write(block)
    return digest.hexdigest()


def open_src(src):
    """src opened for reading once, so that every later read sees the same file whatever the path becomes."""
    try:
        # O_NONBLOCK: a fifo put in src's place must not hang the module in open().
        fd = os.open(src, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except OSError:
        fd = None
    if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
        return os.fdopen(fd, 'rb')
    if fd is not None:
        os.close(fd)
    raise ReleaseError('src %s does not exist on the host or is not a regular file' % src)


def checksum_mismatch_msg(src, expected, actual):
    return ("checksum mismatch: %s has sha256 %s, but checksum expects sha256 %s; nothing changed"
            % (src, actual, expected))


def is_url(src):
    """src is an http(s) URL to download, not a path."""
    return isinstance(src, str) and bool(URL_RE.match(src.strip()))


def download(url, dest, expected=None, timeout=DOWNLOAD_TIMEOUT, validate_certs=True, deadline=DOWNLOAD_DEADLINE,
             clock=time.monotonic):
    """Stream ``url`` into the new file ``dest``, hashing on the way; returns its sha256.

    ``user:password@`` in the URL becomes a Basic Authorization header, sent
    only to the URL's origin (see _http), and is never repeated in a message.
    With ``expected`` (hex) a different sum fails. ``timeout`` bounds each
    read, ``deadline`` (seconds, on ``clock``) the whole download, redirects
    included. Whatever fails, ``dest`` is removed and ReleaseError names the URL.
    """
    shown = redact_url(url)
    limit = Deadline(deadline, clock)
    digest = hashlib.sha256()
    error = None
    try:
        with open_url(url.strip(), timeout=timeout, validate_certs=validate_certs, deadline=limit) as response:
            with open(dest, 'xb') as handle:
                # read1, not read(CHUNK): a server trickling a byte at a time
                # would hold read(CHUNK) until the watchdog, and the clock is
                # asked between reads.
                while not limit.passed():
                    block = response.read1(CHUNK)
                    if not block:
                        break
                    digest.update(block)
                    handle.write(block)
    except HTTPError as exc:
        error = 'HTTP %s %s' % (exc.code, exc.reason)
    except (URLError, HTTPException, OSError, ValueError) as exc:
        error = str(getattr(exc, 'reason', None) or exc)
    finally:
        limit.close()
    # Checked last, whatever happened: a connection the watchdog shut may
    # read as the end of a body that has no length.
    if limit.passed():
        error = ('not complete within its deadline of %g s for the whole download (the server sends too '
                 'slowly, or stalls)' % deadline)
    if error is not None:
        remove_path(dest)
        raise ReleaseError('cannot download %s: %s' % (shown, redact_url(error)), url=shown)
    actual = digest.hexdigest()
    if expected and actual != expected:
        remove_path(dest)
        raise ReleaseError(checksum_mismatch_msg(shown, expected, actual), expected_sha256=expected, sha256=actual)
    return actual


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def make_dirs(path, uid=None, gid=None):
    """Create ``path`` and missing parents with mode 0755 (not subject to the umask).

    Returns the directories it created, parents first.
    """
    created = []
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            continue
        created.append(directory)
        os.chmod(directory, DIR_MODE)
        if uid is not None:
            os.lchown(directory, uid, gid)
    return created


def _parts(name):
    return [p for p in name.split('/') if p not in ('', '.')]


def plan_archive(members, artifact):
    """Check every member of an archive and decide where each goes.

    Returns ``[(relative path parts, member, hardlink target parts or None), ...]``
    in archive order, with a single top-level directory stripped. Raises UnsafeArchive naming the first
    member that must not be unpacked, ReleaseError for an empty archive.
    Nothing is written.
    """
    entries = []
    for member in members:
        name = member.name
        if name.startswith('/') or re.match(r'^[A-Za-z]:[\\/]', name):
            raise UnsafeArchive('refusing to unpack %s: member %r has an absolute path' % (artifact, name))
        parts = _parts(name)
        if '..' in parts:
            raise UnsafeArchive("refusing to unpack %s: member %r has a '..' component" % (artifact, name))
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            kind = ('a device file' if (member.ischr() or member.isblk())
                    else 'a fifo' if member.isfifo() else 'an unsupported file type')
            raise UnsafeArchive('refusing to unpack %s: member %r is %s' % (artifact, name, kind))
        if parts:
            entries.append((parts, member))
    if not entries:
        raise ReleaseError('artifact %s is empty' % artifact)

    tops = set(parts[0] for parts, _member in entries)
    strip = False
    if len(tops) == 1:
        top_entries = [member for parts, member in entries if len(parts) == 1]
        has_children = any(len(parts) > 1 for parts, _member in entries)
        strip = all(member.isdir() for member in top_entries) and (has_children or bool(top_entries))
    plan = []
    for parts, member in entries:
        rel = parts[1:] if strip else parts
        if rel:
            plan.append([rel, member, None])
    if not plan:
        raise ReleaseError('artifact %s is empty (only the directory %s/)' % (artifact, tops.pop()))

    symlinks = set('/'.join(rel) for rel, member, _link in plan if member.issym())
    regular = set()
    for entry in plan:
        rel, member = entry[0], entry[1]
        path = '/'.join(rel)
        for depth in range(1, len(rel)):
            if '/'.join(rel[:depth]) in symlinks:
                raise UnsafeArchive('refusing to unpack %s: member %r lies under the symlink %r'
                                    % (artifact, member.name, '/'.join(rel[:depth])))
        if member.issym():
            target = member.linkname
            if not target or target.startswith('/'):
                raise UnsafeArchive('refusing to unpack %s: symlink %r points to %r, outside the release'
                                    % (artifact, member.name, target))
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == '..' or resolved.startswith('../'):
                raise UnsafeArchive('refusing to unpack %s: symlink %r points to %r, outside the release'
                                    % (artifact, member.name, target))
        elif member.islnk():
            target = member.linkname
            tparts = _parts(target)
            outside = target.startswith('/') or '..' in tparts or not tparts
            if strip and not outside:
                outside = tparts[0] != entries[0][0][0]
                tparts = tparts[1:]
            if outside or '/'.join(tparts) not in regular:
                raise UnsafeArchive('refusing to unpack %s: hardlink %r points to %r, which is not a file '
                                    'unpacked before it inside the release' % (artifact, member.name, target))
            entry[2] = tparts
            regular.add(path)
        elif member.isreg():
            regular.add(path)
        if not (member.isreg() or member.islnk()):
            # a later member of the same name replaces the file
            regular.discard(path)
    _check_symlink_chains(plan, artifact)
    return [tuple(entry) for entry in plan]


def _check_symlink_chains(plan, artifact):
    """Refuse a symlink whose target, followed through the archive's other symlinks, leaves the release.

    Each link alone may look inside (``d/b -> ..``, ``d/a -> b/..``) while the
    chain the kernel follows does not (``d/a`` is ``d/b/..``, that is the
    parent of the release). The links as the unpacked tree has them count:
    a later member of the same name replaces an earlier one.
    """
    links = {}
    for rel, member, _link in plan:
        if member.issym():
            links['/'.join(rel)] = member.linkname
        else:
            links.pop('/'.join(rel), None)
    for rel, member, _link in plan:
        if member.issym():
            problem = _resolve_in_archive(rel[:-1], member.linkname, links)
            if problem:
                raise UnsafeArchive('refusing to unpack %s: symlink %r points to %r, which %s'
                                    % (artifact, member.name, member.linkname, problem))


def _resolve_in_archive(start, target, links):
    """Follow ``target`` from the directory ``start`` (parts) as the kernel would; why it fails, '' when inside.

    A path through a directory that is not in the archive is read literally,
    the safe side: whatever appears there later, '..' never climbs out.
    """
    if target.startswith('/'):
        return 'is an absolute path'
    resolved = list(start)
    pending = list(reversed(target.split('/')))
    hops = 0
    while pending:
        part = pending.pop()
        if part in ('', '.'):
            continue
        if part == '..':
            if not resolved:
                return 'resolves outside the release through the symlinks in the archive'
            resolved.pop()
            continue
        resolved.append(part)
        link = links.get('/'.join(resolved))
        if link is None:
            continue
        hops += 1
        if hops > SYMLOOP_MAX:
            return 'does not resolve: more than %d symlinks in a row (a loop)' % SYMLOOP_MAX
        if link.startswith('/'):
            return 'leads through the symlink %r to an absolute path' % '/'.join(resolved)
        resolved.pop()
        pending.extend(reversed(link.split('/')))
    return ''


def unpacked_bytes(plan, block=4096):
    """Disk space unpacking ``plan`` takes, about: file data in whole ``block``s, one block more per member.

    The extra block stands for a member's inode and directory entry, and a
    directory's own block; a header bomb of empty members is counted too.
    """
    total = 0
    for _rel, member, _link in plan:
        if member.isreg():
            total += -(-member.size // block) * block
        total += block
    return total


def clear_for(path, member_name, artifact):
    """Make room for a non-directory member (a later duplicate replaces an earlier one)."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise UnsafeArchive('refusing to unpack %s: member %r would replace a directory'
                            % (artifact, member_name))
    if os.path.lexists(path):
        os.unlink(path)


def read_plan(archive, artifact, max_members=MAX_MEMBERS):
    """Open the archive (a path or a file object) and check it whole: (open TarFile, plan). Nothing is written."""
    try:
        if isinstance(archive, str):
            tar = tarfile.open(archive, 'r:*')
        else:
            tar = tarfile.open(fileobj=archive, mode='r:*')
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ReleaseError('cannot unpack %s: not a readable tar archive (%s)' % (artifact, exc))
    try:
        # Member by member, not getmembers() at once: the count is cut off before it eats the host's memory.
        count = 0
        while tar.next() is not None:
            count += 1
            if count > max_members:
                raise ReleaseError('refusing to unpack %s: it has more than max_members=%d members; check that it '
                                   'is the release you meant, or raise max_members' % (artifact, max_members),
                                   max_members=max_members)
        return tar, plan_archive(tar.getmembers(), artifact)
    except ReleaseError:
        tar.close()
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        tar.close()
        raise ReleaseError('cannot unpack %s: not a readable tar archive (%s)' % (artifact, exc))


def check_artifact(path, checksum=None):
    """Everything a host would refuse about an artifact, checked where it is.

    Returns the list of problems (empty when it is fine): a checksum that does
    not match, an archive that cannot be read, an unsafe or empty one. The
    rollout runs this on the controller before it touches any host.
    """
    try:
        actual = file_sha256(path)
        if checksum:
            expected = parse_checksum(checksum, 'canary_artifact_checksum')
            if expected != actual:
                return [checksum_mismatch_msg(path, expected, actual)]
        tar, plan = read_plan(path, path)
        tar.close()
    except ReleaseError as exc:
        return [exc.msg]
    except OSError as exc:
        return ['cannot read %s: %s' % (path, exc)]
    return []


def unpack(tar, plan, content, uid, gid, artifact):
    """Write the checked ``plan`` of ``tar`` into the new directory ``content``.

    Ownership uid:gid everywhere, directories 0755, regular files 0755 when the
    archive gave them any execute bit else 0644; no setuid/setgid/sticky bit
    survives, nor the archive's owners or mtimes of directories.
    """
    try:
        make_dirs(content, uid, gid)
        for rel, member, link_target in plan:
            path = os.path.join(content, *rel)
            make_dirs(os.path.dirname(path), uid, gid)
            if member.isdir():
                if os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)
                make_dirs(path, uid, gid)
            elif member.isreg():
                clear_for(path, member.name, artifact)
                mode = EXEC_MODE if member.mode & 0o111 else FILE_MODE
                source = tar.extractfile(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
                with os.fdopen(fd, 'wb') as handle:
                    shutil.copyfileobj(source, handle, CHUNK)
                    os.fchown(handle.fileno(), uid, gid)
                    os.fchmod(handle.fileno(), mode)
                os.utime(path, (member.mtime, member.mtime))
            elif member.issym():
                clear_for(path, member.name, artifact)
                os.symlink(member.linkname, path)
                os.lchown(path, uid, gid)
            else:
                clear_for(path, member.name, artifact)
                os.link(os.path.join(content, *link_target), path)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ReleaseError('cannot unpack %s: the archive is damaged (%s)' % (artifact, exc))
    except OSError as exc:
        raise ReleaseError('cannot unpack %s into %s: %s' % (artifact, content, exc))
