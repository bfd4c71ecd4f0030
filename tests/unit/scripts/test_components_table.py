# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""README.md, the collection's Galaxy page: its components table is the one
scripts/components-table.py makes from the plugins and roles (a stale table
fails here), and every link in it works on Galaxy (absolute, to the
repository galaxy.yml names)."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "scripts", "components-table.py")


def script():
    spec = importlib.util.spec_from_file_location("components_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def test_the_readme_table_is_the_generated_one():
    run = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_stale_table_is_found_and_rewritten():
    tool = script()
    text = readme()
    stale = text.replace(re.search(r"\| module \| `grayrelease.canary.health_check` \|[^\n]*\n", text).group(), "")
    stale = stale.replace("Drain, ready, put in maintenance or re-weight HAProxy servers", "Old words")
    assert stale != text and tool.rewrite(stale) == text
    run = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, check=False,
                         env=dict(os.environ))
    assert run.returncode == 0
    # Without its markers the README is refused, not silently left alone.
    try:
        tool.rewrite(text.replace(tool.END, ""))
    except SystemExit as exc:
        assert "markers" in str(exc)
    else:
        raise AssertionError("a README without the end marker was accepted")


def test_every_documented_plugin_and_role_has_its_row():
    tool = script()
    table = tool.table()
    modules = [n[:-3] for n in os.listdir(os.path.join(REPO, "plugins", "modules")) if n.endswith(".py")]
    assert len(modules) >= 13
    for name in modules:
        assert "| module | `grayrelease.canary.%s` |" % name in table, name
    for name in os.listdir(os.path.join(REPO, "roles")):
        assert "| role | `grayrelease.canary.%s` |" % name in table, name
    for name in ("rollout", "rollback", "status", "adopt"):
        assert "| playbook | `grayrelease.canary.%s` |" % name in table, name
    for name in ("rollout_plan", "rollout_steps", "canary_weights", "canary_metrics"):
        assert "| filter | `grayrelease.canary.%s` |" % name in table, name
    assert "| callback | `grayrelease.canary.rollout_progress` |" in table
    # The rollout role's own action plugins: documented, and their row says they are internal.
    assert tool.undocumented_actions() == []
    for name in ("balancer_info", "balancer_server", "rollout_release"):
        assert "| module | `grayrelease.canary.%s` | Internal to the rollout role - " % name in table, name
    # Each row's words are its plugin's own short_description.
    with open(os.path.join(REPO, "plugins", "modules", "haproxy_info.py"), encoding="utf-8") as handle:
        short = re.search(r"^short_description: (.*)$", handle.read(), re.M).group(1)
    assert "| module | `grayrelease.canary.haproxy_info` | %s |" % short in table


def test_an_action_plugin_without_its_documentation_is_refused(monkeypatch):
    tool = script()
    real_listdir = os.listdir

    def listdir(path):
        names = real_listdir(path)
        return names + ["shadow_step.py"] if path.endswith(os.path.join("plugins", "action")) else names
    monkeypatch.setattr(tool.os, "listdir", listdir)
    assert tool.undocumented_actions() == ["shadow_step"]
    try:
        tool.table()
    except SystemExit as exc:
        assert "shadow_step" in str(exc) and "plugins/modules/NAME.py" in str(exc)
    else:
        raise AssertionError("an undocumented action plugin was accepted")


def test_every_readme_link_works_on_galaxy():
    with open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8") as handle:
        repository = yaml.safe_load(handle)["repository"].rstrip("/")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme())
    assert len(targets) > 15
    for target in targets:
        # Galaxy shows the README without the repository around it: a relative link leads nowhere.
        assert target.startswith(("https://", "#")), target
        if "github" in target:
            assert target.startswith((repository + "/", repository.replace(
                "https://github.com/", "https://raw.githubusercontent.com/") + "/")), target
    # The files they name exist in this tree.
    for target in targets:
        for prefix in (repository + "/blob/main/", repository + "/tree/main/",
                       repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"):
            if target.startswith(prefix):
                path = target[len(prefix):].split("#")[0]
                assert os.path.exists(os.path.join(REPO, path)), target


def test_the_readme_says_what_is_tested_and_how_to_install():
    text = readme()
    assert "ansible-galaxy collection install grayrelease.canary" in text
    assert re.search(r"ansible-galaxy collection install grayrelease-canary-[0-9.]+\.tar\.gz", text)
    # The controller row names every core the tests run: the main venv's 2.19
    # and the matrix's (tests/matrix/core-*.txt).
    row = [line for line in text.splitlines() if line.startswith("| controller | ansible-core 2.19 on Python 3.11")]
    assert len(row) == 1, "README's 'What is tested' has no controller row for 2.19 on Python 3.11"
    matrix = sorted(os.path.basename(p)[len("core-"):-len(".txt")]
                    for p in glob.glob(os.path.join(REPO, "tests", "matrix", "core-*.txt")))
    assert matrix and "%s and %s on Python 3.11" % (", ".join(matrix[:-1]), matrix[-1]) in row[0], (matrix, row)
    assert "Debian 12 (bookworm), Python 3.11" in text
    # Users first: the developer's make targets come after the user's sections.
    assert text.index("## A first rollout on your own fleet") < text.index("| `make rollout` |")
    assert text.index("## What is in the collection") < text.index("## Developing the collection")
