# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.release (module + action plugin) through a real ansible-playbook run on localhost."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    root: "{{ work }}/opt/demoapp"
  tasks:
    - name: Check mode install and switch changes nothing
      grayrelease.canary.release: {root: "{{ root }}", version: v1, src: art/demoapp-v1.tar.gz, state: current}
      check_mode: true
      register: r_check
    - ansible.builtin.stat: {path: "{{ root }}"}
      register: st_check
    - name: Wrong checksum fails before the host is touched
      grayrelease.canary.release:
        root: "{{ root }}"
        version: v1
        src: art/demoapp-v1.tar.gz
        checksum: "sha256:{{ '0' * 64 }}"
        state: staged
      register: r_badsum
      ignore_errors: true
    - name: Stage v1 from a path relative to the working directory
      grayrelease.canary.release: {root: "{{ root }}", version: v1, src: art/demoapp-v1.tar.gz, state: staged}
      register: r_stage
    - name: Stage v1 again (no transfer)
      grayrelease.canary.release: {root: "{{ root }}", version: v1, src: art/demoapp-v1.tar.gz, state: staged}
      register: r_stage2
    - name: Switch to v1
      grayrelease.canary.release: {root: "{{ root }}", version: v1, state: current}
      register: r_cur1
    - name: Install and switch to v2 in one task, remote src
      grayrelease.canary.release:
        root: "{{ root }}"
        version: v2
        src: "{{ work }}/art/demoapp-v2.tar.gz"
        remote_src: true
        state: current
        keep: 1
      register: r_cur2
    - name: Roll back
      grayrelease.canary.release: {root: "{{ root }}", state: rollback}
      register: r_rb
    - name: Roll back again
      grayrelease.canary.release: {root: "{{ root }}", state: rollback}
      register: r_rb2
    - name: Info
      grayrelease.canary.release: {root: "{{ root }}", version: v2}
      register: r_info
      diff: true
    - name: Stage v3, copying the artifact first (the module runs once); then again (its marker is there, no copy)
      grayrelease.canary.release:
        root: "{{ root }}"
        version: v3
        src: art/demoapp-v3.tar.gz
        state: staged
        copy_first: true
      loop: [first, again]
      register: r_first
    - name: Stage v4 with require_current under a root with no current release (no copy, nothing written)
      grayrelease.canary.release:
        root: "{{ work }}/bare"
        version: v4
        src: art/demoapp-v3.tar.gz
        state: staged
        copy_first: true
        require_current: true
      register: r_bare
    - name: Bad version
      grayrelease.canary.release: {root: "{{ root }}", version: "../v3", state: staged}
      register: r_badver
      ignore_errors: true
    - ansible.builtin.copy:
        dest: "{{ work }}/out.json"
        content: "{{ {'check': r_check, 'st_check': st_check.stat.exists, 'badsum': r_badsum, 'stage': r_stage,
                      'stage2': r_stage2, 'cur1': r_cur1, 'cur2': r_cur2, 'rb': r_rb, 'rb2': r_rb2,
                      'info': r_info, 'badver': r_badver, 'first': r_first.results[0], 'first2': r_first.results[1],
                      'bare': r_bare} | to_json }}"
        mode: "0644"
"""


def _archive(path, version):
    src = path.parent / ("src-" + version) / ("demoapp-" + version)
    src.mkdir(parents=True)
    (src / "app.py").write_text("print(%r)\n" % version)
    with tarfile.open(str(path), "w:gz") as tar:
        tar.add(str(src), arcname="demoapp-" + version)


@pytest.mark.slow
def test_release_module_through_ansible(tmp_path):
    exe = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable),
                                                           "ansible-playbook")
    (tmp_path / "art").mkdir()
    for version in ("v1", "v2", "v3"):
        _archive(tmp_path / "art" / ("demoapp-%s.tar.gz" % version), version)
    pb = tmp_path / "pb.yml"
    pb.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run(
        [exe, "-vvv", "-i", "localhost,", "-c", "local", "-e", "work=%s" % tmp_path,
         "-e", "ansible_python_interpreter=%s" % sys.executable, str(pb)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    root = tmp_path / "opt" / "demoapp"

    assert out["check"]["changed"] and out["check"]["switched"] and out["check"]["current"] == "v1"
    assert not out["st_check"]
    assert out["badsum"]["failed"] and "0" * 64 in out["badsum"]["msg"]
    assert out["badsum"]["sha256"] in out["badsum"]["msg"]

    assert out["stage"]["changed"] and out["stage"]["installed_now"] and out["stage"]["current"] == ""
    assert "needs_src" not in out["stage"]
    assert not out["stage2"]["changed"] and out["stage2"]["staged"]
    marker = json.loads((root / "releases" / "v1" / ".grayrelease-release").read_text())
    assert marker["artifact"] == "demoapp-v1.tar.gz" and len(marker["sha256"]) == 64
    # the artifact went to the host once: the re-run and the switch copied nothing
    puts = [line.split(" TO ")[-1] for line in proc.stdout.splitlines()
            if " PUT " in line and line.endswith("/demoapp-v1.tar.gz")]
    assert len(puts) == 1, puts
    # into a temporary directory that is gone
    assert not os.path.exists(os.path.dirname(puts[0]))

    assert out["cur1"]["switched"] and out["cur1"]["current"] == "v1"
    assert out["cur2"]["installed_now"] and out["cur2"]["switched_from"] == "v1"
    assert out["cur2"]["previous"] == "v1" and out["cur2"]["pruned"] == []
    assert out["rb"]["switched"] and out["rb"]["current"] == "v1" and out["rb"]["previous"] == "v2"
    assert not out["rb2"]["changed"] and out["rb2"]["current"] == "v1"
    assert out["info"]["installed"] == ["v1", "v2"] and out["info"]["staged"]
    assert out["info"]["diff"]["before"] == out["info"]["diff"]["after"]
    assert out["badver"]["failed"] and "'../v3'" in out["badver"]["msg"]

    # copy_first: the artifact is copied, then the module runs once (no needs_src round trip)
    assert out["first"]["changed"] and out["first"]["installed_now"] and "needs_src" not in out["first"]
    marker = json.loads((root / "releases" / "v3" / ".grayrelease-release").read_text())
    assert marker["artifact"] == "demoapp-v3.tar.gz"
    task = proc.stdout.split("TASK [Stage v3, copying the artifact first", 1)[1].split("TASK [", 1)[0]
    # Two loop items: the artifact went up for the first only (the second
    # found the install marker with one shell test), the module ran once for each.
    assert len([line for line in task.splitlines()
                if " PUT " in line and line.endswith("/demoapp-v3.tar.gz")]) == 1, task
    assert len([line for line in task.splitlines()
                if " EXEC " in line and "test -f" in line and "releases/v3/.grayrelease-release" in line]) == 2, task
    assert len([line for line in task.splitlines()
                if " EXEC " in line and "python" in line and "AnsiballZ_release.py" in line]) == 2, task
    assert not out["first2"]["changed"] and out["first2"]["staged"]
    # require_current on a root off the layout: the shell test saw no current
    # release, so nothing was copied, and the module wrote nothing.
    assert not out["bare"]["changed"] and not out["bare"]["staged"] and "require_current" in out["bare"]["msg"]
    task = proc.stdout.split("TASK [Stage v4 with require_current", 1)[1].split("TASK [", 1)[0]
    assert not [line for line in task.splitlines() if " PUT " in line and line.endswith(".tar.gz")], task
    assert not os.path.exists(str(tmp_path / "bare" / "releases"))
    assert os.readlink(str(root / "current")) == "releases/v1"
    assert os.listdir(str(root / ".staging")) == []
