# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""awx/configure.yml run twice against a stand-in for AWX's API (_fake_awx.py,
on loopback) with the awx.awx collection the tests install: the first run
makes the objects, the second makes, deletes and links nothing.

What this does not prove: the stand-in is not AWX. It keeps what it is given
and answers the list, detail, association and survey views the way AWX's
API documentation describes them; no run against a live AWX was made."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _fake_awx import FakeAWX, serve  # noqa: E402  pylint: disable=wrong-import-position
from test_awx_as_code import AWX, COLLECTIONS  # noqa: E402  pylint: disable=wrong-import-position


def configure(base, tmp_path, *more):
    exe = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOCALHOST_WARNING="false", CONTROLLER_HOST=base, CONTROLLER_OAUTH_TOKEN="token",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, HOME=str(tmp_path))
    env.pop("CONTROLLER_USERNAME", None)
    env.pop("CONTROLLER_PASSWORD", None)
    proc = subprocess.run([exe, os.path.join(AWX, "configure.yml"), "-e", "awx_scm_url=https://git.example/deploy.git",
                           "-e", "awx_inventory=production", "-e", "awx_credential=fleet",
                           "-e", "awx_report_dir=/var/lib/canary-reports", "-e", "awx_expose_report_dir=true"]
                          + list(more), env=env, capture_output=True, text=True, timeout=300, check=False, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    return dict((t["task"]["name"], t["hosts"]["localhost"]) for t in tasks)


@pytest.mark.slow
def test_a_second_run_of_configure_changes_nothing(tmp_path):
    fake = FakeAWX()
    server, base = serve(fake)
    try:
        first = configure(base, tmp_path)
        made = dict((c, sorted(i["id"] for i in items.values())) for c, items in fake.objects.items())
        writes_before = len(fake.writes)
        second = configure(base, tmp_path)
        writes_after_second = len(fake.writes)
        # A changed setting: the approval's timeout, changed in place.
        third = configure(base, tmp_path, "-e", "awx_approval_timeout=3600")
    finally:
        server.shutdown()
    assert all(r.get("changed") for n, r in first.items() if n != "Check the inputs"), first
    # The objects the first run made: the workflow's 4 nodes, its approval's template, the 3 templates, the project.
    assert len(made["workflow_job_template_nodes"]) == 4 and len(made["workflow_approval_templates"]) == 1
    assert len(made["job_templates"]) == 2 and len(made["workflow_job_templates"]) == 1
    nodes = dict((n["identifier"], n) for n in fake.objects["workflow_job_template_nodes"].values())
    assert fake.links[("workflow_job_template_nodes", nodes["canary"]["id"], "success_nodes")] == [nodes["approve"]["id"]]
    assert fake.links[("workflow_job_template_nodes", nodes["approve"]["id"], "failure_nodes")] == [
        nodes["roll-back"]["id"]]
    for template in fake.objects["job_templates"].values():
        assert template["ask_variables_on_launch"] is True
        assert json.loads(template["extra_vars"]) == {"canary_report_dir": "/var/lib/canary-reports"}
    assert fake.settings["AWX_ISOLATION_SHOW_PATHS"] == ["/var/lib/canary-reports"]
    # The second run: the same objects, nothing created, deleted, linked or reported changed.
    assert dict((c, sorted(i["id"] for i in items.values())) for c, items in fake.objects.items()) == made
    second_writes = fake.writes[writes_before:]
    assert [w for w in second_writes if w[0] in ("POST", "DELETE")] == [], second_writes
    changed = dict((n, r) for n, r in second.items() if r.get("changed"))
    assert changed == {}, (changed, second_writes)
    # The third run: one PATCH of the approval's template, the same objects (ids), no node made or deleted.
    assert [n for n, r in third.items() if r.get("changed")] == ["The workflow's nodes"]
    third_writes = fake.writes[writes_after_second:]
    assert [(w[0], w[1].split("/")[0]) for w in third_writes] == [("PATCH", "workflow_approval_templates")], third_writes
    assert dict((c, sorted(i["id"] for i in items.values())) for c, items in fake.objects.items()) == made
    assert [str(a["timeout"]) for a in fake.objects["workflow_approval_templates"].values()] == ["3600"]
