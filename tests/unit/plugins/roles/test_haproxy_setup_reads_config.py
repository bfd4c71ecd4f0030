# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The haproxy_setup role reads an HAProxy configuration, through
ansible-playbook in check mode on localhost (nothing written): what it finds
outside its own blocks is the same on every ansible-core of the matrix
(scripts/matrix.sh). Before 2.19 a template result that looks like JSON comes
back as a dict on its own, which made the role's from_json fail on 2.16."""

from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _decisions_helpers import REPO, VENV_BIN, ansible_env  # noqa: E402

CONFIG = """\
global
    log /dev/log local0
    stats socket /run/haproxy/admin.sock mode 660 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind :80
    default_backend web
backend web
    server s1 127.0.0.1:8001 check
    server s2 127.0.0.1:8002 no-check  # a server that opts out
"""


def test_what_the_role_finds_in_a_configuration(tmp_path):
    (tmp_path / "haproxy.cfg").write_text(CONFIG)
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_role": {"name": "grayrelease.canary.haproxy_setup"},
             "vars": {"canary_backend": "web", "haproxy_setup_config": str(tmp_path / "haproxy.cfg"),
                      "haproxy_setup_socket": "/run/haproxy/admin.sock", "haproxy_setup_reload": False,
                      "haproxy_setup_validate": "true %s", "haproxy_setup_dropin": str(tmp_path / "dropin.conf"),
                      "haproxy_setup_saver_dir": str(tmp_path / "saver")}},
            {"ansible.builtin.copy": {"content": "{{ haproxy_setup_found | to_json }}",
                                      "dest": str(tmp_path / "found.json")},
             "check_mode": False},
        ]}]
    (tmp_path / "play.json").write_text(json.dumps(play))
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check",
                           "-e", "ansible_python_interpreter=" + sys.executable, str(tmp_path / "play.json")],
                          env=ansible_env(), cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    found = json.loads((tmp_path / "found.json").read_text())
    assert found == {"global": True, "backend": True,
                     "sockets": ["stats socket /run/haproxy/admin.sock mode 660 level admin"],
                     "state_files": [], "loads": [], "no_check": ["s2"]}
    assert (tmp_path / "haproxy.cfg").read_text() == CONFIG   # check mode: nothing written
