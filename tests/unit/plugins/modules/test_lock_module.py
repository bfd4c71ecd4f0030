# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.rollout_lock through a real ansible-playbook run on localhost."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    lock: "{{ lock_dir }}/sub/demoapp.lock"
  tasks:
    - name: Check mode acquire changes nothing
      grayrelease.canary.rollout_lock: {path: "{{ lock }}", owner: alice}
      check_mode: true
      register: r_check
    - ansible.builtin.stat: {path: "{{ lock }}"}
      register: st_check
    - name: Acquire
      grayrelease.canary.rollout_lock: {path: "{{ lock }}", owner: alice, ttl: 600}
      register: r_acq
    - name: Someone else is refused
      grayrelease.canary.rollout_lock: {path: "{{ lock }}", owner: bob}
      register: r_bob
      ignore_errors: true
    - name: Bob cannot release it either
      grayrelease.canary.rollout_lock: {path: "{{ lock }}", owner: bob, state: absent}
      register: r_bob_rel
    - name: Alice releases
      grayrelease.canary.rollout_lock: {path: "{{ lock }}", owner: alice, state: absent}
      register: r_rel
    - ansible.builtin.stat: {path: "{{ lock }}"}
      register: st_after
    - name: Who this run is
      grayrelease.canary.rollout_lock: {state: identity}
      register: r_id
    - ansible.builtin.copy:
        dest: "{{ lock_dir }}/out.json"
        content: "{{ {'check': r_check, 'st_check': st_check.stat.exists, 'acq': r_acq,
                      'bob': r_bob, 'bob_rel': r_bob_rel, 'rel': r_rel,
                      'st_after': st_after.stat.exists, 'id': r_id} | to_json }}"
        mode: "0644"
"""


@pytest.mark.slow
def test_rollout_lock_module_through_ansible(tmp_path):
    exe = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable),
                                                           "ansible-playbook")
    pb = tmp_path / "pb.yml"
    pb.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.Popen(
        [exe, "-i", "localhost,", "-c", "local", "-e", "lock_dir=%s" % tmp_path,
         "-e", "ansible_python_interpreter=%s" % sys.executable, str(pb)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout + stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["check"]["changed"] and out["check"]["acquired"] and not out["st_check"]
    assert out["acq"]["changed"] and out["acq"]["lock"]["owner"] == "alice"
    assert out["acq"]["lock"]["ttl"] == 600
    assert out["bob"]["failed"] and out["bob"]["owner"] == "alice"
    assert "alice" in out["bob"]["msg"]
    assert not out["bob_rel"]["released"] and not out["bob_rel"]["changed"]
    assert out["rel"]["released"] and out["rel"]["changed"] and not out["st_after"]
    # the refused release was surfaced as a warning
    assert "left in place" in stdout + stderr
    # the lock directory is private; its guard stays, the lock is gone
    assert stat.S_IMODE(os.stat(str(tmp_path / "sub")).st_mode) == 0o700
    assert os.listdir(str(tmp_path / "sub")) == [".demoapp.lock.guard"]
    # the identity names this ansible-playbook process (found from the module
    # through the worker it forked), as it runs now
    info = out["id"]["identity"]["info"]
    assert info["controller_pid"] == proc.pid and isinstance(info["controller_start"], int)
    assert out["id"]["identity"]["owner"].endswith(" pid %d run %s" % (proc.pid, info["run"]))
    assert not out["id"]["changed"]
