# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout over SSH (issue 22, item 1): every playbook here reaches the
ssh- fleet with ansible_connection=ssh as the unprivileged user `deploy`,
become through sudo, pipelining and ControlPersist, host keys checked against
the test's known_hosts. In order: the transport itself, v1 -> v2 promoted
under load, a failing canary rolled back, a login user without sudo refused.
Wall times are printed (pytest -s) and appended to .build/ssh-measurements.jsonl."""
import re
import subprocess

from conftest import (APPS, BALANCERS, HOSTS, INVENTORY, Load, assert_fleet_serving, build_release,
                      capacity_monitor, docker, haproxy_state, inventory, read_report, record, releases_on,
                      run_playbook, ssh_env, ssh_logins, version_of)

# Small windows keep the scenario within CI's budget; the flow is the default one.
# 3 app hosts, at most 2 out at once: [canary], [the other two].
FAST = ["-e", '{"canary_analysis_interval": 4, "canary_analysis_count": 2, "canary_max_unavailable": 2,'
              ' "canary_steps": [1, "100%"], "canary_drain_timeout": 10}']


def mixed_load():
    """Fast requests and a 3 s request every 2 s through ssh-lb1's HAProxy (bounded: 300 s)."""
    return Load("ssh-lb1", rate=20, duration=300, name="ssh-load", slow_rate=0.5, slow_seconds=3)


def test_fleet_is_reached_over_ssh_as_an_unprivileged_user_with_sudo():
    fleet = inventory()["all"]["children"]["fleet"]["vars"]
    assert fleet["ansible_connection"] == "ssh" and fleet["ansible_user"] == "deploy"
    assert fleet["ansible_become"] is True and fleet["ansible_pipelining"] is True
    assert "StrictHostKeyChecking=yes" in fleet["ansible_ssh_common_args"]
    # Each container has host keys of its own (the image ships one set).
    keys = [docker("exec", h, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for h in HOSTS]
    assert len(set(keys)) == len(HOSTS), keys
    for become, expected in (("false", "deploy"), ("true", "root")):
        res = subprocess.run(["ansible", "-i", INVENTORY, "all", "-m", "ansible.builtin.command", "-a", "id -un",
                              "-e", "ansible_become=%s" % become], env=ssh_env(), capture_output=True, text=True,
                             timeout=120, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout)
        for host in HOSTS:
            assert "%s | CHANGED | rc=0 >>\n%s\n" % (host, expected) in out, out
    # Root cannot log in; only keys are accepted.
    config = docker("exec", "ssh-app1", "sshd", "-T").stdout
    assert "permitrootlogin no" in config and "passwordauthentication no" in config


def test_boot_never_empties_tmp_on_the_fleet():
    # Debian's `D /tmp` tmpfiles rule emptied /tmp at boot; when the boot was
    # slow (several fleets starting at once) it ran after the converge's first
    # task had put its AnsiballZ payload there and deleted it
    # (FileNotFoundError on /tmp/ansible_*_payload_*/..._payload.zip). The
    # fleet image overrides the rule (images/fleet/customize.sh): create, never empty.
    for host in HOSTS:
        config = docker("exec", host, "systemd-tmpfiles", "--cat-config").stdout
        rules = [fields[0] for fields in (line.split() for line in config.splitlines())
                 if len(fields) > 1 and fields[1] == "/tmp"]
        assert rules == ["d"], (host, rules)


def test_rollout_promotes_v2_over_ssh_under_load(report_dir, tmp_path):
    assert {h: version_of(h) for h in APPS} == {h: "v1" for h in APPS}
    artifact = build_release("v2")
    logins = {h: ssh_logins(h) for h in HOSTS}
    monitor = capacity_monitor("ssh-lb1", duration=300, name="ssh-capmon")
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v2", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/promote" % report_dir, *FAST, control_dir=str(tmp_path / "cp"))
    summary = load.stop()
    capacity = monitor.stop()
    logins = {h: ssh_logins(h) - logins[h] for h in HOSTS}
    report = read_report(report_dir / "promote")
    print("SSH rollout v1 -> v2: playbook %.1f s (report %s s), batches %s s, %s requests (%s failed), "
          "SSH logins per host %s" % (res.seconds, report.get("seconds"), [s["seconds"] for s in report["steps"]],
                                      summary["requests"], summary["failed"], logins))
    record("promote", playbook_seconds=res.seconds, report_seconds=report.get("seconds"),
           batches=[s["seconds"] for s in report["steps"]], load=summary, ssh_logins=logins)
    assert res.returncode == 0, res.stdout[-3000:]
    assert report["decision"] == "promoted" and report["previous_version"] == "v1"
    assert report["hosts"] == {h: "v2" for h in APPS}
    assert report["steps"][0]["judge"]["verdict"] == "pass"
    assert_fleet_serving("v2")
    assert summary["failed"] == 0, summary
    assert summary["requests"] > 100 and summary["slow"]["requests"] > 5, summary
    assert summary["versions"].get("v1", 0) > 0 and summary["versions"].get("v2", 0) > 0, summary
    assert capacity["samples"] > 50 and capacity["max_out"] <= 2 and capacity["final_out"] == [], capacity
    # The run went over SSH, and ControlPersist kept one connection per host
    # (a reconnect per task would show dozens here).
    assert all(count >= 1 for count in logins.values()), logins
    assert all(count <= 3 for count in logins.values()), logins


def test_failing_canary_is_rolled_back_over_ssh(report_dir, tmp_path):
    # Half of v3's requests fail: the judge fails the canary, which goes back to v2.
    artifact = build_release("v3", "--error-rate", "0.5")
    monitor = capacity_monitor("ssh-lb1", duration=300, name="ssh-capmon")
    load = mixed_load()
    res = run_playbook("rollout", "-e", "canary_version=v3", "-e", "canary_artifact=%s" % artifact,
                       "-e", "canary_report_dir=%s/rollback" % report_dir, *FAST, control_dir=str(tmp_path / "cp"))
    summary = load.stop()
    capacity = monitor.stop()
    report = read_report(report_dir / "rollback")
    print("SSH rollout v2 -> v3 rolled back: playbook %.1f s (report %s s), %s requests, statuses %s; reason: %s"
          % (res.seconds, report.get("seconds"), summary["requests"], summary["statuses"], report.get("reason")))
    record("rollback", playbook_seconds=res.seconds, report_seconds=report.get("seconds"), load=summary,
           reason=report.get("reason"))
    assert res.returncode != 0
    assert report["decision"] == "rolled_back", report.get("reason")
    assert report["steps"][0]["judge"]["verdict"] == "fail"
    canary = report["steps"][0]["hosts"]
    assert report["rolled_back"] == canary and len(canary) == 1
    for host in APPS:
        assert ("v3" in releases_on(host)) == (host in canary), host
    assert_fleet_serving("v2")
    # Only the canary's own injected 500s: nothing cut while it was drained and rolled back.
    assert set(summary["statuses"]) <= {"200", "500"}, summary
    assert capacity["max_out"] <= 2 and capacity["final_out"] == [], capacity


def test_a_login_user_without_sudo_is_refused_and_nothing_changes(report_dir):
    # `nosudo` logs in with the same key but has no sudo rule.
    artifact = build_release("v4")
    before = {h: (version_of(h), releases_on(h)) for h in APPS}
    res = run_playbook("rollout", "-e", "canary_version=v4", "-e", "canary_artifact=%s" % artifact,
                       "-e", "ansible_user=nosudo", "-e", "canary_report_dir=%s/nosudo" % report_dir, *FAST)
    print("rollout as a user without sudo: rc %s after %.1f s; the user sees:\n%s" % (
        res.returncode, res.seconds, "\n".join(line for line in res.stdout.splitlines()
                                               if "sudo" in line or "fatal" in line or "FAILED" in line)))
    assert res.returncode != 0
    # What Ansible says today when sudo has no rule for the user (asked to
    # become without a password, sudo -n exits): the pre-flight check wanted
    # from the engine would name the user and the rule instead.
    assert "Missing sudo password" in res.stdout
    report = read_report(report_dir / "nosudo")
    assert report["decision"] == "failed", report
    assert {h: (version_of(h), releases_on(h)) for h in APPS} == before
    for host, server in haproxy_state(BALANCERS[0]).items():
        assert server["admin_state"] == "ready" and server["weight"] == server["initial_weight"], (host, server)
