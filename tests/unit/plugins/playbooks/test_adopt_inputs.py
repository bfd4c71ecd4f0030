# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""grayrelease.canary.adopt refuses bad input before it touches a host: the
check is the play's first task and names every value. The fleet run is
molecule/adopt."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _balancer_lab import run_playbook  # noqa: E402


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts.ini"
    # Local connection: a check that let bad input through would reach nothing outside this machine.
    path.write_text("[app]\napp1\n[balancers]\nlb1\n[all:vars]\nansible_connection=local\n"
                    "ansible_python_interpreter=%s\ncanary_service=demo\ncanary_backend=demo\n" % sys.executable)
    return str(path)


@pytest.mark.parametrize("extra, named", [
    (["-e", "adopt_version=../x", "-e", "adopt_artifact=/tmp/a.tar.gz"], 'adopt_version="../x"'),
    (["-e", "adopt_version=v1"], 'adopt_artifact="", adopt_src=""'),
    (["-e", "adopt_version=v1", "-e", "adopt_src=srv/app"], 'adopt_src="srv/app"'),
])
def test_bad_input_is_named_before_any_host_is_touched(inventory, extra, named):
    res = run_playbook(inventory, "grayrelease.canary.adopt", extra)
    assert res.rc != 0
    failures = res.failures()
    assert list(failures) == ["app1"], res.explain()
    assert named in failures["app1"], failures
    # Only the check ran: nothing reached the (unreachable) host.
    ran = [t["task"]["name"] for t in res.tasks()]
    assert ran == ["Adopt | check the inputs"], ran
