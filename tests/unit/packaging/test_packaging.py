# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as users get it: the built tarball's contents, the
execution environment ansible-builder makes of it, the license, the docs
linters (antsibull-docs, antsibull-changelog), version_added everywhere,
the haproxy action group under module_defaults against a real HAProxy, and
the generated variables table in step with the role."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "plugins"))
from _balancer_lab import REPO, run_playbook  # noqa: E402
from _haproxy_fixture import running_lab  # noqa: E402

BIN = os.path.dirname(sys.executable)
GALAXY = yaml.safe_load(open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8"))
VERSION = GALAXY["version"]
TARBALL = "grayrelease-canary-%s.tar.gz" % VERSION


def tool(name, *args, cwd=REPO, timeout=300, env=None):
    return subprocess.run([os.path.join(BIN, name)] + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("collection")
    res = tool("ansible-galaxy", "collection", "build", "--force", "--output-path", str(out), ".")
    assert res.returncode == 0, res.stderr
    return os.path.join(str(out), TARBALL)


def test_license_is_the_gpl3_text_galaxy_names():
    assert GALAXY["license"] == ["GPL-3.0-or-later"]
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as handle:
        text = handle.read()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text[:200]
    assert "END OF TERMS AND CONDITIONS" in text


def test_tarball_ships_what_users_need_and_no_development_files(tarball):
    with tarfile.open(tarball) as tar:
        names = set(m.name for m in tar.getmembers())
    for needed in ("LICENSE", "README.md", "MANIFEST.json", "FILES.json", "meta/runtime.yml",
                   "meta/execution-environment.yml", "requirements.txt", "bindep.txt",
                   "plugins/modules/haproxy_server.py", "plugins/module_utils/_engine/__init__.py",
                   "plugins/callback/rollout_progress.py", "plugins/filter/rollout_plan.py",
                   "roles/rollout/tasks/main.yml", "roles/rollout/meta/argument_specs.yml",
                   "playbooks/rollout.yml", "playbooks/adopt.yml", "docs/user-guide.md", "docs/adopt.md",
                   "docs/variables.md", "docs/examples/inventory.yml", "changelogs/changelog.yaml"):
        assert needed in names, "%s missing from %s" % (needed, os.path.basename(tarball))
    dev = ("molecule", "inventory", "scripts", "demoapp", "tests", "bench", ".ci", "images", "dist",
           "canary-reports", ".venv", ".build", ".git", ".benchmarks", ".pytest_cache", "Makefile", "execution-environment.yml",
           "requirements-test.txt", "pytest.ini")
    shipped = sorted(n for n in names if n.split("/")[0] in dev or "__pycache__" in n or n.endswith(".pyc"))
    assert shipped == [], "development files in the tarball: %s" % shipped[:20]


def test_execution_environment_stays_in_the_tested_range():
    """The EE's base is pinned (a tag or a digest, never :latest, which moves
    to ansible-core releases no test ran) and its ansible-core requirement
    allows only the versions make test runs: the matrix's
    (tests/matrix/core-*.txt) and the main venv's (requirements-test.txt)."""
    with open(os.path.join(REPO, "execution-environment.yml"), encoding="utf-8") as handle:
        ee = yaml.safe_load(handle)
    base = ee["images"]["base_image"]["name"]
    assert "@sha256:" in base or (":" in base.rsplit("/", 1)[-1] and not base.endswith(":latest")), base
    tested = sorted(os.path.basename(p)[len("core-"):-len(".txt")]
                    for p in glob.glob(os.path.join(REPO, "tests", "matrix", "core-*.txt")))
    with open(os.path.join(REPO, "requirements-test.txt"), encoding="utf-8") as handle:
        main_core = [line.strip() for line in handle if line.startswith("ansible-core")]
    assert main_core == ["ansible-core>=2.19,<2.20"], main_core
    tested.append("2.19")
    assert tested == ["2.16", "2.17", "2.18", "2.19"], tested
    # The lowest tested minor is the floor, the one after the newest the ceiling.
    newest = tested[-1].split(".")
    expected = "ansible-core>=%s,<%s.%d" % (tested[0], newest[0], int(newest[1]) + 1)
    assert ee["dependencies"]["ansible_core"]["package_pip"] == expected
    with open(os.path.join(REPO, "meta", "runtime.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["requires_ansible"] == ">=%s.0" % tested[0]


def test_execution_environment_context(tarball, tmp_path):
    """ansible-builder create on the repository's EE definition, with the
    tarball where `make build` leaves it; then the context's own galaxy step
    and introspection, as the image build would run them, must install the
    collection and find its Python and system requirements."""
    shutil.copy(os.path.join(REPO, "execution-environment.yml"), str(tmp_path))
    os.makedirs(str(tmp_path / "dist" / "collection"))
    shutil.copy(tarball, str(tmp_path / "dist" / "collection"))
    res = tool("ansible-builder", "create", "-f", str(tmp_path / "execution-environment.yml"),
               "-c", str(tmp_path / "context"), "--output-filename", "Containerfile", cwd=str(tmp_path))
    output = res.stdout + res.stderr
    assert res.returncode == 0, output
    assert "No matches" not in output and "WARNING" not in output.upper(), output
    build = tmp_path / "context" / "_build"
    with open(str(tmp_path / "context" / "Containerfile"), encoding="utf-8") as handle:
        containerfile = handle.read()
    assert 'ARG EE_BASE_IMAGE="ghcr.io/ansible-community/community-ee-minimal:2.19.3-1"' in containerfile
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile and "install-from-bindep" in containerfile
    # The progress view is on in every job the image runs, in the final image (not a build stage).
    final = containerfile.rsplit("\nFROM ", 1)[-1]
    assert "\nENV ANSIBLE_CALLBACKS_ENABLED=grayrelease.canary.rollout_progress\n" in final, containerfile[-600:]
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "collections/" + TARBALL, "type": "file"}]}, \
        "execution-environment.yml must name the tarball of galaxy.yml's version %s" % VERSION
    assert (build / "collections" / TARBALL).is_file()
    # The galaxy stage of the image build, offline, then its introspection.
    installed = tmp_path / "installed"
    res = tool("ansible-galaxy", "collection", "install", "--offline", "-r", "requirements.yml", "-p", str(installed),
               cwd=str(build), env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed),
                                        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", PYTHONPATH=""))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (installed / "ansible_collections" / "grayrelease" / "canary" / "meta" / "execution-environment.yml").is_file()
    res = subprocess.run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", str(installed)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    found = yaml.safe_load(res.stdout)
    assert "jmespath  # from collection grayrelease.canary" in found["python"], found
    assert "openssh-client [platform:dpkg]  # from collection grayrelease.canary" in found["system"], found


def _documentation(path):
    """The DOCUMENTATION of a plugin: its .py constant or its adjacent .yml."""
    if path.endswith(".yml"):
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)["DOCUMENTATION"]
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)
    return None


def test_every_plugin_and_role_entry_point_has_version_added():
    missing = []
    docs = glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")) + \
        glob.glob(os.path.join(REPO, "plugins", "callback", "*.py")) + \
        glob.glob(os.path.join(REPO, "plugins", "filter", "*.yml"))
    assert len(docs) >= 10
    for path in docs:
        doc = _documentation(path)
        if not doc or str(doc.get("version_added", "")).count(".") != 2:
            missing.append(os.path.relpath(path, REPO))
    specs = glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml"))
    assert len(specs) >= 5
    for path in specs:
        with open(path, encoding="utf-8") as handle:
            entry_points = yaml.safe_load(handle)["argument_specs"]
        for name, spec in entry_points.items():
            if str(spec.get("version_added", "")).count(".") != 2:
                missing.append("%s:%s" % (os.path.relpath(path, REPO), name))
    assert missing == []


@pytest.mark.slow
def test_antsibull_docs_lint_is_clean():
    res = tool("antsibull-docs", "lint-collection-docs", "--plugin-docs", ".")
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_changelog_fragments_lint_clean():
    res = tool("antsibull-changelog", "lint")
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_variables_doc_matches_the_role():
    res = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "variables-doc.py"), "--check"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr


@pytest.fixture
def lab():
    yield from running_lab()


@pytest.mark.haproxy
def test_module_defaults_group_sets_socket_and_backend(lab, tmp_path):
    """group/grayrelease.canary.haproxy in module_defaults reaches both modules:
    neither task names a socket or a backend."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/grayrelease.canary.haproxy": {"socket": lab.admin, "backend": "web"}},
        "tasks": [
            {"name": "info", "grayrelease.canary.haproxy_info": {}, "register": "info"},
            {"name": "drain",
             "grayrelease.canary.haproxy_server": {"servers": ["s1"], "state": "drain", "drain_timeout": 5}},
            {"name": "seen", "ansible.builtin.assert": {"that": ["info.backends.web.s1.admin_state == 'ready'"]}},
        ]}]
    playbook = tmp_path / "play.json"
    playbook.write_text(json.dumps(play))
    res = run_playbook(str(inventory), str(playbook))
    assert res.rc == 0, res.explain()
    drained = [line.split() for line in lab.raw("show servers state web").splitlines()
               if not line.startswith("#") and " s1 " in line]
    assert drained and int(drained[0][6]) & 0x08, drained  # srv_admin_state FDRAIN


# Modules that talk to HAProxy's admin socket or write the lock on a balancer:
# the socket is usually root's, so every such task must honour the role's
# become variable (canary_become and the roles' own defaults from it).
BALANCER_MODULES = ("grayrelease.canary.haproxy_server", "grayrelease.canary.haproxy_info",
                    "grayrelease.canary.balancer_server", "grayrelease.canary.balancer_info",
                    "grayrelease.canary.haproxy_log", "grayrelease.canary.rollout_lock")


def _tasks(items):
    for task in items or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))
        yield task


def test_every_balancer_task_of_every_role_honours_become():
    missing, seen = [], 0
    for path in sorted(glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            for task in _tasks(yaml.safe_load(handle)):
                if any(name in task for name in BALANCER_MODULES):
                    seen += 1
                    become = str(task.get("become", ""))
                    if not (become.startswith("{{") and "become" in become):
                        missing.append("%s: %s" % (os.path.relpath(path, REPO), task.get("name")))
    assert seen >= 15, seen  # the walk finds them (18 when this was written)
    assert missing == [], "balancer tasks without become from the role's variable:\n" + "\n".join(missing)
