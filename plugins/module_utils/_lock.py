# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout lock: one rollout (or rollback) per service at a time.

The lock is a small JSON file ``{owner, acquired, ttl, host, pid}`` plus what
its holder says about itself (INFO_KEYS).

Creation is atomic: the content is written to a private temporary file
first and then hard-linked to the lock path; ``link(2)`` fails if the path
exists, so of two racing runs exactly one wins and nobody ever sees a
half-written lock.  Replacing a lock (refresh by its owner, takeover of an
expired or corrupt one) writes a temporary file and ``rename(2)``s it over
the lock.

Every read-decide-write sequence holds an ``flock`` on a guard file beside
the lock (``.NAME.guard``, mode 0600, opened with O_NOFOLLOW) so that two
takeovers of the same expired lock cannot both succeed.  Only the lock's
user (root, normally) can open the guard, and it is taken with LOCK_NB and a
bounded retry: a flock on something a local user can open (the old design
locked the world-readable directory) let any user on the first balancer
block every rollout forever, or stall a running one at its lock refresh
while it had servers drained.  The directory is created 0700, and a lock
directory or parent that other users can write is refused, since they
could swap the lock or the guard under us.

Nothing read from the lock file is trusted: ``NaN``, ``1e999``, negative
times, truncated JSON, a link or a FIFO in its place make a *corrupt* lock,
reported by name, that a takeover (force, or its mtime older than the TTL)
replaces instead of crashing on.

The holder's run is identified by controller host name, machine id, boot
id, pid namespace, pid and the process's start time (``run_identity``), so
that ``holder_gone`` can prove a killed run gone without being fooled by a
recycled pid or by another machine or container with the same host name.

Time, host name, pid and the /proc root are injectable so the logic is
testable with a fake clock, a fake /proc and temporary directories.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import pwd
import socket
import stat
import time
import uuid

# The lock directory is created private: the lock says who rolls what out,
# and nothing in it is for other users (root reads it with sudo).
DIR_MODE = 0o700
FILE_MODE = 0o644
GUARD_MODE = 0o600
# Seconds to wait for the guard. Its holders keep it for milliseconds (one
# read and one write); waiting longer only hides a stuck process.
GUARD_TIMEOUT = 10.0
# A TTL beyond a year is nonsense in a lock file (it would hold forever);
# from the user it is refused, in a file it makes the lock corrupt.
MAX_TTL = 366 * 86400
# A lock is ~300 bytes; more is not one of ours and is not read whole.
MAX_LOCK_BYTES = 64 * 1024

# What a holder may say about itself (stored as given, shown to whoever finds
# the lock taken): its controller and process there (run_identity), the
# version it rolls out, its run id, and what it is doing (rollout, rollback).
INFO_KEYS = ("controller", "controller_machine", "controller_boot", "controller_pidns", "controller_pid",
             "controller_start", "version", "run", "action")

TAKEOVER_HINT = ("the rollout and rollback playbooks: -e canary_lock_takeover=true; "
                 "the rollout_lock module: force=true")


class LockError(Exception):
    """A lock operation that must fail; ``details`` go into the result."""

    def __init__(self, msg, **details):
        super(LockError, self).__init__(msg)
        self.msg = msg
        self.details = details


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(path, ttl, guard_timeout=GUARD_TIMEOUT):
    if not path or not isinstance(path, str):
        raise LockError("path must be a non-empty string, got %r" % (path,))
    if not os.path.isabs(path):
        raise LockError("path must be absolute, got %r" % (path,))
    if path.endswith(os.sep):
        raise LockError("path must name a file, not a directory: %r" % (path,))
    if ttl is not None and (not _is_int(ttl) or not 1 <= ttl <= MAX_TTL):
        raise LockError("ttl must be an integer of seconds from 1 to %d (a year), got %r" % (MAX_TTL, ttl))
    if isinstance(guard_timeout, bool) or not isinstance(guard_timeout, (int, float)) \
            or not 0 < guard_timeout <= 3600:
        raise LockError("guard_timeout must be a number of seconds above 0 and at most 3600, got %r"
                        % (guard_timeout,))


# ---------------------------------------------------------------- directory

def _user(uid):
    try:
        return "%d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return str(uid)


def check_directory(directory, euid=None):
    """Refuse a lock directory that another user could change, or one under such a parent.

    ``directory`` is a real path (no links). Every existing directory from
    ``/`` down to it must be owned by root or ``euid`` and not writable by
    group or others: who can write a directory can rename the lock, the
    guard or the directory itself away and put their own in its place. A
    parent with the sticky bit (``/tmp``) is the exception: others may add
    entries there but not move ours, and an entry of theirs on our path is
    caught by its owner. Missing directories (created later by us) end the
    walk.
    """
    euid = os.geteuid() if euid is None else euid
    parts = [d for d in directory.split(os.sep) if d]
    for depth in range(len(parts) + 1):
        here = os.sep + os.sep.join(parts[:depth])
        try:
            st = os.lstat(here)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise LockError("cannot inspect %s on the way to the lock directory %s: %s" % (here, directory, e)) from e
        mode = stat.S_IMODE(st.st_mode)
        last = depth == len(parts)
        if not stat.S_ISDIR(st.st_mode):
            raise LockError("%s, on the way to the lock directory %s, is not a directory (mode %04o); "
                            "choose another lock path (canary_lock_path)" % (here, directory, mode))
        others_write = mode & 0o022 and (last or not mode & stat.S_ISVTX)
        if st.st_uid not in (0, euid) or others_write:
            raise LockError(
                "%s %s is owned by uid %s with mode %04o: %s, so they could replace the lock or block every "
                "rollout. Make it owned by root%s and not writable by group or others "
                "(chown root %s; chmod go-w %s), or choose another lock path (canary_lock_path)" % (
                    "lock directory" if last else "parent directory", here, _user(st.st_uid), mode,
                    "other users can write it" if others_write else "its owner is another user",
                    " (or uid %d, who runs this)" % euid if euid else "", here, here),
                directory=here, directory_owner=st.st_uid, directory_mode="%04o" % mode)


def make_private_dirs(directory):
    """Create the missing directories with DIR_MODE regardless of the umask."""
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


def _prepare(path, check_mode, create):
    """(real lock path, its directory, whether the directory exists), the directory checked and maybe created.

    Links on the way are resolved once, here, and the real path used from
    then on, so a link cannot be re-pointed between the check and the use.
    """
    directory = os.path.realpath(os.path.dirname(path))
    real = os.path.join(directory, os.path.basename(path))
    check_directory(directory)
    if os.path.isdir(real):
        raise LockError("lock path %s is a directory; remove it or choose another lock path" % real)
    if os.path.isdir(directory):
        return real, directory, True
    if not create or check_mode:
        return real, directory, False
    try:
        make_private_dirs(directory)
    except OSError as e:
        raise LockError("cannot create the lock directory %s: %s" % (directory, e)) from e
    return real, directory, True


# ---------------------------------------------------------------- guard

def _proc_path(root, *parts):
    return os.path.join(root, "proc", *[str(p) for p in parts])


def _guard_holders(st, root="/"):
    """Who holds an flock on the file of stat ``st``, from /proc/locks: ['pid 123: cmdline', ...]."""
    wanted = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open(_proc_path(root, "locks"), "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        fields = line.split()
        # "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"; "N: -> ..." are waiters.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            holders.append("pid %s: %s" % (fields[4], _cmdline(int(fields[4]), root) or "(command line unreadable)"))
    return holders


class _Guard(object):
    """Exclusive flock on ``.NAME.guard`` beside the lock for one read-decide-write sequence."""

    def __init__(self, lock_path, timeout=GUARD_TIMEOUT, check_mode=False, monotonic=time.monotonic,
                 sleep=time.sleep):
        self.path = os.path.join(os.path.dirname(lock_path), ".%s.guard" % os.path.basename(lock_path))
        self.timeout = timeout
        self.check_mode = check_mode
        self.monotonic = monotonic
        self.sleep = sleep
        self.fd = None

    def __enter__(self):
        # Check mode creates nothing: without a guard yet, nobody has used
        # this lock since, and a read needs no guard.
        access = os.O_RDONLY if self.check_mode else os.O_RDWR | os.O_CREAT
        flags = access | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, GUARD_MODE)
        except OSError as e:
            if e.errno == errno.ENOENT and self.check_mode:
                return self
            if e.errno == errno.ELOOP:
                raise LockError("lock guard %s is a symbolic link, which no run of ours creates: remove it "
                                "(rm %s) and look for who put it there" % (self.path, self.path)) from e
            raise LockError("cannot open the lock guard %s: %s" % (self.path, e)) from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise LockError("lock guard %s is not a regular file of uid %d (owner uid %s, mode %06o): "
                                "remove it (rm %s)" % (self.path, os.geteuid(), _user(st.st_uid), st.st_mode,
                                                       self.path))
            if stat.S_IMODE(st.st_mode) != GUARD_MODE and not self.check_mode:
                # A guard others can open is one they can hold.
                os.fchmod(fd, GUARD_MODE)
            self._lock(fd, st)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _lock(self, fd, st):
        deadline = self.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    # No flock here (some network filesystems): the
                    # link/rename atomicity still stops two creators of a
                    # fresh lock; only racing takeovers are unguarded.
                    return
            left = deadline - self.monotonic()
            if left <= 0:
                holders = _guard_holders(st)
                raise LockError(
                    "lock guard %s is still held by another process after %ss (%s); a lock operation holds it for "
                    "milliseconds, so that process is stuck. End it (kill PID) and run again"
                    % (self.path, self.timeout,
                       "; ".join(holders) if holders else "no holder visible in /proc/locks from here"),
                    guard=self.path, guard_holders=holders)
            self.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


# ---------------------------------------------------------------- reading

def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(data, now):
    """What makes parsed lock content unusable, or None. Nothing is converted before it is checked."""
    if not isinstance(data, dict):
        return "not a JSON object"
    owner = data.get("owner")
    if not isinstance(owner, str) or not owner:
        return "owner %r is not a non-empty string" % (owner,)
    ttl = data.get("ttl")
    if not _is_int(ttl) or not 1 <= ttl <= MAX_TTL:
        return "ttl %r is not an integer of seconds from 1 to %d" % (ttl, MAX_TTL)
    acquired = data.get("acquired")
    if not _finite(acquired) or acquired < 0:
        return "acquired %r is not a time (a finite number of seconds since 1970)" % (acquired,)
    if acquired > now + ttl:
        # Written by the balancer's own clock: this far ahead it would hold
        # for more than twice its TTL.
        return "acquired %r is more than its ttl in the future (now %d)" % (acquired, now)
    return None


def _snippet(raw):
    text = raw[:120].decode("utf-8", "replace")
    return text + ("..." if len(raw) > 120 else "")


def read_lock(path, now):
    """Return the current lock as a dict, or None when there is no lock.

    A file this module cannot have written (bad JSON, impossible values, not
    a regular file) comes back with ``corrupt`` naming the problem, ``owner:
    None`` and its age from its mtime, so that it can still expire; it never
    raises for its content.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        if e.errno != errno.ELOOP:
            raise LockError("cannot read lock %s: %s" % (path, e)) from e
        return _corrupt(path, now, "a symbolic link, not a lock file")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _corrupt(path, now, "not a regular file (mode %06o)" % st.st_mode, st)
        raw = os.read(fd, MAX_LOCK_BYTES + 1)
    except OSError as e:
        raise LockError("cannot read lock %s: %s" % (path, e)) from e
    finally:
        os.close(fd)
    if len(raw) > MAX_LOCK_BYTES:
        return _corrupt(path, now, "larger than %d bytes" % MAX_LOCK_BYTES, st, raw)
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError is one
        return _corrupt(path, now, "not JSON (%s)" % e, st, raw)
    problem = _problem(data, now)
    if problem:
        return _corrupt(path, now, problem, st, raw)
    data = dict(data)
    data["age"] = now - data["acquired"]
    return data


def _corrupt(path, now, problem, st=None, raw=None):
    if st is None:
        st = os.lstat(path)
    lock = {"owner": None, "acquired": st.st_mtime, "ttl": None, "host": None, "pid": None,
            "corrupt": problem, "age": now - st.st_mtime}
    if raw is not None:
        lock["content"] = _snippet(raw)
    return lock


def is_expired(lock, now, default_ttl):
    ttl = lock.get("ttl")
    if ttl is None:
        ttl = default_ttl
    return now >= lock["acquired"] + ttl


def _public(lock):
    """The lock content as stored (without derived fields); for a corrupt one, what is wrong with it."""
    if lock is None:
        return {}
    optional = tuple(k for k in INFO_KEYS + ("corrupt", "content") if k in lock)
    keys = ("owner", "acquired", "ttl", "host", "pid") + optional
    return dict((k, lock.get(k)) for k in keys)


def _age(lock, now):
    return int(round(now - lock["acquired"]))


def _describe(lock, now):
    if lock.get("corrupt"):
        return "a corrupt lock file (%s; %ss old by its mtime)" % (lock["corrupt"], _age(lock, now))
    where = ("from controller %s (pid %s), " % (lock.get("controller"), lock.get("controller_pid"))
             if lock.get("controller") else "")
    doing = ("%s, " % lock["action"]) if isinstance(lock.get("action"), str) and lock.get("action") else ""
    version = ("rolling version %s, " % lock.get("version")) if lock.get("version") else ""
    return "owner %r (%s%s%slock written by host %s, pid %s) for %ss, ttl %ss" % (
        lock.get("owner"), where, doing, version, lock.get("host"), lock.get("pid"), _age(lock, now),
        lock.get("ttl"))


# ---------------------------------------------------------------- writing

def _write_tmp(path, content):
    directory = os.path.dirname(path)
    base = os.path.basename(path)
    # O_EXCL on a name unique to this process: no one else can write into it.
    for attempt in range(100):
        tmp = os.path.join(directory, ".%s.%d.%d.tmp" % (base, os.getpid(), attempt))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                continue
            raise
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, (json.dumps(content, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
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


def _content(owner, t, ttl, host, pid):
    return {"owner": owner, "acquired": int(t), "ttl": ttl, "host": host, "pid": pid}


# ---------------------------------------------------------------- acquire / release

def acquire(path, owner, ttl=3600, check_mode=False, now=None, host=None, pid=None, force=False, info=None,
            guard_timeout=GUARD_TIMEOUT):
    """Acquire (or refresh, or take over) the lock. Raises LockError if held.

    force: take over a live or corrupt lock of another owner (its holder is
    known to be gone, or the user said so). info: what the holder says about
    itself (INFO_KEYS), stored in the lock and shown to whoever finds it taken.
    """
    info = dict((k, v) for k, v in (info or {}).items() if k in INFO_KEYS and v not in (None, ""))
    _validate(path, ttl, guard_timeout)
    if not owner or not isinstance(owner, str):
        raise LockError("owner is required to acquire a lock, got %r" % (owner,))
    clock = now or time.time
    host = host if host is not None else socket.gethostname()
    pid = pid if pid is not None else os.getpid()
    path, directory, exists = _prepare(path, check_mode, create=True)

    result = {
        "changed": False, "acquired": False, "released": False, "took_over": False,
        "previous_owner": None, "previous_age": None, "refreshed": False, "path": path,
    }
    if not exists:
        content = dict(_content(owner, clock(), ttl, host, pid), **info)
        result.update(changed=True, acquired=True, lock=content,
                      msg="would create %s and acquire the lock for %r" % (directory, owner))
        return result

    with _Guard(path, guard_timeout, check_mode):
        # Two attempts: a lock released between our read and our create
        # simply means we try again once.
        for _attempt in range(2):
            t = clock()
            existing = read_lock(path, t)
            content = dict(_content(owner, t, ttl, host, pid), **info)
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
            expired = is_expired(existing, t, ttl)
            if force or expired:
                if not check_mode:
                    _replace_checked(path, content)
                kind = "corrupt" if existing.get("corrupt") else "expired" if expired else "live"
                result.update(changed=True, acquired=True, took_over=True, lock=content,
                              previous_owner=existing.get("owner"), previous_age=_age(existing, t),
                              previous_lock=_public(existing),
                              msg="%s the %s lock %s: %s" % ("would take over" if check_mode else "took over",
                                                             kind, path, _describe(existing, t)))
                return result
            raise _held(path, existing, t, ttl)
        raise LockError("lock %s changed while acquiring it; try again" % path)


def _held(path, existing, t, ttl):
    """The refusal for a live or corrupt lock of another owner: who, how old, and how to take it over."""
    if existing.get("corrupt"):
        remaining = int(math.ceil(existing["acquired"] + ttl - t))
        return LockError(
            "lock %s is corrupt (%s)%s, so no run can be shown to hold it. It is taken over once its file is older "
            "than the ttl (%ss, in %ss), or now with a takeover (%s); or remove the file by hand." % (
                path, existing["corrupt"],
                "; it holds %r" % existing["content"] if "content" in existing else "", ttl, remaining,
                TAKEOVER_HINT),
            lock=_public(existing), owner=None, age=_age(existing, t), expires_in=remaining, corrupt=existing["corrupt"])
    remaining = int(round(existing["acquired"] + existing["ttl"] - t))
    return LockError(
        "lock %s is held by %s; it expires in %ss. Wait, or take it over (%s) if that run is known to be dead."
        % (path, _describe(existing, t), remaining, TAKEOVER_HINT),
        lock=_public(existing), owner=existing.get("owner"), age=_age(existing, t), expires_in=remaining)


def release(path, owner=None, force=False, check_mode=False, now=None, guard_timeout=GUARD_TIMEOUT):
    """Release the lock if it is ours (or with force). Never raises for 'not ours'."""
    _validate(path, None, guard_timeout)
    if not force and not owner:
        raise LockError("releasing a lock needs owner (or force=true)")
    clock = now or time.time
    path, _directory, exists = _prepare(path, check_mode, create=False)
    result = {
        "changed": False, "acquired": False, "released": False, "took_over": False,
        "previous_owner": None, "previous_age": None, "path": path, "lock": {},
    }
    if not exists:
        result["msg"] = "no lock at %s" % path
        return result
    with _Guard(path, guard_timeout, check_mode):
        t = clock()
        existing = read_lock(path, t)
        if existing is None:
            result["msg"] = "no lock at %s" % path
            return result
        result["lock"] = _public(existing)
        result["previous_owner"] = existing.get("owner")
        result["previous_age"] = _age(existing, t)
        if (existing.get("owner") != owner or existing.get("corrupt")) and not force:
            # Not ours (taken over after expiry, never ours, or unreadable):
            # leave it, releasing someone else's lock would let a third run in.
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


# ---------------------------------------------------------------- who holds it

def _read_first_line(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.readline(256).strip()
    except OSError:
        return ""


def _proc_stat(pid, root="/"):
    """(ppid, start time in clock ticks since boot) of ``pid``, or None when there is no such process."""
    try:
        with open(_proc_path(root, pid, "stat"), "rb") as f:
            data = f.read()
        # The command name (field 2) may hold spaces and ')': the fields
        # after it start after its last ')'. Field 4 is the ppid, 22 the start.
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid, root="/"):
    try:
        with open(_proc_path(root, pid, "cmdline"), "rb") as f:
            raw = f.read(4096)
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")[:200]


def _here(root="/", hostname=None):
    """The controller this code runs on, and the pid namespace its pids are numbers of."""
    try:
        pidns = os.readlink(_proc_path(root, "self", "ns", "pid"))
    except OSError:
        pidns = ""
    return {
        "controller": hostname if hostname is not None else socket.gethostname(),
        # Cloned images share a machine id, and containers their kernel's
        # boot id: neither alone names a controller, together with the pid
        # namespace they scope a pid to one kernel boot and one namespace.
        "controller_machine": (_read_first_line(os.path.join(root, "etc", "machine-id"))
                               or _read_first_line(os.path.join(root, "var", "lib", "dbus", "machine-id"))),
        "controller_boot": _read_first_line(_proc_path(root, "sys", "kernel", "random", "boot_id")),
        "controller_pidns": pidns,
    }


def controller_identity(pid, root="/", hostname=None):
    """What identifies process ``pid`` of this controller beyond doubt, for a lock's info.

    Host name, machine id, boot id and pid namespace say where; the pid and
    its start time (ticks since boot, /proc/PID/stat) say which process, so
    a later process that got the same pid is not taken for it.
    """
    info = _here(root, hostname)
    ps = _proc_stat(pid, root) if _is_int(pid) and pid > 0 else None
    info.update(controller_pid=pid if ps else None, controller_start=ps[1] if ps else None)
    return dict((k, v) for k, v in info.items() if v not in (None, ""))


def run_identity(pid, user=None, run_id=None, root="/", hostname=None):
    """(owner, info) of one run whose controller process is ``pid``: the rollout and the rollback both use it.

    One owner per run (two launches of the same job are two owners): user,
    controller, pid and a random run id; the info says where the run lives
    so that a later run can prove it gone (holder_gone).
    """
    info = controller_identity(pid, root, hostname)
    info["run"] = run_id or uuid.uuid4().hex[:8]
    owner = "%s@%s%s run %s" % (user or "ansible", info["controller"],
                                " pid %s" % info["controller_pid"] if "controller_pid" in info else "", info["run"])
    return owner, info


def holder_gone(lock, root="/", hostname=None):
    """True only when the lock's run provably ended: it lived on this controller, in this boot and pid
    namespace, and its process is gone or the pid now belongs to a process started at another time.

    Anything unknown (another controller, another boot, a lock without the
    full identity, /proc unreadable) is False: a live run must never be
    taken for a dead one; the lock's TTL or an explicit takeover remain.
    """
    if not isinstance(lock, dict):
        return False
    pid, start = lock.get("controller_pid"), lock.get("controller_start")
    if not _is_int(pid) or pid <= 1 or not _is_int(start):
        return False
    here = _here(root, hostname)
    if not here["controller_boot"] or not here["controller_pidns"]:
        return False
    # An id this controller lacks (no machine id in many containers) is left
    # out of the lock too: compare absent as empty.
    if any((lock.get(key) or "") != value for key, value in here.items()):
        return False
    ps = _proc_stat(pid, root)
    if ps is None:
        return not os.path.exists(_proc_path(root, pid))
    return ps[1] != start


def playbook_pid(start=None, root="/"):
    """The pid of the ansible-playbook process whose task runs this code on the controller, or None.

    A module delegated to localhost runs under a worker process that
    ansible-playbook forked for the task, so the worker and its parent have
    the same command line; between the module and the worker there are only
    shells (and sudo). The topmost of the first such pair of ancestors is the
    run. (An action plugin runs in the worker itself: its os.getppid().)
    """
    chain = []
    pid = os.getpid() if start is None else start
    while pid > 1 and len(chain) < 64:
        ps = _proc_stat(pid, root)
        if ps is None:
            break
        chain.append((pid, _cmdline(pid, root)))
        pid = ps[0]
    for i in range(len(chain) - 1):
        cmd = chain[i][1]
        if cmd and chain[i + 1][1] == cmd:
            j = i + 1
            while j + 1 < len(chain) and chain[j + 1][1] == cmd:
                j += 1
            return chain[j][0]
    return None


# ---------------------------------------------------------------- the module

def run_module(module):
    """Entry point for plugins/modules/rollout_lock.py."""
    p = module.params
    guard_timeout = p.get("guard_timeout", GUARD_TIMEOUT)
    try:
        if p["state"] == "identity":
            owner, info = run_identity(playbook_pid(), os.environ.get("USER"))
            result = {"changed": False, "acquired": False, "released": False, "took_over": False,
                      "previous_owner": None, "previous_age": None, "path": p.get("path"), "lock": {},
                      "identity": {"owner": owner, "info": info},
                      "msg": "this run is %s" % owner}
        elif p["state"] == "present":
            result = acquire(p["path"], p["owner"], ttl=p["ttl"], check_mode=module.check_mode,
                             force=p["force"], info=p.get("info"), guard_timeout=guard_timeout)
        else:
            result = release(p["path"], owner=p["owner"], force=p["force"],
                             check_mode=module.check_mode, guard_timeout=guard_timeout)
            if result.get("held_by_other"):
                module.warn(result["msg"])
    except LockError as e:
        module.fail_json(msg=e.msg, **e.details)
    module.exit_json(**result)
