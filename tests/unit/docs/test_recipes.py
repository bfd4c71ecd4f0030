# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/recipes.md stays true: the first-safe-rollout profile it shows is the
shipped docs/examples/first-safe-rollout.yml, made of rollout variables whose
values the engine's own settings check accepts; every YAML block of the page
parses and every canary_* / release_* name on the page is a variable of a
role (or a per-host variable of the inventory contract); the two-zone plans
it shows are what the rollout_plan filter's planner computes for the command
shown above them."""
from __future__ import annotations

import ast
import glob
import json
import os
import re

import jinja2
import pytest
import yaml

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.api import check_settings
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import plan, resolve_steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DOC = os.path.join(REPO, "docs", "recipes.md")
PROFILE = os.path.join(REPO, "docs", "examples", "first-safe-rollout.yml")
# What the rollout needs besides the profile to check its settings at all.
REQUIRED = {"canary_version": "1.4.2", "canary_artifact": "shop-1.4.2.tar.gz",
            "canary_backend": "shop", "canary_service": "shop"}
# A canary_* / release_* name, not one inside a dotted name (grayrelease.canary.canary_judge).
NAME_RE = re.compile(r"(?<![\w.])((?:canary|release)_[a-z0-9_]+)")
FENCE_RE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def section(title):
    """The text of one '## title' section of the page, up to the next '## '."""
    text = read(DOC)
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def blocks(text, language=None):
    return [body for lang, body in FENCE_RE.findall(text) if language is None or lang == language]


def rollout_options():
    spec = yaml.safe_load(read(os.path.join(REPO, "roles", "rollout", "meta", "argument_specs.yml")))
    return spec["argument_specs"]["main"]["options"]


def role_variables():
    """Every option of every entry point of every role's argument specs."""
    names = set()
    for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml")):
        for entry in yaml.safe_load(read(path))["argument_specs"].values():
            names.update(entry.get("options") or {})
    return names


def per_host_variables():
    """The inventory contract's per-app-host variables, as the coordinator reads them (hv.get('canary_...'))."""
    return set(re.findall(r"hv\.get\('(canary_[a-z_]+)'\)", read(os.path.join(REPO, "plugins", "action",
                                                                              "rollout_state.py"))))


def module_options(name):
    tree = ast.parse(read(os.path.join(REPO, "plugins", "modules", name + ".py")))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)["options"]
    raise AssertionError("plugins/modules/%s.py has no DOCUMENTATION" % name)


# ---------------------------------------------------------------- (i) the first safe rollout

def load_profile():
    profile = yaml.safe_load(read(PROFILE))
    assert isinstance(profile, dict) and profile, "%s is not a mapping of variables" % PROFILE
    return profile


def test_the_profile_is_rollout_variables_the_engine_accepts():
    profile = load_profile()
    options = rollout_options()
    unknown = sorted(k for k in profile if k not in options)
    assert unknown == [], "not variables of roles/rollout/meta/argument_specs.yml: %s" % unknown
    settings, errors = check_settings(dict(REQUIRED, **profile))
    assert errors == [], errors
    # What the page promises each line does.
    assert settings["pause"] == "manual"
    assert settings["underpowered"] == "fail" and settings["min_power"] >= 0.8
    assert settings["max_unavailable"] == 1
    assert settings["auto_rollback"] is True
    assert settings["on_marginal"] == "rollback" and settings["on_inconclusive"] == "rollback"
    # A small first step, and a full rollout at the end (a fleet of 20: 1 host first, 20 last).
    targets = resolve_steps(settings["steps"], 20)
    assert targets[0] == 1 and targets[-1] == 20 and len(targets) >= 3, targets


def test_the_settings_check_used_above_refuses_a_bad_profile():
    """The check the profile passes is a live one: the same profile with one bad value fails it."""
    profile = load_profile()
    for key, bad in (("canary_underpowered", "fial"), ("canary_pause", "by hand"),
                     ("canary_max_unavailable", 0), ("canary_steps", [5, 1])):
        dummy, errors = check_settings(dict(REQUIRED, **dict(profile, **{key: bad})))
        assert any(key in error for error in errors), (key, errors)


def test_the_page_shows_the_shipped_profile_and_explains_each_line():
    text = section("A first safe rollout")
    shown = blocks(text, "yaml")[0]
    assert yaml.safe_load(shown) == load_profile()
    # Verbatim, comments included: the file is the block under a header comment.
    assert shown in read(PROFILE)
    for key in load_profile():
        assert re.search(r"^- [^\n]*`%s: " % re.escape(key), text, re.M), "no explanation of %s on the page" % key
    assert "examples/first-safe-rollout.yml" in text and "-e @first-safe-rollout.yml" in text


# ---------------------------------------------------------------- (ii) YAML blocks and variable names

def test_every_yaml_block_parses():
    found = blocks(read(DOC), "yaml")
    assert len(found) >= 6
    for body in found:
        assert yaml.safe_load(body) is not None, body


def test_every_variable_named_on_the_page_exists():
    known = role_variables() | per_host_variables()
    named = set(NAME_RE.findall(read(DOC)))
    # canary_shared_paths (rollout) and release_shared_paths (release) are among
    # them: the page documents them, and this fails until both roles declare them.
    assert {"canary_shared_paths", "release_shared_paths", "canary_before_switch_tasks",
            "release_before_switch_tasks", "canary_analysis_tasks"} <= named
    unknown = sorted(named - known)
    assert unknown == [], "named on docs/recipes.md but no role variable: %s" % unknown
    assert "shared" in module_options("release"), "the page names the release module's option shared"


def test_the_name_check_catches_an_invented_variable():
    known = role_variables() | per_host_variables()
    assert set(NAME_RE.findall("set `canary_shared_path` or release_keep_all")) - known == \
        {"canary_shared_path", "release_keep_all"}
    assert NAME_RE.findall("grayrelease.canary.canary_judge") == []


# ---------------------------------------------------------------- (iii) the two-zone plans

class Recorder(object):
    """The rollout_plan filter as the planner computes it, remembering each call's arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, hosts, steps=(1, "25%", "50%", "100%"), max_unavailable=None, zones=None,
                 zone_mode="spread", done=None):
        self.calls.append(dict(hosts=hosts, steps=steps, max_unavailable=max_unavailable, zones=zones,
                               zone_mode=zone_mode))
        return plan(hosts, steps=steps, max_unavailable=max_unavailable, zones=zones, zone_mode=zone_mode,
                    done=done)


def shown_plans():
    """(expression, the plan the output shows) for each rollout_plan command of the two-zone recipe."""
    out = []
    for body in blocks(section("Two zones"), "console"):
        command, output = body.split("\n", 1)
        match = re.match(r'^\$ ansible localhost -m debug -a "msg=\{\{ (.+) \}\}"$', command)
        assert match, command
        head, dummy, result = output.partition("localhost | SUCCESS => ")
        assert head == "" and result, output
        out.append((match.group(1), json.loads(result)["msg"]))
    return out


def zone_inventory():
    inventory = yaml.safe_load(blocks(section("Two zones"), "yaml")[0])
    hosts = inventory["all"]["children"]["app"]["hosts"]
    return list(hosts), dict((name, values["canary_zone"]) for name, values in hosts.items())


def test_the_two_zone_plans_shown_are_the_planners():
    plans = shown_plans()
    assert len(plans) == 2
    hosts, zones = zone_inventory()
    modes = []
    for expression, shown in plans:
        recorder = Recorder()
        env = jinja2.Environment()
        env.filters["grayrelease.canary.rollout_plan"] = recorder
        computed = env.compile_expression(expression)()
        assert shown == computed, "%s: the page shows %s, the planner makes %s" % (expression, shown, computed)
        call, = recorder.calls
        # The command plans the inventory shown above it.
        assert call["hosts"] == hosts and call["zones"] == zones
        modes.append(call["zone_mode"])
        # "The steps resolve to 1, 3 (50% of 6) and 6 hosts."
        targets = resolve_steps(call["steps"], len(hosts))
        assert "resolve to %d, %d (50%% of %d) and %d hosts" % (targets[0], targets[1], len(hosts), targets[2]) \
            in section("Two zones")
    assert modes == ["spread", "sequential"]


def test_a_wrong_plan_on_the_page_would_be_caught():
    expression, shown = shown_plans()[1]
    env = jinja2.Environment()
    env.filters["grayrelease.canary.rollout_plan"] = Recorder()
    swapped = env.compile_expression(expression.replace("'sequential'", "'spread'"))()
    assert swapped != shown


@pytest.mark.parametrize("mode", ["spread", "sequential"])
def test_no_batch_is_larger_than_the_cap_and_sequential_never_mixes_zones(mode):
    hosts, zones = zone_inventory()
    batches = plan(hosts, steps=[1, "50%", "100%"], max_unavailable=2, zones=zones, zone_mode=mode)
    assert all(len(batch) <= 2 for batch in batches)
    if mode == "sequential":
        assert all(len(set(zones[h] for h in batch)) == 1 for batch in batches)
    else:
        assert all(len(set(zones[h] for h in batch)) == len(batch) for batch in batches)
