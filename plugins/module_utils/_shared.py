# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared paths of the release layout, for grayrelease.canary.release.

Private to grayrelease.canary. Pure standard library. What every release
must see the same copy of (logs, uploads, a socket directory) lives once under
``ROOT/shared/PATH``; each release has a symlink at ``PATH`` to it::

    ROOT/shared/logs/                      created empty when missing
    ROOT/releases/v2/logs -> ROOT/shared/logs

The links are made in the unpack area before a release is renamed into
``releases/`` (a new release appears complete, links included), and in an
installed release before ``current`` switches to it (one installed before the
path was shared). The release ``current`` points at is never modified: the
running service keeps what it has until the next switch.

``ROOT/shared`` itself may be the operator's symlink to another disk; below
it the module creates directories through file descriptors opened without
following symlinks, so an application user who can write there cannot make
root create or chown anything elsewhere.
"""

from __future__ import annotations

import os

from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import DIR_MODE, MARKER, ReleaseError, remove_path

# Release-layout names a shared path may not take over.
RESERVED = (MARKER,)
_TMP_SUFFIX = '.grayrelease-link'


def parse_shared(value):
    """The shared paths as normalized relative paths; ReleaseError naming a bad one."""
    if value in (None, ''):
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ReleaseError('shared=%r must be a list of paths relative to the release, e.g. [logs, uploads]'
                           % (value,))
    paths = []
    for raw in value:
        if not isinstance(raw, str) or not raw.strip():
            raise ReleaseError('shared path %r must be a non-empty path relative to the release' % (raw,))
        text = raw.strip()
        parts = [p for p in text.split('/') if p not in ('', '.')]
        if text.startswith('/') or not parts or '..' in parts:
            raise ReleaseError('shared path %r must be relative to the release and stay inside it '
                               '(no leading /, no ..), e.g. logs or var/uploads' % (raw,))
        if parts[0] in RESERVED or parts[-1].endswith(_TMP_SUFFIX):
            raise ReleaseError('shared path %r is a name the release layout keeps for itself' % (raw,))
        paths.append('/'.join(parts))
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            if a == b or a.startswith(b + '/') or b.startswith(a + '/'):
                raise ReleaseError('shared paths %r and %r overlap: give each directory once, not one inside '
                                   'another' % (a, b))
    return paths


def _ensure_dir(shared_root, path, uid, gid):
    """ROOT/shared/PATH as a directory, its missing parts created (mode 0755, uid:gid) without
    following a symlink below ROOT/shared; True when it created any."""
    created = False
    fd = os.open(shared_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in path.split('/'):
            try:
                os.mkdir(part, DIR_MODE, dir_fd=fd)
                fresh = True
            except FileExistsError:
                fresh = False
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                raise ReleaseError('%s is not a directory (a file or a symlink is there); the shared path %r '
                                   'needs a directory. Move it away and run again.'
                                   % (os.path.join(shared_root, path), path))
            if fresh:
                os.fchmod(child, DIR_MODE)
                os.fchown(child, uid, gid)
                created = True
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return created


def _release_parent(release_dir, path, uid, gid):
    """The directory in the release that holds PATH's link, made when missing; never through a symlink."""
    current = release_dir
    for part in path.split('/')[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current) or (os.path.lexists(current) and not os.path.isdir(current)):
            raise ReleaseError('%s is not a directory of the release (a file or a symlink); the shared path %r '
                               'cannot be linked below it' % (current, path))
        if not os.path.lexists(current):
            os.mkdir(current, DIR_MODE)
            os.chmod(current, DIR_MODE)
            os.lchown(current, uid, gid)
    return current


def unlinked(release_dir, shared_root, paths):
    """The shared paths whose link in ``release_dir`` is missing or points elsewhere."""
    missing = []
    for path in paths:
        link = os.path.join(release_dir, path)
        target = os.path.join(shared_root, path)
        if not (os.path.islink(link) and os.readlink(link) == target):
            missing.append(path)
    return missing


def link_shared(release_dir, shared_root, paths, uid, gid, discard):
    """Make each of ``paths`` in ``release_dir`` a symlink to ``shared_root``/PATH.

    What the release had there (the archive's copy) goes through ``discard``
    (the layout's remove-in-one-step). Returns the paths it linked.
    """
    linked = unlinked(release_dir, shared_root, paths)
    if not linked:
        return []
    if not os.path.isdir(shared_root):
        os.mkdir(shared_root, DIR_MODE)
        os.chmod(shared_root, DIR_MODE)
        os.lchown(shared_root, uid, gid)
    for path in linked:
        _ensure_dir(shared_root, path, uid, gid)
        _release_parent(release_dir, path, uid, gid)
        link = os.path.join(release_dir, path)
        tmp = link + _TMP_SUFFIX
        remove_path(tmp)
        os.symlink(os.path.join(shared_root, path), tmp)
        os.lchown(tmp, uid, gid)
        if os.path.isdir(link) and not os.path.islink(link):
            discard(link)     # rename(2) cannot replace a directory with a link
        os.rename(tmp, link)
    return linked
