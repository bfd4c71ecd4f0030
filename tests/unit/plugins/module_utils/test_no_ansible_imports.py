# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why the ansible-core matrix (scripts/matrix.sh unit) leaves out the
module_utils, scripts and docs tests: neither they, the test helpers they import,
nor the code they test import anything of ansible-core or of the collection's
other plugins, so their outcome cannot differ from one core to another. A new
import of ansible there fails this test, and the matrix must then run them."""
from __future__ import annotations

import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.dirname(os.path.dirname(HERE))
REPO = os.path.dirname(os.path.dirname(UNIT))
HELPERS = os.path.dirname(HERE)  # tests/unit/plugins: the _*.py helpers on sys.path
ALLOWED = "ansible_collections.grayrelease.canary.plugins.module_utils"


def _python_files(top):
    for root, _dirs, files in os.walk(top):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def _imports(path):
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def _core_bound(module):
    """True for an import whose outcome depends on the ansible-core installed."""
    if module == "ansible" or module.startswith("ansible."):
        return True
    if module.startswith("ansible_collections."):
        return not (module == ALLOWED or module.startswith(ALLOWED + "."))
    return False


def _offenders(paths):
    """(file, import) for every core-bound import of ``paths`` and of the local helpers they import."""
    seen, todo, found = set(), list(paths), []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            if _core_bound(module):
                found.append((os.path.relpath(path, REPO), module))
            helper = os.path.join(HELPERS, module + ".py")
            if module.startswith("_") and os.path.exists(helper):
                todo.append(helper)
    return sorted(found)


def test_module_utils_import_nothing_of_ansible():
    files = list(_python_files(os.path.join(REPO, "plugins", "module_utils")))
    assert len(files) > 20, files  # the walk found the package
    assert _offenders(files) == []


def test_the_tests_the_matrix_leaves_out_import_nothing_of_ansible():
    files = [f for top in (HERE, os.path.join(UNIT, "scripts"), os.path.join(UNIT, "docs"))
             for f in _python_files(top)]
    assert any(f.endswith("test_engine.py") for f in files), files
    assert _offenders(files) == []


def test_the_check_sees_an_ansible_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ansible.module_utils.basic import AnsibleModule\n"
                   "import ansible_collections.grayrelease.canary.plugins.action.x\n"
                   "from ansible_collections.grayrelease.canary.plugins.module_utils import _plan\n")
    assert [m for _f, m in _offenders([str(bad)])] == [
        "ansible.module_utils.basic", "ansible_collections.grayrelease.canary.plugins.action.x"]
