# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The user guides on the Ansible docs site: docs/docsite/rst/*.rst are the ones
scripts/docsite.py makes from docs/*.md (the one source), every guide is in
docs/docsite/extra-docs.yml, every :ref: between them lands on a label, and
each page is reStructuredText that docutils reads without a warning."""
from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "scripts", "docsite.py")
RST = os.path.join(REPO, "docs", "docsite", "rst")


def script():
    spec = importlib.util.spec_from_file_location("docsite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages():
    out = {}
    for name in sorted(os.listdir(RST)):
        with open(os.path.join(RST, name), encoding="utf-8") as handle:
            out[name] = handle.read()
    return out


def docutils_warnings(text):
    """docutils' warnings and errors for one page, with Sphinx's :ref: role known."""
    from docutils import nodes
    from docutils.core import publish_doctree
    from docutils.parsers.rst import roles

    def ref(name, rawtext, text, lineno, inliner, options=None, content=None):
        return [nodes.inline(rawtext, text)], []
    roles.register_local_role("ref", ref)
    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"warning_stream": stream, "report_level": 2, "halt_level": 5,
                                              "syntax_highlight": "none"})
    return stream.getvalue()


def test_the_rst_guides_are_the_ones_made_from_the_md():
    run = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(pages()) == sorted(name + ".rst" for name in script().GUIDES)


def test_a_changed_md_makes_its_rst_stale(tmp_path, monkeypatch):
    tool = script()
    docs = tmp_path / "docs"
    shutil.copytree(os.path.join(REPO, "docs"), str(docs))
    monkeypatch.setattr(tool, "DOCS", str(docs))
    monkeypatch.setattr(tool, "OUT", str(docs / "docsite" / "rst"))
    assert tool.main(["--check"]) == 0
    with open(str(docs / "ssh.md"), "a", encoding="utf-8") as handle:
        handle.write("\nOne more line.\n")
    assert tool.main(["--check"]) == 1
    assert tool.main([]) == 0 and tool.main(["--check"]) == 0
    assert (docs / "docsite" / "rst" / "ssh.rst").read_text(encoding="utf-8").endswith("One more line.\n")


def test_every_guide_is_on_the_site_and_every_ref_lands():
    with open(os.path.join(REPO, "docs", "docsite", "extra-docs.yml"), encoding="utf-8") as handle:
        extra = yaml.safe_load(handle)
    listed = [name for section in extra["sections"] for name in section["toctree"]]
    assert sorted(listed) == sorted(script().GUIDES) and len(set(listed)) == len(listed)
    labels, refs = set(), []
    for name, text in pages().items():
        page_labels = re.findall(r"^\.\. _([^:]+):$", text, re.M)
        assert page_labels[0] == "ansible_collections.grayrelease.canary.docsite." + name[:-4].replace("-", "_")
        assert all(label.startswith(page_labels[0]) for label in page_labels), name
        assert not labels & set(page_labels), name
        labels.update(page_labels)
        refs += [(name, target) for target in re.findall(r":ref:`[^`<]*<([^>`]+)>`", text)]
    assert len(refs) >= 10
    for name, target in refs:
        # A link in a .md to a heading of another guide that is not there fails here.
        assert target in labels, "%s: :ref: to %s, which no guide defines" % (name, target)
    with open(os.path.join(REPO, "docs", "docsite", "links.yml"), encoding="utf-8") as handle:
        links = yaml.safe_load(handle)
    assert links["edit_on_github"]["repository"] == "grayrelease/canary"


@pytest.mark.parametrize("name", sorted(os.listdir(RST)))
def test_each_page_is_rst_without_a_warning(name):
    with open(os.path.join(RST, name), encoding="utf-8") as handle:
        warnings = docutils_warnings(handle.read())
    assert warnings == "", warnings


def test_markdown_that_rst_reads_differently_is_escaped():
    tool = script()
    md = ("# A title\n\n## `code` in a heading\n\nA `literal`s, a word_ and *emph*, 1|2, "
          "[quick](quickstart.md#1-controller), [here](#code-in-a-heading), [an example](examples/inventory.yml), "
          "[awx/](../awx/) and [a site](https://example.org/x).\n\n"
          "| a | b |\n|---|---|\n| `x` |  |\n\n1. one\n2. two\n   - nested\n\n```yaml\nk: v\n```\n")
    rst = tool.Converter("ssh", md).convert()
    assert rst.startswith(".. _ansible_collections.grayrelease.canary.docsite.ssh:\n\n=======\nA title\n=======\n")
    assert ".. _ansible_collections.grayrelease.canary.docsite.ssh.code-in-a-heading:" in rst
    assert "A ``literal``\\ s, a word\\_ and *emph*, 1\\|2," in rst
    assert ":ref:`quick <ansible_collections.grayrelease.canary.docsite.quickstart.1-controller>`" in rst
    assert ":ref:`here <ansible_collections.grayrelease.canary.docsite.ssh.code-in-a-heading>`" in rst
    assert "`an example <https://github.com/grayrelease/canary/blob/main/docs/examples/inventory.yml>`__" in rst
    assert "`awx/ <https://github.com/grayrelease/canary/tree/main/awx>`__" in rst
    assert "`a site <https://example.org/x>`__" in rst
    assert ".. list-table::" in rst and "   * - ``x``\n     -\n" in rst
    assert ".. code-block:: yaml\n\n   k: v\n" in rst
    assert docutils_warnings(rst) == ""


def test_antsibull_docs_lints_the_collection_docs():
    antsibull = shutil.which("antsibull-docs") or os.path.join(os.path.dirname(sys.executable), "antsibull-docs")
    if not os.path.exists(antsibull):
        pytest.skip("antsibull-docs is not installed (requirements-test.txt)")
    run = subprocess.run([antsibull, "lint-collection-docs", "."], cwd=REPO, capture_output=True, text=True,
                         check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
