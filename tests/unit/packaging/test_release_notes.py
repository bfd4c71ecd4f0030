# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The version galaxy.yml ships has its release notes (changelogs/changelog.yaml
and CHANGELOG.rst, made by `antsibull-changelog release`), and nothing in the
collection claims to be added in a later version than the one it ships in."""
from __future__ import annotations

import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def as_tuple(version):
    return tuple(int(part) for part in str(version).split("."))


def test_the_shipped_version_has_its_release_notes():
    version = str(load("galaxy.yml")["version"])
    releases = load("changelogs/changelog.yaml")["releases"]
    assert version in releases, "galaxy.yml ships %s, changelogs/changelog.yaml has %s: antsibull-changelog release" % (
        version, sorted(releases))
    assert releases[version].get("changes", {}).get("release_summary"), version
    with open(os.path.join(REPO, "CHANGELOG.rst"), encoding="utf-8") as handle:
        text = handle.read()
    assert re.search(r"^v%s\n=+$" % re.escape(version), text, re.M), "CHANGELOG.rst has no v%s section" % version
    # Newest first: the shipped version is the top section.
    assert re.findall(r"^v([0-9.]+)\n=+$", text, re.M)[0] == version


def test_nothing_is_added_in_a_version_after_the_shipped_one():
    shipped = as_tuple(load("galaxy.yml")["version"])
    found = []
    for top in ("plugins", "roles", "meta"):
        for root, dummy, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if not name.endswith((".py", ".yml", ".yaml")):
                    continue
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
                for value in re.findall(r"version_added:\s*['\"]?([0-9]+\.[0-9]+\.[0-9]+)", text):
                    found.append(value)
                    assert as_tuple(value) <= shipped, "%s: version_added %s, but galaxy.yml ships %s" % (
                        os.path.relpath(path, REPO), value, ".".join(map(str, shipped)))
    assert len(found) > 20
