# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""awx/ without an AWX server: the survey is one AWX accepts and the rollout
accepts every default of, and every awx.awx task of awx/configure.yml passes
its module's argument checks (it fails only at connecting to a closed
loopback port). The rollout through ansible-runner on the fleet is
molecule/rollout/tests/test_awx_runner.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AWX = os.path.join(REPO, "awx")
COLLECTIONS = os.path.join(REPO, ".build", "collections")
# What AWX's survey validation knows.
TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")


def load_survey():
    with open(os.path.join(AWX, "survey.json"), encoding="utf-8") as handle:
        return json.load(handle)


def rollout_options():
    with open(os.path.join(REPO, "roles", "rollout", "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["argument_specs"]["main"]["options"]


def test_survey_is_valid_for_awx_and_names_only_rollout_settings():
    survey = load_survey()
    assert survey["name"] and isinstance(survey["spec"], list)
    names = [q["variable"] for q in survey["spec"]]
    assert len(names) == len(set(names))
    options = rollout_options()
    for question in survey["spec"]:
        assert question["question_name"] and question["type"] in TYPES, question
        assert isinstance(question["required"], bool)
        assert question["variable"] in options, question["variable"]
        # text or multiplechoice only: AWX passes every answer as a string, which the runner test reproduces.
        assert question["type"] in ("text", "multiplechoice"), question
        if question["type"] == "multiplechoice":
            assert question["default"] in question["choices"]
        elif question["default"]:
            assert question["min"] <= len(question["default"]) <= question["max"]
    for wanted in ("canary_version", "canary_artifact", "canary_steps", "canary_traffic_percent",
                   "canary_analysis_interval", "canary_analysis_count", "canary_pause", "canary_auto_rollback"):
        assert wanted in names


def test_survey_defaults_pass_the_rollout_checks_as_strings():
    answers = dict((q["variable"], q["default"]) for q in load_survey()["spec"])
    answers.update(canary_version="1.4.2", canary_artifact="https://repo.example/demoapp-1.4.2.tar.gz",
                   canary_backend="demoapp", canary_service="demoapp")
    settings, errors = engine.check_settings(answers)
    assert errors == []
    assert settings["steps"] == [1, "25%", "50%", "100%"] and settings["auto_rollback"] is True
    assert settings["pause"] == 0 and settings["artifact_url"] and not settings["artifact_remote"]
    settings, errors = engine.check_settings(dict(answers, canary_pause="manual", canary_artifact_remote="true"))
    assert settings["pause"] == "manual"
    assert errors == ["canary_artifact_checksum is required with canary_artifact_remote=true: every app host reads "
                      "https://repo.example/demoapp-1.4.2.tar.gz on its own, and only the sum proves they all "
                      "install the same release"]


def test_workflow_gates_the_canary_with_an_approval():
    with open(os.path.join(AWX, "configure.yml"), encoding="utf-8") as handle:
        play = yaml.safe_load(handle)[0]
    task = next(t for t in play["tasks"] if "awx.awx.workflow_job_template" in t)["awx.awx.workflow_job_template"]
    nodes = dict((n["identifier"], n) for n in play["vars"]["awx_workflow_nodes"])
    assert task["extra_vars"] == {"canary_fail_on_pause": False}
    assert nodes["canary"]["extra_data"] == {"canary_pause": "manual"}
    assert nodes["canary"]["related"] == {"success_nodes": [{"identifier": "approve"}]}
    assert nodes["approve"]["unified_job_template"]["type"] == "workflow_approval"
    assert nodes["approve"]["related"] == {"success_nodes": [{"identifier": "promote"}],
                                           "failure_nodes": [{"identifier": "roll-back"}]}
    assert nodes["promote"]["extra_data"] == {"canary_pause": "0"}
    # Workflow variables override node variables: the workflow's survey must not ask for the pause.
    assert task["survey_spec"] == "{{ awx_workflow_survey }}"
    assert "rejectattr('variable', 'equalto', 'canary_pause')" in play["vars"]["awx_workflow_survey"]


def load_play():
    with open(os.path.join(AWX, "configure.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)[0]


def awx_tasks(play, module):
    return [t[module] for t in play["tasks"] if module in t]


def test_every_template_asks_for_variables_on_launch():
    play = load_play()
    templates = awx_tasks(play, "awx.awx.job_template") + awx_tasks(play, "awx.awx.workflow_job_template")
    assert len(templates) == 3
    for template in templates:
        # canary_* settings the survey does not ask for can be passed at launch.
        assert template["ask_variables_on_launch"] is True, template["name"]


def test_the_workflow_nodes_are_made_one_by_one_and_linked_after():
    """The nodes by awx.awx.workflow_job_template_node, found by identifier (see
    test_awx_idempotent.py for two runs against a stand-in API): never through the
    workflow's workflow_nodes, which re-writes the approval template on every run,
    nor with destroy_current_nodes, which makes every node anew."""
    play = load_play()
    workflow = awx_tasks(play, "awx.awx.workflow_job_template")[0]
    assert "workflow_nodes" not in workflow and "destroy_current_nodes" not in workflow
    nodes = play["vars"]["awx_workflow_nodes"]
    identifiers = [n["identifier"] for n in nodes]
    assert len(identifiers) == len(set(identifiers)) == 4 and all(identifiers)
    for node in nodes:
        for links in (node.get("related") or {}).values():
            assert all(link["identifier"] in identifiers for link in links), node["identifier"]
    made, linked = [t for t in play["tasks"] if "awx.awx.workflow_job_template_node" in t]
    assert play["tasks"].index(made) < play["tasks"].index(linked)
    assert made["loop"] == "{{ awx_workflow_nodes }}" and "success_nodes" not in made[
        "awx.awx.workflow_job_template_node"]
    assert set(linked["awx.awx.workflow_job_template_node"]) >= {"success_nodes", "failure_nodes"}
    assert "approval_node" not in linked["awx.awx.workflow_job_template_node"]


def test_the_reports_go_where_the_job_can_keep_them():
    play = load_play()
    assert play["vars"]["awx_report_dir"] == "" and play["vars"]["awx_expose_report_dir"] is False
    for template in awx_tasks(play, "awx.awx.job_template"):
        assert template["extra_vars"] == "{{ awx_job_extra_vars }}"
    assert "'canary_report_dir': awx_report_dir" in play["vars"]["awx_job_extra_vars"]
    setting = [t for t in play["tasks"] if "awx.awx.settings" in t][0]
    assert setting["awx.awx.settings"]["name"] == "AWX_ISOLATION_SHOW_PATHS"
    assert setting["when"] == "awx_expose_report_dir | bool and awx_report_dir | length > 0"


@pytest.mark.slow
def test_every_awx_task_passes_its_module_argument_checks(tmp_path):
    with open(os.path.join(AWX, "configure.yml"), encoding="utf-8") as handle:
        plays = yaml.safe_load(handle)
    for task in plays[0]["tasks"]:
        task["ignore_errors"] = True
    (tmp_path / "configure.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    shutil.copy(os.path.join(AWX, "survey.json"), str(tmp_path))
    exe = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOCALHOST_WARNING="false", CONTROLLER_HOST="http://127.0.0.1:9", CONTROLLER_USERNAME="x",
               CONTROLLER_PASSWORD="y", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([exe, str(tmp_path / "configure.yml"), "-e", "awx_scm_url=https://git.example/deploy.git",
                           "-e", "awx_inventory=production", "-e", "awx_credential=fleet",
                           "-e", "awx_report_dir=/var/lib/canary-reports", "-e", "awx_expose_report_dir=true"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    results = dict((t["task"]["name"], t["hosts"]["localhost"]) for t in tasks if t["task"]["name"] != "Check the inputs")
    assert len(results) == 7
    for name, result in results.items():
        # Past the argument checks, stopped at the connection (a loop's every item).
        for one in result.get("results") or [result]:
            assert one["failed"] and "Connection refused" in one["msg"], (name, one)
