# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.container_release on real Podman containers under systemd
(molecule/containers): the tests run in file order and each starts from the
state the one before left (v1 everywhere after converge). No registry is
reachable: every image comes from an archive built offline by converge."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(SCENARIO))
IMAGES = os.path.join(REPO, ".build", "ctr-images")
APPS = ("ctr-app1", "ctr-app2")
ROOT = "/var/lib/grayrelease/demoapp"
SERVICE = {"service": "demoapp.service", "ready_url": "http://127.0.0.1:8080/healthz", "settle": 30}


def docker(*args, check=True, timeout=60):
    return subprocess.run(["docker"] + list(args), check=check, capture_output=True, text=True, timeout=timeout)


def sh(host, command, check=True):
    return docker("exec", host, "sh", "-c", command, check=check)


def image(version):
    return os.path.join(IMAGES, "demoapp-%s.tar" % version)


def release(hosts="app", **args):
    """Run files/release.yml; {host: result}."""
    env = dict(os.environ)
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY"):
        env.pop(key, None)
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="false")
    with tempfile.TemporaryDirectory(prefix="ctr-") as out:
        extra = {"ctr_args": args, "ctr_hosts": hosts, "ctr_out": out}
        res = subprocess.run(["ansible-playbook", "-i", os.path.join(SCENARIO, "inventory", "hosts.yml"),
                              os.path.join(SCENARIO, "files", "release.yml"), "-e", json.dumps(extra)],
                             env=env, capture_output=True, text=True, timeout=600, check=False)
        print(res.stdout[-4000:], res.stderr[-2000:])
        results = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name), encoding="utf-8") as handle:
                results[name[:-5]] = json.load(handle)
    assert results, res.stdout[-2000:]
    return results


def served(host):
    """The version the host's container answers with (on the host itself), or None."""
    res = sh(host, "curl -s -m 2 http://127.0.0.1:8080/version", check=False)
    try:
        return json.loads(res.stdout)["version"]
    except ValueError:
        return None


def env_image(host):
    return sh(host, "sed -n 's/^CANARY_IMAGE=//p' %s/current.env" % ROOT).stdout.strip()


def running_image(host):
    """The image id of the unit's running container."""
    return "sha256:" + sh(host, "podman inspect --format '{{.Image}}' demoapp").stdout.strip()


def main_pid(host):
    return sh(host, "systemctl show -p MainPID --value demoapp").stdout.strip()


def has_image(host, image_id):
    return sh(host, "podman image exists %s" % image_id, check=False).returncode == 0


def balanced_versions(count=12):
    """Versions served through HAProxy on ctr-lb1 (round robin over both app hosts)."""
    seen = []
    for _request in range(count):
        res = sh("ctr-lb1", "curl -s -m 2 http://127.0.0.1/version", check=False)
        seen.append(json.loads(res.stdout)["version"] if res.stdout.startswith("{") else None)
    return seen


def digest_of(version):
    """The image id the controller pins for an archive (the action plugin's answer)."""
    from ansible_collections.grayrelease.canary.plugins.module_utils._container import archive_digest
    return archive_digest(image(version))


def wait_served(host, version, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if served(host) == version:
            return True
        time.sleep(0.5)
    return False


def test_converge_left_v1_running_as_a_container_by_digest():
    for host in APPS:
        assert served(host) == "v1"
        assert env_image(host) == digest_of("v1") == running_image(host)
        assert sh(host, "systemctl is-active demoapp").stdout.strip() == "active"
        mode = sh(host, "stat -c %a " + ROOT + "/releases.json").stdout.strip()
        assert mode == "600"
    assert set(balanced_versions()) == {"v1"}


def test_stage_pre_pulls_v2_without_touching_what_runs():
    pids = {host: main_pid(host) for host in APPS}
    results = release(version="v2", src=image("v2"), state="staged", copy_first=True, require_current=True)
    for host in APPS:
        result = results[host]
        assert not result.get("failed"), result
        assert result["changed"] and result["installed_now"] and result["staged"]
        assert result["current"] == "v1" and result["digest"] == digest_of("v2")
        assert has_image(host, digest_of("v2"))
        assert main_pid(host) == pids[host] and served(host) == "v1"
    # Staged already: the archive is not copied again (one shell test), nothing changes.
    again = release(version="v2", src=image("v2"), state="staged", copy_first=True)
    assert all(not r["changed"] and r["staged"] for r in again.values()), again


def test_switch_to_v2_then_a_rerun_of_the_same_digest_is_a_no_op():
    results = release(version="v2", src=image("v2"), state="current", **SERVICE)
    for host in APPS:
        result = results[host]
        assert not result.get("failed"), result
        assert result["switched"] and result["switched_from"] == "v1"
        assert (result["current"], result["previous"]) == ("v2", "v1")
        assert result["service"] == {"active_state": "active", "sub_state": "running"}
        assert served(host) == "v2" and running_image(host) == env_image(host) == digest_of("v2")
    assert set(balanced_versions()) == {"v2"}
    pids = {host: main_pid(host) for host in APPS}
    again = release(version="v2", src=image("v2"), state="current", **SERVICE)
    for host in APPS:
        assert not again[host]["changed"] and not again[host]["switched"], again[host]
        assert main_pid(host) == pids[host]


def test_rollback_to_v1_with_no_registry():
    # Nothing could be pulled even if the module tried: no registry is reachable here.
    results = release(state="rollback", **SERVICE)
    for host in APPS:
        result = results[host]
        assert not result.get("failed"), result
        assert result["switched"] and (result["current"], result["switched_from"]) == ("v1", "v2")
        assert served(host) == "v1" and running_image(host) == digest_of("v1")
        assert has_image(host, digest_of("v2"))   # kept: it may be rolled forward again
    again = release(state="rollback", **SERVICE)
    assert all(not r["changed"] and r["current"] == "v1" for r in again.values()), again


def test_a_crashing_image_fails_its_health_and_rollback_restores_the_previous_digest():
    results = release(hosts="ctr-app1", version="crash", src=image("crash"), state="current", **SERVICE)
    result = results["ctr-app1"]
    assert result.get("failed"), result
    assert "did not stay up" in result["msg"], result["msg"]
    assert result["current"] == "crash" and result["switched_from"] == "v1"
    back = release(hosts="ctr-app1", state="rollback", **SERVICE)["ctr-app1"]
    assert not back.get("failed"), back
    assert (back["current"], back["switched_from"]) == ("v1", "crash")
    assert wait_served("ctr-app1", "v1") and running_image("ctr-app1") == digest_of("v1")
    assert served("ctr-app2") == "v1"


def test_a_failing_load_and_a_failing_pull_are_refused_with_nothing_changed():
    # An archive whose manifest names v3's config but whose layer is garbage:
    # the controller pins it, podman load on the host refuses it.
    with tempfile.TemporaryDirectory(prefix="ctr-") as work:
        import tarfile
        bad = os.path.join(work, "demoapp-broken.tar")
        with tarfile.open(image("v3")) as src, tarfile.open(bad, "w") as dst:
            for member in src.getmembers():
                if member.name.endswith(".tar") and member.isfile():
                    import io
                    member.size = 4096
                    dst.addfile(member, io.BytesIO(b"\0garbage" * 512))
                else:
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        results = release(version="broken", src=bad, state="staged", copy_first=True)
    for host in APPS:
        result = results[host]
        assert result.get("failed") and "podman load -i" in result["msg"], result
        assert "broken" not in release(hosts=host)[host]["installed"]
    pulled = release(version="pulled", image="127.0.0.1:5999/demoapp@sha256:" + "0" * 64, state="staged")
    for host in APPS:
        result = pulled[host]
        assert result.get("failed") and "podman pull 127.0.0.1:5999/demoapp@sha256:" in result["msg"], result
        assert result.get("failed_step") == "pull"
        assert served(host) == "v1" and env_image(host) == digest_of("v1")


def test_an_auto_updating_unit_is_refused():
    sh("ctr-app2", "systemctl enable --now podman-auto-update.timer")
    try:
        result = release(hosts="ctr-app2", version="v2", src=image("v2"), state="current", **SERVICE)["ctr-app2"]
    finally:
        sh("ctr-app2", "systemctl disable --now podman-auto-update.timer")
    assert result.get("failed") and "podman-auto-update.timer is enabled" in result["msg"], result
    assert served("ctr-app2") == "v1"
    # A drop-in that starts the container with the auto-update label (it never starts: refused first).
    sh("ctr-app2", "mkdir -p /etc/systemd/system/demoapp.service.d && printf '[Service]\\nExecStart=\\n"
                   "ExecStart=/usr/bin/podman run --rm --replace --name demoapp --network host "
                   "--label io.containers.autoupdate=registry $CANARY_IMAGE\\n'"
                   " > /etc/systemd/system/demoapp.service.d/au.conf && systemctl daemon-reload")
    try:
        result = release(hosts="ctr-app2", version="v2", src=image("v2"), state="current", **SERVICE)["ctr-app2"]
    finally:
        sh("ctr-app2", "rm -rf /etc/systemd/system/demoapp.service.d && systemctl daemon-reload")
    assert result.get("failed") and "sets the label io.containers.autoupdate" in result["msg"], result
    assert served("ctr-app2") == "v1" and env_image("ctr-app2") == digest_of("v1")


def test_prune_after_a_promoted_run_keeps_current_and_previous():
    results = release(version="v3", src=image("v3"), state="current", keep=2, **SERVICE)
    for host in APPS:
        result = results[host]
        assert not result.get("failed"), result
        assert (result["current"], result["previous"]) == ("v3", "v1")
        assert sorted(result["installed"]) == ["v1", "v3"], result
        assert "v2" in result["pruned"]
        assert has_image(host, digest_of("v1")) and has_image(host, digest_of("v3"))
        assert not has_image(host, digest_of("v2"))
        assert served(host) == "v3"
    assert set(balanced_versions()) == {"v3"}
