# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of grayrelease.canary.rollout_lock, on temporary dirs with a fake clock."""
from __future__ import annotations

import json
import os
import stat
import threading

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
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
    # no temporary files left behind
    assert os.listdir(os.path.dirname(lock_path)) == ["demoapp.lock"]


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
    with pytest.raises(LockError, match="unreadable"):
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


def test_unwritable_directory_fails_cleanly(tmp_path, clock):
    if os.geteuid() == 0:
        # root ignores directory permissions; use a path under a file instead
        f = tmp_path / "file"
        f.write_text("x")
        path = str(f / "sub" / "x.lock")
    else:
        d = tmp_path / "ro"
        d.mkdir(mode=0o555)
        path = str(d / "sub" / "x.lock")
    with pytest.raises(LockError, match="cannot create the lock directory"):
        _acq(path, "a", clock)


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
