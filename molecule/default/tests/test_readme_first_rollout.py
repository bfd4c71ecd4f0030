# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""README.md's "A first rollout on your own fleet", followed as a user would on
a fresh install: the collection built into a tarball (scripts/build-collection.sh),
installed with ansible-galaxy into a collections path of its own (not the
work tree's symlink), then the README's inventory, playbook and command, taken
from the README's code blocks, run against the local test fleet.

What the test adds to the README, and nothing else:
- a second inventory that ties the README's example names to the test fleet:
  how to reach each host (the docker connection, the container as ansible_host),
  the fleet's HAProxy server names as canary_server, its backend and unit
  (demoapp) as canary_backend and canary_service;
- a short analysis window (-e canary_analysis_interval=4 canary_analysis_count=2),
  as the rollout scenario's tests use, to keep the test within a few minutes;
- the README's artifact, shop-1.4.2.tar.gz, is the demo app built as 1.4.2.
Runs last in the default scenario's verify (the fleet is destroyed after it),
and last in the rollout scenario's, which runs this directory's tests too
(make test; molecule/rollout/tests/conftest.py orders it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "molecule", "shared", "files"))
from fleet_test import ansible_env, docker, haproxy_state, version_of  # noqa: E402  pylint: disable=wrong-import-position

SECTION = "## A first rollout on your own fleet"
BALANCERS = ["lb1", "lb2"]
APPS = ["app%d" % i for i in range(1, 7)]


def readme_blocks():
    """The fenced code blocks of the README's first-rollout section, in order: (info string, text)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    return re.findall(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S)


def first_rollout():
    """The README's inventory (a mapping), playbook (text) and command (argv)."""
    blocks = readme_blocks()
    assert [block[0] for block in blocks] == ["yaml", "yaml", ""], blocks
    inventory, playbook, command = (block[1] for block in blocks)
    argv = shlex.split(command)
    assert argv[0] == "ansible-playbook" and len(command.strip().splitlines()) == 1, command
    return yaml.safe_load(inventory), playbook, argv


def overlay_for(inventory):
    """The test fleet's names for the README's hosts (in order: balancers, then app hosts)."""
    children = inventory["all"]["children"]
    readme_balancers = list(children["balancers"]["hosts"])
    readme_apps = list(children["app"]["hosts"])
    assert len(readme_balancers) == len(BALANCERS) and len(readme_apps) == len(APPS), (readme_balancers, readme_apps)
    hosts = dict((name, {"ansible_host": lb}) for name, lb in zip(readme_balancers, BALANCERS))
    hosts.update((name, {"ansible_host": app, "canary_server": app}) for name, app in zip(readme_apps, APPS))
    return {"all": {
        "vars": {"canary_backend": "demoapp", "canary_service": "demoapp",
                 "ansible_connection": "community.docker.docker",
                 "ansible_python_interpreter": "/usr/bin/python3", "ansible_pipelining": True},
        "hosts": hosts}}


def fresh_install(tmp):
    """The collection as a user gets it: built, then installed from its tarball into tmp/collections."""
    dist = os.path.join(tmp, "dist")
    subprocess.run([os.path.join(REPO, "scripts", "build-collection.sh"), "--out", dist], check=True,
                   capture_output=True, text=True, timeout=600)
    tarballs = [n for n in os.listdir(dist) if n.startswith("grayrelease-canary-") and n.endswith(".tar.gz")]
    assert len(tarballs) == 1, tarballs
    collections = os.path.join(tmp, "collections")
    env = user_env(collections)
    subprocess.run(["ansible-galaxy", "collection", "install", "--offline", "-p", collections,
                    os.path.join(dist, tarballs[0])], check=True, capture_output=True, text=True, env=env,
                   timeout=300)
    return collections, env


def user_env(collections):
    """Ansible sees only the installed copy: the work tree's collection path and
    PYTHONPATH are gone (community.docker, for the test fleet's connection,
    still comes from the `ansible` package in site-packages)."""
    env = ansible_env()
    env.pop("ANSIBLE_STRATEGY")  # the README's steps, literally: the default strategy
    env.pop("PYTHONPATH", None)
    for key in list(env):
        if key.startswith("MOLECULE_"):
            env.pop(key)
    env["ANSIBLE_COLLECTIONS_PATH"] = collections
    return env


def served_versions(balancer, host, requests=3):
    """What the app host answers on /version, asked from a balancer as HAProxy asks it."""
    out = docker("exec", balancer, "sh", "-c",
                 'for i in $(seq %d); do curl -sS -m 5 http://%s:8080/version; echo; done' % (requests, host),
                 timeout=60).stdout
    return set(json.loads(line)["version"] for line in out.splitlines() if line.strip())


def test_the_readme_first_rollout_on_a_fresh_install(tmp_path):
    inventory, playbook, argv = first_rollout()
    tmp = str(tmp_path)
    collections, env = fresh_install(tmp)

    # Only the installed copy is there to be found.
    listed = subprocess.run(["ansible-galaxy", "collection", "list", "grayrelease.canary", "--format", "json"],
                            check=True, capture_output=True, text=True, env=env, timeout=120)
    found = json.loads(listed.stdout)
    assert list(found) == [os.path.join(collections, "ansible_collections")], found

    # The files the README names, with the README's words in them; the command as the README writes it.
    with open(os.path.join(tmp, "fleet.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(inventory, handle)
    with open(os.path.join(tmp, "rollout.yml"), "w", encoding="utf-8") as handle:
        handle.write(playbook)
    with open(os.path.join(tmp, "test-fleet.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(overlay_for(inventory), handle)
    extra = dict(arg.split("=", 1) for flag, arg in zip(argv, argv[1:]) if flag == "-e")
    version, artifact = extra["canary_version"], extra["canary_artifact"]
    subprocess.run([os.path.join(REPO, "scripts", "build-release.sh"), version, "--out", tmp], check=True,
                   capture_output=True, text=True, timeout=120)
    shutil.move(os.path.join(tmp, "demoapp-%s.tar.gz" % version), os.path.join(tmp, artifact))
    before = dict((app, version_of(app)) for app in APPS)
    assert len(set(before.values())) == 1 and before["app1"] != version, before

    cmd = argv + ["-i", "test-fleet.yml", "-e", "canary_analysis_interval=4", "-e", "canary_analysis_count=2"]
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=1200, check=False)
    seconds = round(time.monotonic() - started, 1)
    print("%s: %s s, rc %d" % (" ".join(cmd), seconds, res.returncode))
    print(res.stdout[-6000:])
    print(res.stderr[-3000:])

    assert res.returncode == 0, res.stdout[-3000:]
    # The reports where the README says they are, and the rollout the README describes.
    with open(os.path.join(tmp, "canary-reports", "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["decision"] == "promoted", report.get("reason")
    assert report["version"] == version and report["previous_version"] == before["app1"]
    readme_apps = list(inventory["all"]["children"]["app"]["hosts"])
    assert report["hosts"] == dict((name, version) for name in readme_apps), report["hosts"]
    # canary_steps [1, '50%', '100%'] and canary_max_unavailable 1: 1, then 3, then 6 hosts, one at a time.
    assert [len(step["batches"]) for step in report["steps"]] == [1, 2, 3], report["steps"]
    assert all(len(batch) == 1 for batch in report["plan"]), report["plan"]
    assert report["steps"][0]["canary"] is True and report["steps"][0]["judge"]["verdict"] == "pass"
    assert all(step["outcome"] == "ok" for step in report["steps"])
    for name in ("report.md", "report.html"):
        assert os.path.isfile(os.path.join(tmp, "canary-reports", name)), name

    # Every host serves the new version, and both balancers route to all of them again.
    for app in APPS:
        assert version_of(app) == version, (app, version_of(app))
        assert served_versions("lb1", app) == {version}, app
    for lb in BALANCERS:
        state = haproxy_state(lb)
        for app in APPS:
            server = state[app]
            assert (server["admin_state"], server["status"]) == ("ready", "UP"), (lb, app, server)
            assert server["weight"] == server["initial_weight"], (lb, app, server)
