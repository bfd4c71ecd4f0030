# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout lock: one rollout per service at a time.

The lock is a small JSON file ``{owner, acquired, ttl, host, pid}``.

Creation is atomic: the content is written to a private temporary file
first and then hard-linked to the lock path; ``link(2)`` fails if the path
exists, so of two racing rollouts exactly one wins and nobody ever sees a
half-written lock.  Replacing a lock (refresh by its owner, takeover of an
expired one) writes a temporary file and ``rename(2)``s it over the lock.
Every read-decide-write sequence also holds an ``flock`` on the lock's
directory so that two takeovers of the same expired lock cannot both
succeed (best effort: filesystems without flock still get the atomic
create).

Time, host name and pid are injectable so the logic is testable with a fake
clock and temporary directories.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

# Parent directories are created world-readable so operators can inspect
# who holds a lock without root.
DIR_MODE = 0o755
FILE_MODE = 0o644


class LockError(Exception):
    """A lock operation that must fail; ``details`` go into the result."""

    def __init__(self, msg, **details):
        super(LockError, self).__init__(msg)
        self.msg = msg
        self.details = details


def _validate(path, ttl):
    if not path or not isinstance(path, str):
        raise LockError("path must be a non-empty string, got %r" % (path,))
    if not os.path.isabs(path):
        raise LockError("path must be absolute, got %r" % (path,))
    if path.endswith(os.sep):
        raise LockError("path must name a file, not a directory: %r" % (path,))
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise LockError("ttl must be an integer >= 1 (seconds), got %r" % (ttl,))


def _makedirs(directory):
    """Create missing parents with mode 0755 regardless of the umask."""
    missing = []
    d = directory
    while d and not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        else:
            os.chmod(d, DIR_MODE)
    return bool(missing)


def read_lock(path, now):
    """Return the current lock as a dict, or None when there is no lock.

    An unparsable file (not written by this module, which never leaves a
    partial file) is reported with ``owner: None``; its age comes from the
    file's mtime so that it can still expire.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            raw = f.read()
        st = os.stat(path)
    except (IOError, OSError) as e:
        if e.errno == errno.ENOENT:
            return None
        raise LockError("cannot read lock %s: %s" % (path, e)) from e
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        acquired = float(data["acquired"])
        ttl = int(data["ttl"])
    except (ValueError, KeyError, TypeError):
        return {
            "owner": None,
            "acquired": st.st_mtime,
            "ttl": None,
            "host": None,
            "pid": None,
            "corrupt": True,
            "age": now - st.st_mtime,
        }
    data = dict(data)
    data["acquired"] = acquired
    data["ttl"] = ttl
    data["age"] = now - acquired
    return data


def is_expired(lock, now, default_ttl):
    ttl = lock.get("ttl")
    if ttl is None:
        ttl = default_ttl
    return now >= lock["acquired"] + ttl


# What a holder may say about itself (stored as given, shown to whoever finds
# the lock taken): the controller it runs on, its process there, the version.
INFO_KEYS = ("controller", "controller_pid", "version", "run")


def _public(lock):
    """The lock content as stored (without derived fields)."""
    if lock is None:
        return {}
    keys = ("owner", "acquired", "ttl", "host", "pid") + tuple(k for k in INFO_KEYS if k in lock)
    return dict((k, lock.get(k)) for k in keys)


def _age(lock, now):
    return int(round(now - lock["acquired"]))


def _describe(lock, now):
    if lock.get("corrupt"):
        return "an unreadable lock file (age %ss by its mtime)" % _age(lock, now)
    where = ("from controller %s (pid %s), " % (lock.get("controller"), lock.get("controller_pid"))
             if lock.get("controller") else "")
    version = ("rolling version %s, " % lock.get("version")) if lock.get("version") else ""
    return "owner %r (%s%slock written by host %s, pid %s) for %ss, ttl %ss" % (
        lock.get("owner"), where, version, lock.get("host"), lock.get("pid"), _age(lock, now), lock.get("ttl"))


def _write_tmp(path, content):
    directory = os.path.dirname(path)
    base = os.path.basename(path)
    # O_EXCL on a name unique to this process: no one else can write into it.
    for attempt in range(100):
        tmp = os.path.join(directory, ".%s.%d.%d.tmp" % (base, os.getpid(), attempt))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                continue
            raise
        try:
            os.write(fd, (json.dumps(content, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, FILE_MODE)
        return tmp
    raise LockError("cannot create a temporary file next to %s" % path)


def _create(path, content):
    """Create the lock if it does not exist. False when someone else has it."""
    tmp = _write_tmp(path, content)
    try:
        os.link(tmp, path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        raise
    finally:
        os.unlink(tmp)
    return True


def _replace(path, content):
    tmp = _write_tmp(path, content)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


class _DirGuard(object):
    """flock on the lock's directory for one read-decide-write sequence."""

    def __init__(self, directory):
        self.directory = directory
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.directory, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            # No flock here (some network filesystems): the link/rename
            # atomicity still prevents two creators of a fresh lock.
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
        return False


def acquire(path, owner, ttl=3600, check_mode=False, now=None, host=None, pid=None, force=False, info=None):
    """Acquire (or refresh, or take over) the lock. Raises LockError if held.

    force: take over a live lock of another owner (its holder is known to be
    gone, or the user said so). info: what the holder says about itself
    (INFO_KEYS), stored in the lock and shown to whoever finds it taken.
    """
    info = dict((k, v) for k, v in (info or {}).items() if k in INFO_KEYS and v not in (None, ""))
    _validate(path, ttl)
    if not owner or not isinstance(owner, str):
        raise LockError("owner is required to acquire a lock, got %r" % (owner,))
    clock = now or time.time
    host = host if host is not None else socket.gethostname()
    pid = pid if pid is not None else os.getpid()
    directory = os.path.dirname(path)

    result = {
        "changed": False, "acquired": False, "released": False, "took_over": False,
        "previous_owner": None, "previous_age": None, "refreshed": False, "path": path,
    }

    if not os.path.isdir(directory):
        if check_mode:
            result.update(changed=True, acquired=True, lock=_content(owner, clock(), ttl, host, pid),
                          msg="would create %s and acquire the lock for %r" % (directory, owner))
            return result
        try:
            _makedirs(directory)
        except OSError as e:
            raise LockError("cannot create the lock directory %s: %s" % (directory, e)) from e
    elif os.path.isdir(path):
        raise LockError("lock path %s is a directory" % path)

    with _DirGuard(directory):
        # Two attempts: a lock released between our read and our create
        # simply means we try again once.
        for _attempt in range(2):
            t = clock()
            existing = read_lock(path, t)
            content = _content(owner, t, ttl, host, pid)
            content.update(info)
            if existing is None:
                if check_mode:
                    result.update(changed=True, acquired=True, lock=content,
                                  msg="would acquire the lock for %r" % owner)
                    return result
                if _create_checked(path, content):
                    result.update(changed=True, acquired=True, lock=content,
                                  msg="acquired the lock for %r" % owner)
                    return result
                continue
            if existing.get("owner") == owner and not existing.get("corrupt"):
                if not check_mode:
                    _replace_checked(path, content)
                result.update(changed=True, acquired=True, refreshed=True, lock=content,
                              previous_age=_age(existing, t),
                              msg="%s the lock of %r (held for %ss)" % (
                                  "would refresh" if check_mode else "refreshed", owner, _age(existing, t)))
                return result
            if force or is_expired(existing, t, ttl):
                if not check_mode:
                    _replace_checked(path, content)
                result.update(changed=True, acquired=True, took_over=True, lock=content,
                              previous_owner=existing.get("owner"), previous_age=_age(existing, t),
                              previous_lock=_public(existing),
                              msg="%s %s lock of %s" % (
                                  "would take over the" if check_mode else "took over the",
                                  "live" if not is_expired(existing, t, ttl) else "expired",
                                  _describe(existing, t)))
                return result
            remaining = int(round(existing["acquired"] + (existing.get("ttl") or ttl) - t))
            raise LockError(
                "lock %s is held by %s; it expires in %ss. Wait, or take it over (the rollout: "
                "-e canary_lock_takeover=true; this module: force=true) if that rollout is known to be dead."
                % (path, _describe(existing, t), remaining),
                lock=_public(existing), owner=existing.get("owner"), age=_age(existing, t),
                expires_in=remaining)
        raise LockError("lock %s changed while acquiring it; try again" % path)


def _content(owner, t, ttl, host, pid):
    return {"owner": owner, "acquired": int(t), "ttl": ttl, "host": host, "pid": pid}


def _create_checked(path, content):
    try:
        return _create(path, content)
    except OSError as e:
        raise LockError("cannot create lock %s: %s" % (path, e)) from e


def _replace_checked(path, content):
    try:
        _replace(path, content)
    except OSError as e:
        raise LockError("cannot write lock %s: %s" % (path, e)) from e


def release(path, owner=None, force=False, check_mode=False, now=None):
    """Release the lock if it is ours (or with force). Never raises for 'not ours'."""
    _validate(path, None)
    if not force and not owner:
        raise LockError("releasing a lock needs owner (or force=true)")
    clock = now or time.time
    result = {
        "changed": False, "acquired": False, "released": False, "took_over": False,
        "previous_owner": None, "previous_age": None, "path": path, "lock": {},
    }
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        result["msg"] = "no lock at %s" % path
        return result
    with _DirGuard(directory):
        t = clock()
        existing = read_lock(path, t)
        if existing is None:
            result["msg"] = "no lock at %s" % path
            return result
        result["lock"] = _public(existing)
        result["previous_owner"] = existing.get("owner")
        result["previous_age"] = _age(existing, t)
        if existing.get("owner") != owner and not force:
            # Not ours (taken over after expiry, or never ours): leave it,
            # releasing someone else's lock would let a third rollout in.
            result["msg"] = "lock %s is held by %s, not %r: left in place" % (
                path, _describe(existing, t), owner)
            result["held_by_other"] = True
            return result
        if not check_mode:
            try:
                os.unlink(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise LockError("cannot remove lock %s: %s" % (path, e)) from e
        result.update(changed=True, released=True,
                      msg="%s the lock of %s" % ("would release" if check_mode else "released",
                                                 _describe(existing, t)))
        return result


def run_module(module):
    """Entry point for plugins/modules/rollout_lock.py."""
    p = module.params
    try:
        if p["state"] == "present":
            result = acquire(p["path"], p["owner"], ttl=p["ttl"], check_mode=module.check_mode,
                             force=p["force"], info=p.get("info"))
        else:
            result = release(p["path"], owner=p["owner"], force=p["force"],
                             check_mode=module.check_mode)
            if result.get("held_by_other"):
                module.warn(result["msg"])
    except LockError as e:
        module.fail_json(msg=e.msg, **e.details)
    module.exit_json(**result)
