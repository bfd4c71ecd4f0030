# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer role with canary_haproxy_socket unset carries no socket of
its own: the option is omitted, so the haproxy modules' default applies.
(Note: in ansible-core 2.19 an omitted option is not filled in from
module_defaults, so a module_defaults socket does not reach the role.)
A real HAProxy on loopback, through ansible-playbook."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _balancer_lab import role_play, run_playbook  # noqa: E402
from _haproxy_fixture import running_lab  # noqa: E402

pytestmark = [pytest.mark.haproxy]


@pytest.fixture
def lab():
    yield from running_lab()


def _inventory(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[balancers]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n"
                         % sys.executable)
    return str(inventory)


def test_unset_socket_is_the_modules_default(lab, tmp_path):
    """No socket anywhere: the module's default path is the one tried (and
    named in the failure, since the lab's socket lives elsewhere)."""
    playbook = tmp_path / "play.json"
    playbook.write_text(json.dumps([role_play("balancers", "drain", ["s1"], {"canary_backend": "web"})]))
    res = run_playbook(_inventory(tmp_path), str(playbook))
    assert res.rc != 0
    assert "/run/haproxy/admin.sock" in res.stdout + res.stderr, res.explain()
