# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of grayrelease.canary.rollout_lock, on temporary dirs with a fake clock."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils import _lock
from ansible_collections.grayrelease.canary.plugins.module_utils._lock import (
    LockError, acquire, release)


class Clock(object):
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lock_path(tmp_path):
    return str(tmp_path / "var" / "lib" / "gr" / "demoapp.lock")


def _read(path):
    with open(path) as f:
        return json.load(f)


def _acq(path, owner, clock, **kw):
    kw.setdefault("host", "lb1")
    kw.setdefault("pid", 4242)
    return acquire(path, owner, now=clock, **kw)


def test_acquire_creates_parents_and_writes_content(lock_path, clock):
    old_umask = os.umask(0o077)
    try:
        r = _acq(lock_path, "alice", clock, ttl=600)
    finally:
        os.umask(old_umask)
    assert r["changed"] and r["acquired"] and not r["took_over"]
    assert _read(lock_path) == {"owner": "alice", "acquired": 1000000, "ttl": 600,
                                "host": "lb1", "pid": 4242}
    assert r["lock"] == _read(lock_path)
    for d in (os.path.dirname(lock_path), os.path.dirname(os.path.dirname(lock_path))):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert os.stat(d).st_uid == os.geteuid()
    # no temporary files left behind; the guard stays (unlinking it would let
    # a waiter and a newcomer lock two different files)
    assert sorted(os.listdir(os.path.dirname(lock_path))) == [".demoapp.lock.guard", "demoapp.lock"]


def test_live_lock_of_other_owner_fails_with_owner_and_age(lock_path, clock):
    _acq(lock_path, "alice", clock, ttl=600)
    clock.t += 125
    with pytest.raises(LockError) as e:
        _acq(lock_path, "bob", clock)
    assert "alice" in e.value.msg and "125s" in e.value.msg
    assert e.value.details["owner"] == "alice"
    assert e.value.details["age"] == 125
    assert e.value.details["expires_in"] == 475
    assert _read(lock_path)["owner"] == "alice"


def test_holder_ttl_applies_not_the_requesters(lock_path, clock):
    _acq(lock_path, "alice", clock, ttl=600)
    clock.t += 601
    # bob asks with a much longer ttl: alice's 600 s still decide expiry
    r = _acq(lock_path, "bob", clock, ttl=99999)
    assert r["took_over"] and r["previous_owner"] == "alice" and r["previous_age"] == 601
    assert r["previous_lock"]["owner"] == "alice"
    assert _read(lock_path)["owner"] == "bob"
    assert _read(lock_path)["ttl"] == 99999


def test_expiry_boundary(lock_path, clock):
    _acq(lock_path, "alice", clock, ttl=10)
    clock.t += 9.9
    with pytest.raises(LockError):
        _acq(lock_path, "bob", clock)
    clock.t += 0.1
    assert _acq(lock_path, "bob", clock)["took_over"]


def test_reacquire_own_lock_refreshes(lock_path, clock):
    _acq(lock_path, "alice", clock, ttl=60)
    clock.t += 50
    r = _acq(lock_path, "alice", clock, ttl=60)
    assert r["changed"] and r["acquired"] and r["refreshed"] and not r["took_over"]
    assert r["previous_age"] == 50
    assert _read(lock_path)["acquired"] == 1000050
    clock.t += 50  # 100 s after the first acquisition, 50 after the refresh
    with pytest.raises(LockError):
        _acq(lock_path, "bob", clock)


def test_check_mode_changes_nothing(lock_path, clock):
    r = _acq(lock_path, "alice", clock, check_mode=True)
    assert r["changed"] and r["acquired"] and "would" in r["msg"]
    assert not os.path.exists(os.path.dirname(lock_path))

    _acq(lock_path, "alice", clock, ttl=10)
    before = _read(lock_path)
    clock.t += 20
    r = _acq(lock_path, "bob", clock, check_mode=True)
    assert r["took_over"] and r["previous_owner"] == "alice"
    assert _read(lock_path) == before
    r = _acq(lock_path, "alice", clock, check_mode=True)
    assert r["refreshed"] and _read(lock_path) == before
    r = release(lock_path, owner="alice", check_mode=True, now=clock)
    assert r["released"] and r["changed"] and _read(lock_path) == before


def test_check_mode_still_fails_on_live_lock(lock_path, clock):
    _acq(lock_path, "alice", clock)
    with pytest.raises(LockError):
        _acq(lock_path, "bob", clock, check_mode=True)


def test_release_only_by_owner_unless_forced(lock_path, clock):
    _acq(lock_path, "alice", clock)
    clock.t += 7
    r = release(lock_path, owner="bob", now=clock)
    assert not r["changed"] and not r["released"] and r["held_by_other"]
    assert "alice" in r["msg"] and os.path.exists(lock_path)
    r = release(lock_path, owner="alice", now=clock)
    assert r["changed"] and r["released"] and r["previous_owner"] == "alice"
    assert r["previous_age"] == 7 and r["lock"]["owner"] == "alice"
    assert not os.path.exists(lock_path)
    # releasing again is a no-op, not an error
    r = release(lock_path, owner="alice", now=clock)
    assert not r["changed"] and not r["released"]

    _acq(lock_path, "alice", clock)
    r = release(lock_path, force=True, now=clock)
    assert r["released"] and not os.path.exists(lock_path)


def test_release_without_owner_or_force_is_an_error(lock_path, clock):
    _acq(lock_path, "alice", clock)
    with pytest.raises(LockError, match="owner"):
        release(lock_path, now=clock)
    assert os.path.exists(lock_path)


def test_release_with_missing_directory(tmp_path, clock):
    r = release(str(tmp_path / "nope" / "x.lock"), owner="a", now=clock)
    assert not r["changed"] and not r["released"]


def test_corrupt_lock_blocks_until_its_mtime_ages_past_ttl(lock_path, clock):
    os.makedirs(os.path.dirname(lock_path))
    with open(lock_path, "w") as f:
        f.write("garbage{")
    mtime = os.stat(lock_path).st_mtime
    clock.t = mtime + 5
    with pytest.raises(LockError, match=r"corrupt \(not JSON.*'garbage\{'.*in 95s"):
        _acq(lock_path, "bob", clock, ttl=100)
    # the owner of an unreadable lock is unknown: nobody can "refresh" it
    with pytest.raises(LockError):
        _acq(lock_path, "None", clock, ttl=100)
    clock.t = mtime + 100
    r = _acq(lock_path, "bob", clock, ttl=100)
    assert r["took_over"] and r["previous_owner"] is None
    assert _read(lock_path)["owner"] == "bob"


@pytest.mark.parametrize("kwargs, match", [
    (dict(path="relative/x.lock", owner="a"), "absolute"),
    (dict(path="", owner="a"), "path"),
    (dict(path="/tmp/x/", owner="a"), "directory"),
    (dict(path="/tmp/x.lock", owner=""), "owner"),
    (dict(path="/tmp/x.lock", owner=None), "owner"),
    (dict(path="/tmp/x.lock", owner="a", ttl=0), "ttl.*0"),
    (dict(path="/tmp/x.lock", owner="a", ttl=-5), "-5"),
    (dict(path="/tmp/x.lock", owner="a", ttl="60"), "'60'"),
])
def test_bad_arguments_name_the_value(kwargs, match, clock):
    with pytest.raises(LockError, match=match):
        acquire(now=clock, **kwargs)


def test_lock_path_that_is_a_directory(tmp_path, clock):
    d = tmp_path / "x.lock"
    d.mkdir()
    with pytest.raises(LockError, match="is a directory"):
        _acq(str(d), "a", clock)


def test_a_file_on_the_way_fails_cleanly_naming_it(tmp_path, clock):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LockError, match=r"%s, on the way to .* is not a directory" % re.escape(str(f))):
        _acq(str(f / "sub" / "x.lock"), "a", clock)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_fails_cleanly(tmp_path, clock):
    d = tmp_path / "ro"
    d.mkdir(mode=0o555)
    with pytest.raises(LockError, match="cannot create the lock directory"):
        _acq(str(d / "sub" / "x.lock"), "a", clock)


def test_create_race_exactly_one_winner(tmp_path):
    """Many threads race for a free lock: exactly one acquires it."""
    path = str(tmp_path / "race.lock")
    results = []
    errors = []
    barrier = threading.Barrier(16)

    def worker(i):
        barrier.wait(timeout=10)
        try:
            results.append(acquire(path, "owner-%d" % i, ttl=60, host="h", pid=i))
        except LockError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 1 and len(errors) == 15
    assert _read(path)["owner"] == results[0]["lock"]["owner"]


def test_takeover_race_exactly_one_winner(tmp_path):
    """An expired lock found by many at once is taken over by exactly one."""
    path = str(tmp_path / "race.lock")
    clock = Clock(1000.0)
    acquire(path, "dead", ttl=10, now=clock, host="h", pid=1)
    clock.t = 2000.0
    results, errors = [], []
    barrier = threading.Barrier(12)

    def worker(i):
        barrier.wait(timeout=10)
        try:
            results.append(acquire(path, "owner-%d" % i, ttl=60, now=clock, host="h", pid=i))
        except LockError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 1 and len(errors) == 11
    assert results[0]["took_over"] and results[0]["previous_owner"] == "dead"
    assert all("owner-" in e.details["owner"] for e in errors)


def test_link_failure_when_lock_appears_between_read_and_create(lock_path, clock, monkeypatch):
    """A lock created after our read (a writer that bypassed the directory flock,
    e.g. on a filesystem without flock) loses us the link race: re-read, then fail."""
    real_read = _lock.read_lock
    calls = []

    def racing_read(path, now):
        r = real_read(path, now)
        if not calls:
            calls.append(1)
            _lock._create(path, _lock._content("sneaky", clock(), 60, "x", 1))
        return r

    monkeypatch.setattr(_lock, "read_lock", racing_read)
    with pytest.raises(LockError, match="sneaky"):
        _acq(lock_path, "alice", clock)
    assert _read(lock_path)["owner"] == "sneaky"


class FakeModule(object):
    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)

    def fail_json(self, **kw):
        raise SystemExit(("fail", kw))

    def exit_json(self, **kw):
        raise SystemExit(("exit", kw))


def _run(params, check_mode=False):
    m = FakeModule(dict(dict(state="present", owner=None, ttl=3600, force=False), **params), check_mode)
    with pytest.raises(SystemExit) as e:
        _lock.run_module(m)
    return e.value.args[0], m


def test_run_module_paths(lock_path):
    (kind, r), _m = _run(dict(path=lock_path, owner="alice"))
    assert kind == "exit" and r["acquired"]
    (kind, r), _m = _run(dict(path=lock_path, owner="bob"))
    assert kind == "fail" and r["owner"] == "alice" and "alice" in r["msg"]
    (kind, r), m = _run(dict(path=lock_path, owner="bob", state="absent"))
    assert kind == "exit" and not r["released"] and m.warnings
    (kind, r), _m = _run(dict(path=lock_path, owner="alice", state="absent"))
    assert kind == "exit" and r["released"]


def test_force_takes_over_a_live_lock_and_info_names_the_holder(tmp_path):
    from ansible_collections.grayrelease.canary.plugins.module_utils._lock import LockError, acquire
    path = str(tmp_path / 'l' / 'demo.lock')
    acquire(path, 'alice run 1', ttl=600, now=lambda: 1000.0, host='lb1', pid=1,
            info={'controller': 'ctl-a', 'controller_pid': 4242, 'version': 'v2', 'junk': 'dropped'})
    with pytest.raises(LockError) as err:
        acquire(path, 'bob run 2', ttl=600, now=lambda: 1010.0, host='lb1', pid=2)
    assert 'from controller ctl-a (pid 4242)' in err.value.msg and 'rolling version v2' in err.value.msg
    assert 'canary_lock_takeover=true' in err.value.msg
    assert err.value.details['lock']['controller_pid'] == 4242 and 'junk' not in err.value.details['lock']
    res = acquire(path, 'bob run 2', ttl=600, now=lambda: 1020.0, host='lb1', pid=2, force=True)
    assert res['took_over'] and res['previous_owner'] == 'alice run 1' and 'live' in res['msg']


# ---------------------------------------------------------------- the guard: bounded, private

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | (os.O_CREAT if not os.path.isdir(sys.argv[1]) else 0), 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def holder():
    """Start a process that flocks a path for some seconds; the processes end with the test."""
    procs = []

    def start(path, seconds=60.0):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, path, str(seconds)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _guard(lock_path):
    return os.path.join(os.path.dirname(lock_path), "." + os.path.basename(lock_path) + ".guard")


def test_guard_held_by_another_process_fails_in_bounded_time_naming_it(lock_path, clock, holder):
    _acq(lock_path, "alice", clock)
    proc = holder(_guard(lock_path))
    t0 = time.monotonic()
    with pytest.raises(LockError) as err:
        _acq(lock_path, "bob", clock, guard_timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert _guard(lock_path) in err.value.msg and "after 0.5s" in err.value.msg
    # who holds it, from /proc/locks, and what to do
    assert "pid %d: " % proc.pid in err.value.msg and "kill" in err.value.msg
    assert err.value.details["guard_holders"] and err.value.details["guard"] == _guard(lock_path)
    # the owner's refresh and release are bounded the same way
    with pytest.raises(LockError, match="still held"):
        _acq(lock_path, "alice", clock, guard_timeout=0.2)
    with pytest.raises(LockError, match="still held"):
        release(lock_path, owner="alice", now=clock, guard_timeout=0.2)
    assert _read(lock_path)["owner"] == "alice"


def test_guard_held_briefly_is_waited_for(lock_path, clock, holder):
    _acq(lock_path, "alice", clock)
    holder(_guard(lock_path), seconds=0.3)
    r = _acq(lock_path, "alice", clock, guard_timeout=10)
    assert r["refreshed"]


def test_flock_on_the_lock_directory_blocks_nothing(lock_path, clock, holder):
    """What any local user could do to the old world-readable directory: it no longer stalls a run."""
    _acq(lock_path, "alice", clock)
    holder(os.path.dirname(lock_path))
    done = []
    worker = threading.Thread(target=lambda: done.append(_acq(lock_path, "alice", clock)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert done and done[0]["refreshed"]


def test_lock_directory_and_guard_are_private(lock_path, clock):
    _acq(lock_path, "alice", clock)
    directory = os.path.dirname(lock_path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(_guard(lock_path)).st_mode) == 0o600
    if os.geteuid() != 0:
        return
    # An unprivileged user can open neither the guard nor the directory.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setgid(65534)
            os.setuid(65534)
            for path in (_guard(lock_path), directory):
                try:
                    os.close(os.open(path, os.O_RDONLY))
                    code |= 1
                except PermissionError:
                    pass
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_loose_guard_is_tightened_and_a_guard_link_refused(lock_path, clock, tmp_path):
    _acq(lock_path, "alice", clock)
    os.chmod(_guard(lock_path), 0o666)
    _acq(lock_path, "alice", clock)
    assert stat.S_IMODE(os.stat(_guard(lock_path)).st_mode) == 0o600

    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.unlink(_guard(lock_path))
    os.symlink(str(target), _guard(lock_path))
    with pytest.raises(LockError, match=r"guard .* is a symbolic link.*rm "):
        _acq(lock_path, "alice", clock)
    assert target.read_text() == "keep"


def test_check_mode_creates_no_guard(lock_path, clock):
    os.makedirs(os.path.dirname(lock_path), 0o700)
    r = _acq(lock_path, "alice", clock, check_mode=True)
    assert r["acquired"] and os.listdir(os.path.dirname(lock_path)) == []


# ---------------------------------------------------------------- directories other users can change

@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_lock_directory_writable_by_others_is_refused_by_name(lock_path, clock, mode):
    directory = os.path.dirname(lock_path)
    os.makedirs(directory)
    os.chmod(directory, mode)
    with pytest.raises(LockError) as err:
        _acq(lock_path, "alice", clock)
    msg = err.value.msg
    assert "lock directory %s is owned by uid %d" % (directory, os.geteuid()) in msg
    assert "mode %04o" % mode in msg and "chmod go-w %s" % directory in msg
    assert err.value.details["directory_mode"] == "%04o" % mode
    assert not os.path.exists(lock_path)
    # check mode says so too, and a release is refused alike
    with pytest.raises(LockError, match="other users can write it"):
        _acq(lock_path, "alice", clock, check_mode=True)
    with pytest.raises(LockError, match="other users can write it"):
        release(lock_path, owner="alice", now=clock)


def test_parent_writable_by_others_is_refused_unless_sticky(lock_path, clock):
    parent = os.path.dirname(os.path.dirname(lock_path))
    os.makedirs(parent)
    os.chmod(parent, 0o777)
    with pytest.raises(LockError, match=r"parent directory %s is owned .* mode 0777" % re.escape(parent)):
        _acq(lock_path, "alice", clock)
    assert not os.path.exists(os.path.dirname(lock_path))
    # /tmp-like: others may add entries but not move ours
    os.chmod(parent, 0o1777)
    assert _acq(lock_path, "alice", clock)["acquired"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_lock_directory_of_another_user_is_refused(lock_path, clock):
    directory = os.path.dirname(lock_path)
    os.makedirs(directory, 0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(LockError, match=r"owned by uid 65534.*its owner is another user"):
        _acq(lock_path, "alice", clock)
    assert os.listdir(directory) == []


def test_linked_lock_directory_is_judged_and_used_by_its_real_path(tmp_path, clock):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    r = _acq(str(link / "demo.lock"), "alice", clock)
    assert r["path"] == str(real / "demo.lock") and _read(str(real / "demo.lock"))["owner"] == "alice"
    os.chmod(str(real), 0o777)
    with pytest.raises(LockError, match="lock directory %s is owned" % re.escape(str(real))):
        _acq(str(link / "demo.lock"), "alice", clock)


# ---------------------------------------------------------------- corrupt locks never crash a takeover

CORRUPT = [
    (b'{"owner": "x", "acquired": NaN, "ttl": 60, "host": "h", "pid": 1}', "acquired nan"),
    (b'{"owner": "x", "acquired": 1e999, "ttl": 60, "host": "h", "pid": 1}', "acquired inf"),
    (b'{"owner": "x", "acquired": -Infinity, "ttl": 60}', "acquired -inf"),
    (b'{"owner": "x", "acquired": -5, "ttl": 60}', "acquired -5"),
    (b'{"owner": "x", "acquired": "yesterday", "ttl": 60}', "acquired 'yesterday'"),
    (b'{"owner": "x", "acquired": true, "ttl": 60}', "acquired True"),
    (b'{"owner": "x", "acquired": 1e300, "ttl": 60}', "in the future"),
    (b'{"owner": "x", "acquired": 999000, "ttl": NaN}', "ttl nan"),
    (b'{"owner": "x", "acquired": 999000, "ttl": 1e999}', "ttl inf"),
    (b'{"owner": "x", "acquired": 999000, "ttl": 0}', "ttl 0"),
    (b'{"owner": "x", "acquired": 999000, "ttl": -60}', "ttl -60"),
    (b'{"owner": "x", "acquired": 999000, "ttl": "60"}', "ttl '60'"),
    (b'{"owner": "x", "acquired": 999000, "ttl": 60.5}', "ttl 60.5"),
    (b'{"owner": "x", "acquired": 999000, "ttl": 100000000000}', "ttl 100000000000"),
    (b'{"owner": 5, "acquired": 999000, "ttl": 60}', "owner 5"),
    (b'{"acquired": 999000, "ttl": 60}', "owner None"),
    (b'{"owner": "x", "acq', "not JSON"),
    (b'', "not JSON"),
    (b'[1, 2]', "not a JSON object"),
    (b'null', "not a JSON object"),
    (b'\xff\xfe{"owner"', "not JSON"),
    (b'{"owner": "x", "pad": "' + b"a" * 70000 + b'"}', "larger than 65536 bytes"),
]


def _plant(lock_path, raw):
    os.makedirs(os.path.dirname(lock_path), 0o700, exist_ok=True)
    with open(lock_path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("raw, problem", CORRUPT, ids=[p for _r, p in CORRUPT])
def test_corrupt_lock_is_named_refused_without_force_and_taken_over_with_it(lock_path, clock, raw, problem):
    _plant(lock_path, raw)
    clock.t = os.stat(lock_path).st_mtime + 5
    with pytest.raises(LockError) as err:
        _acq(lock_path, "bob", clock, ttl=600)
    assert "lock %s is corrupt (" % lock_path in err.value.msg and problem in err.value.msg
    assert "canary_lock_takeover=true" in err.value.msg and "force=true" in err.value.msg
    assert err.value.details["corrupt"] and err.value.details["expires_in"] == 595
    with open(lock_path, "rb") as f:
        assert f.read() == raw
    # nobody's release removes it, a forced one does (checked below on a copy)
    r = release(lock_path, owner="x", now=clock)
    assert r["held_by_other"] and not r["released"]

    r = _acq(lock_path, "bob", clock, ttl=600, force=True)
    assert r["took_over"] and r["previous_owner"] is None and r["previous_age"] == 5
    assert "took over the corrupt lock" in r["msg"] and problem in r["msg"]
    assert r["previous_lock"]["corrupt"]
    assert _read(lock_path)["owner"] == "bob"


@pytest.mark.parametrize("raw, problem", CORRUPT[:3], ids=[p for _r, p in CORRUPT[:3]])
def test_corrupt_lock_expires_by_its_mtime_and_releases_with_force(lock_path, clock, raw, problem):
    _plant(lock_path, raw)
    clock.t = os.stat(lock_path).st_mtime + 600
    r = _acq(lock_path, "bob", clock, ttl=600)
    assert r["took_over"] and problem in r["msg"]
    _plant(lock_path, raw)
    r = release(lock_path, force=True, now=clock)
    assert r["released"] and problem in r["msg"] and not os.path.exists(lock_path)


def test_link_in_place_of_the_lock_is_corrupt_and_replaced_not_followed(lock_path, clock, tmp_path):
    target = tmp_path / "precious"
    target.write_text('{"owner": "x", "acquired": 999999, "ttl": 60}')
    os.makedirs(os.path.dirname(lock_path), 0o700)
    os.symlink(str(target), lock_path)
    with pytest.raises(LockError, match="symbolic link"):
        _acq(lock_path, "bob", clock)
    r = _acq(lock_path, "bob", clock, force=True)
    assert r["took_over"] and not os.path.islink(lock_path) and _read(lock_path)["owner"] == "bob"
    assert target.read_text().startswith('{"owner": "x"')


def test_fifo_in_place_of_the_lock_is_corrupt_not_a_hang(lock_path, clock):
    os.makedirs(os.path.dirname(lock_path), 0o700)
    os.mkfifo(lock_path)
    with pytest.raises(LockError, match="not a regular file"):
        _acq(lock_path, "bob", clock)
    assert _acq(lock_path, "bob", clock, force=True)["took_over"]
    assert _read(lock_path)["owner"] == "bob"


def test_refusal_of_a_live_lock_says_how_to_take_it_over(lock_path, clock):
    _acq(lock_path, "alice", clock, ttl=600, info={"action": "rollback"})
    with pytest.raises(LockError) as err:
        _acq(lock_path, "bob", clock)
    assert "owner 'alice' (rollback, lock written by host lb1" in err.value.msg
    assert "rollout and rollback playbooks: -e canary_lock_takeover=true" in err.value.msg


@pytest.mark.parametrize("ttl", [366 * 86400 + 1, 10 ** 12])
def test_ttl_beyond_a_year_is_refused(lock_path, clock, ttl):
    with pytest.raises(LockError, match="ttl must be an integer of seconds from 1 to 31622400.*%d" % ttl):
        _acq(lock_path, "alice", clock, ttl=ttl)


@pytest.mark.parametrize("timeout", [0, -1, True, "5", 3601])
def test_bad_guard_timeout_names_the_value(lock_path, clock, timeout):
    with pytest.raises(LockError, match=r"guard_timeout .* got %s" % re.escape(repr(timeout))):
        _acq(lock_path, "alice", clock, guard_timeout=timeout)


# ---------------------------------------------------------------- who holds it: provably gone or not

BOOT = "3d48d3e7-8b4a-4567-b7b0-af2add15ed4e"
MACHINE = "0c1f5a2e9b7d4c3a8e6f1d2b3c4a5e6f"
PIDNS = "pid:[4026531836]"


class FakeRoot(object):
    """A controller's /etc/machine-id and /proc, in a temporary directory."""

    def __init__(self, path, boot=BOOT, machine=MACHINE, pidns=PIDNS):
        self.root = str(path)
        self._write("etc/machine-id", machine + "\n")
        self._write("proc/sys/kernel/random/boot_id", boot + "\n")
        os.makedirs(os.path.join(self.root, "proc", "self", "ns"))
        os.symlink(pidns, os.path.join(self.root, "proc", "self", "ns", "pid"))

    def _write(self, rel, text, mode="w"):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as f:
            f.write(text)

    def process(self, pid, ppid=1, start=5000, comm="python3", cmdline=("python3",)):
        # fields 3.. of /proc/PID/stat: state, ppid, then up to starttime (field 22)
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 30
        self._write("proc/%d/stat" % pid, "%d (%s) %s\n" % (pid, comm, " ".join(rest)))
        self._write("proc/%d/cmdline" % pid, "\0".join(cmdline) + "\0")

    def gone(self, pid):
        shutil.rmtree(os.path.join(self.root, "proc", str(pid)))


@pytest.fixture
def ctl(tmp_path):
    return FakeRoot(tmp_path / "ctl")


def _holder_lock(ctl, pid=4242, **changes):
    owner, info = _lock.run_identity(pid, "alice", "7f3c09ab", root=ctl.root, hostname="ctl-1")
    info.update(changes)
    return dict(info, owner=owner)


def test_run_identity_names_controller_boot_namespace_process_and_start(ctl):
    ctl.process(4242, start=777)
    owner, info = _lock.run_identity(4242, "alice", "7f3c09ab", root=ctl.root, hostname="ctl-1")
    assert owner == "alice@ctl-1 pid 4242 run 7f3c09ab"
    assert info == {"controller": "ctl-1", "controller_machine": MACHINE, "controller_boot": BOOT,
                    "controller_pidns": PIDNS, "controller_pid": 4242, "controller_start": 777, "run": "7f3c09ab"}
    assert set(info) <= set(_lock.INFO_KEYS)
    # a new random run id per run, and no pid when the process cannot be read
    owner2, info2 = _lock.run_identity(99, None, root=ctl.root, hostname="ctl-1")
    assert "controller_pid" not in info2 and owner2 == "ansible@ctl-1 run %s" % info2["run"]
    assert len(info2["run"]) == 8 and info2["run"] != _lock.run_identity(99, None, root=ctl.root)[1]["run"]


def test_holder_alive_is_not_gone(ctl):
    ctl.process(4242, start=777)
    assert not _lock.holder_gone(_holder_lock(ctl), root=ctl.root, hostname="ctl-1")


def test_holder_whose_process_ended_is_gone(ctl):
    ctl.process(4242, start=777)
    lock = _holder_lock(ctl)
    ctl.gone(4242)
    assert _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")


def test_recycled_pid_is_not_taken_for_the_holder(ctl):
    ctl.process(4242, start=777)
    lock = _holder_lock(ctl)
    ctl.gone(4242)
    ctl.process(4242, start=90210)  # another process got the pid since
    assert _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")


@pytest.mark.parametrize("where", [
    dict(controller_machine="another machine", controller_boot="another boot"),
    dict(controller_boot="another boot"),  # this machine (or a clone of its image) in another boot
    dict(controller_pidns="pid:[4026532999]"),  # a container from the same image on the same kernel
    dict(controller="ctl-2"),
])
def test_holder_elsewhere_with_the_same_host_name_is_never_judged_gone(ctl, where):
    ctl.process(4242, start=777)
    lock = _holder_lock(ctl, **where)
    # whether pid 4242 exists here or not says nothing about a process elsewhere
    assert not _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")
    ctl.gone(4242)
    assert not _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")
    ctl.process(4242, start=90210)
    assert not _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")


@pytest.mark.parametrize("lock", [
    {"controller": "ctl-1", "controller_pid": 4242},  # written before the identity had a boot and start
    {"controller": "ctl-1", "controller_pid": "4242", "controller_start": 777, "controller_boot": BOOT,
     "controller_machine": MACHINE, "controller_pidns": PIDNS},
    {"controller": "ctl-1", "controller_pid": True, "controller_start": 777, "controller_boot": BOOT,
     "controller_machine": MACHINE, "controller_pidns": PIDNS},
    {"controller": "ctl-1", "controller_pid": 1, "controller_start": 777, "controller_boot": BOOT,
     "controller_machine": MACHINE, "controller_pidns": PIDNS},
    {"controller": "ctl-1", "controller_pid": 4242, "controller_start": float("nan"), "controller_boot": BOOT,
     "controller_machine": MACHINE, "controller_pidns": PIDNS},
    {"owner": None, "corrupt": "not JSON"},
    None,
])
def test_a_lock_without_a_full_identity_cannot_prove_anything(ctl, lock):
    assert not _lock.holder_gone(lock, root=ctl.root, hostname="ctl-1")


def test_a_controller_without_machine_id_still_proves_its_own_holders_gone(tmp_path):
    bare = FakeRoot(tmp_path / "bare", machine="")
    bare.process(4242, start=777)
    lock = _holder_lock(bare)
    assert "controller_machine" not in lock and not _lock.holder_gone(lock, root=bare.root, hostname="ctl-1")
    bare.gone(4242)
    assert _lock.holder_gone(lock, root=bare.root, hostname="ctl-1")
    # ... but not those of a controller that has one
    assert not _lock.holder_gone(dict(lock, controller_machine=MACHINE), root=bare.root, hostname="ctl-1")


def test_no_boot_id_or_namespace_here_proves_nothing(tmp_path):
    bare = FakeRoot(tmp_path / "bare", boot="")
    lock = _holder_lock(bare)
    lock.update(controller_pid=4242, controller_start=777)
    assert not _lock.holder_gone(lock, root=bare.root, hostname="ctl-1")


def test_holder_gone_on_this_machine():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner, info = _lock.run_identity(child.pid, "alice")
        assert info["controller_pid"] == child.pid and "controller_start" in info
        assert not _lock.holder_gone(dict(info, owner=owner))
    finally:
        child.kill()
        child.wait()
    assert _lock.holder_gone(dict(info, owner=owner))
    me = _lock.controller_identity(os.getpid())
    assert not _lock.holder_gone(me)


def test_proc_stat_survives_a_command_name_with_parentheses_and_spaces(ctl):
    ctl.process(31, ppid=7, start=4321, comm="we) (ird 1 2")
    assert _lock._proc_stat(31, ctl.root) == (7, 4321)
    assert _lock._proc_stat(32, ctl.root) is None


# ---------------------------------------------------------------- the ansible-playbook process of a module

PLAYBOOK_CMD = ("/usr/bin/python3", "/usr/bin/ansible-playbook", "-i", "inv", "site.yml")


def test_playbook_pid_is_the_parent_of_the_forked_worker(ctl):
    ctl.process(60, ppid=1, cmdline=("bash",))
    ctl.process(70, ppid=60, cmdline=PLAYBOOK_CMD)           # ansible-playbook
    ctl.process(80, ppid=70, cmdline=PLAYBOOK_CMD)           # its worker (a fork)
    ctl.process(85, ppid=80, cmdline=("/bin/sh", "-c", "sudo -u root /bin/sh -c python3"))
    ctl.process(86, ppid=85, cmdline=("sudo", "-u", "root", "/bin/sh", "-c", "python3"))
    ctl.process(90, ppid=86, cmdline=("/bin/sh", "-c", "python3"))
    ctl.process(100, ppid=90, cmdline=("/usr/bin/python3",))  # the module
    assert _lock.playbook_pid(100, ctl.root) == 70


def test_playbook_pid_unknown_without_a_forked_pair(ctl):
    ctl.process(60, ppid=1, cmdline=("bash",))
    ctl.process(90, ppid=60, cmdline=("/bin/sh", "-c", "python3"))
    ctl.process(100, ppid=90, cmdline=("/usr/bin/python3",))
    assert _lock.playbook_pid(100, ctl.root) is None


def test_run_module_identity(monkeypatch):
    monkeypatch.setattr(_lock, "playbook_pid", os.getpid)
    monkeypatch.setenv("USER", "carol")
    (kind, r), _m = _run(dict(state="identity", path=None))
    assert kind == "exit" and not r["changed"]
    assert r["identity"]["owner"].startswith("carol@%s pid %d run " % (socket.gethostname(), os.getpid()))
    assert r["identity"]["info"]["controller_pid"] == os.getpid()
