# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real state after the `release` scenario (see molecule.yml for the steps).

rel-app1: released v2 (with hooks), then the same release again (idempotence).
rel-app2: released v2, drained, rolled back to v1 twice.
rel-app3: released v2..v5, rolled back to v1 explicitly, released v6 with keep 3
and logs, data/uploads shared.
Hostile input: rel-app2's rollback met a symlink planted at its record's temporary
name; rel-app1 refused to stage through a planted .staging symlink, and refused
an archive bigger than the filesystem of its release root.
"""

from __future__ import annotations

import json
import os

import pytest
import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
STAT_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "files", "haproxy_stat.py")
ROOT = "/opt/demoapp"
BALANCERS = ["rel-lb1", "rel-lb2"]
EXPECTED = {"rel-app1": "v2", "rel-app2": "v1", "rel-app3": "v6"}


def host(name):
    return testinfra.get_host("ansible://" + name, ansible_inventory=INVENTORY)


def link(h, name):
    return h.check_output("readlink %s/%s", ROOT, name)


def served_version(h):
    return json.loads(h.check_output("curl -fsS -m 5 http://127.0.0.1:8080/version"))["version"]


def start_monotonic(h):
    return int(h.check_output("systemctl show --property=ExecMainStartTimestampMonotonic --value demoapp"))


def releases(h):
    return sorted(h.check_output("ls -1 %s/releases", ROOT).split())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_service_active_and_answering_its_current_release(name):
    h = host(name)
    assert h.service("demoapp").is_running
    assert link(h, "current") == "releases/" + EXPECTED[name]
    assert served_version(h) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_staging_left_behind(name):
    h = host(name)
    assert h.check_output("ls -A %s/.staging", ROOT) == ""
    assert not h.file(ROOT + "/.current.tmp").exists
    assert not h.file(ROOT + "/.previous.tmp").exists


def test_release_v2_layout_and_links():
    h = host("rel-app1")
    assert link(h, "previous") == "releases/v1"
    rel = ROOT + "/releases/v2"
    assert h.file(rel + "/app.py").is_file
    assert h.file(rel + "/release.json").is_file
    # the archive's single top-level directory demoapp-v2/ was stripped
    assert not h.file(rel + "/demoapp-v2").exists
    assert sorted(h.check_output("ls -A %s", rel).split()) == [".grayrelease-release", "app.py", "release.json"]
    marker = json.loads(h.file(rel + "/.grayrelease-release").content_string)
    assert marker["version"] == "v2" and marker["artifact"] == "demoapp-v2.tar.gz"
    assert len(marker["sha256"]) == 64
    # modes normalized, owned by the user the module ran as (root), not the archive's
    assert h.file(rel).mode == 0o755
    assert h.file(rel + "/app.py").mode == 0o755
    assert h.file(rel + "/release.json").mode == 0o644
    assert h.file(rel + "/.grayrelease-release").mode == 0o644
    for name in ("", "/app.py", "/release.json", "/.grayrelease-release"):
        assert (h.file(rel + name).user, h.file(rel + name).group) == ("root", "root")
    assert releases(h) == ["v1", "v2"]


def test_hooks_ran_around_the_switch():
    h = host("rel-app1")
    before = json.loads(h.file("/var/tmp/grayrelease-hooks/before-v2.json").content_string)
    assert before == {"current": "releases/v1", "new_release_installed": True}
    after = json.loads(h.file("/var/tmp/grayrelease-hooks/after-v2.json").content_string)
    assert after["current"] == "releases/v2"


def test_idempotent_rerun_restarted_nothing():
    h = host("rel-app1")
    after = json.loads(h.file("/var/tmp/grayrelease-hooks/after-v2.json").content_string)
    # recorded by the after hook right after the first release's restart
    assert int(after["start_monotonic"]) > 0
    assert start_monotonic(h) == int(after["start_monotonic"])


def test_rollback_went_back_to_v1_and_restarted():
    h = host("rel-app2")
    assert link(h, "previous") == "releases/v2"
    # the failed release stays for inspection
    assert releases(h) == ["v1", "v2"]
    after = json.loads(h.file("/var/tmp/grayrelease-hooks/after-v2.json").content_string)
    assert start_monotonic(h) > int(after["start_monotonic"])
    record = json.loads(h.file(ROOT + "/.rollback.json").content_string)
    assert record["from"] == "v2" and record["to"] == "v1"


def test_pruning_spared_current_and_previous():
    h = host("rel-app3")
    # v1 is the oldest directory but previous; v6 current; v5 newest of the rest
    assert link(h, "previous") == "releases/v1"
    assert releases(h) == ["v1", "v5", "v6"]
    # a release switch clears the record of the earlier rollback
    assert not h.file(ROOT + "/.rollback.json").exists


def test_shared_paths_are_links_in_v6_only_and_keep_what_was_there():
    h = host("rel-app3")
    rel = ROOT + "/releases/v6"
    assert h.check_output("readlink %s/logs", rel) == ROOT + "/shared/logs"
    assert h.check_output("readlink %s/data/uploads", rel) == ROOT + "/shared/data/uploads"
    assert h.file(ROOT + "/shared/data/uploads").is_directory
    assert not h.file(ROOT + "/shared/data/uploads").is_symlink
    # Through current, the service's view: the operator's file is there.
    assert h.file(ROOT + "/current/logs/kept.log").content_string == "written before v6\n"
    # previous (v1) was not released with them and is left as it was.
    assert not h.file(ROOT + "/releases/v1/logs").exists
    assert served_version(h) == "v6"


def test_failed_steps_changed_nothing_on_rel_app1():
    h = host("rel-app1")
    assert not h.file("/opt/no-such-service").exists
    assert not h.file(ROOT + "/releases/v7").exists
    assert not h.file(ROOT + "/releases/v9").exists
    # the pre-staged v4 was removed, the check-mode v3 never installed
    assert releases(h) == ["v1", "v2"]
    assert not h.file(ROOT + "/.rollback.json").exists


def test_artifacts_left_no_copies_on_the_hosts():
    for name in sorted(EXPECTED):
        h = host(name)
        found = h.run("find / -xdev -name 'demoapp-v*.tar.gz' -not -path '/proc/*' 2>/dev/null")
        assert found.stdout.strip() == "", name


@pytest.mark.parametrize("name", BALANCERS)
def test_every_server_ready_and_up_on_both_balancers(name):
    with open(STAT_SCRIPT, encoding="utf-8") as handle:
        code = handle.read()
    servers = json.loads(host(name).check_output("python3 -c %s %s %s", code,
                                                 "/run/haproxy/admin.sock", "demoapp"))
    # UP (not DRAIN / MAINT): rel-app2, drained before its rollback, is ready again
    assert {s: v["status"] for s, v in servers.items()} == {s: "UP" for s in EXPECTED}


@pytest.mark.parametrize("name", BALANCERS)
def test_balancers_serve_each_hosts_release(name):
    lb = host(name)
    seen = {}
    for _request in range(2 * len(EXPECTED)):
        reply = json.loads(lb.check_output("curl -fsS -m 5 http://127.0.0.1:80/version"))
        seen[reply["host"]] = reply["version"]
    assert seen == EXPECTED


def test_planted_symlink_at_the_rollback_temp_name_was_not_followed():
    h = host("rel-app2")
    victim = h.file("/etc/canary-victim")
    assert victim.content_string == "untouched\n"
    assert (victim.mode, victim.user, victim.group) == (0o600, "root", "root")
    # the link was unlinked, never written through, and the record written anew
    assert not h.file(ROOT + "/.rollback.json.tmp").exists
    record = h.file(ROOT + "/.rollback.json")
    assert record.is_file and not record.is_symlink and record.mode == 0o644


def test_planted_staging_symlink_removed_nothing_elsewhere():
    h = host("rel-app1")
    assert h.check_output("find /srv/canary-other -mindepth 1 | sort").split() == [
        "/srv/canary-other/v5", "/srv/canary-other/v5/keep"]
    assert h.file("/srv/canary-other/v5/keep").content_string == "not the module's\n"
    assert not h.file(ROOT + "/releases/v5").exists


def test_oversized_archive_refused_with_nothing_written():
    h = host("rel-app1")
    refusal = json.loads(h.file("/var/tmp/grayrelease-oversized.json").content_string)
    msg = refusal["msg"]
    assert "cannot unpack oversized-v9.tar.gz into /opt/small/.staging: No space left on device" in msg, msg
    assert "it unpacks to about 256.0 MiB (1 member)" in msg and " MiB free (min_free_mb=64" in msg, msg
    # looked at while the small filesystem was still mounted
    assert refusal["left"] == []
    found = h.run("find / -xdev -name 'oversized-v9*' -not -path '/proc/*' 2>/dev/null")
    assert found.stdout.strip() == ""
