# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One source of each default, and the copies Ansible forces kept in step.

The source of every rollout default is the engine's DEFAULTS
(module_utils/_engine). YAML cannot import it, so the rollout role's
defaults/main.yml and meta/argument_specs.yml carry copies: each must equal
the engine's. Every other `canary_X | default(LITERAL)` in a shipped role,
playbook or AWX file must equal the rollout role's default of canary_X, and
the derived defaults (the release root /opt/<service>, the lock path) must
render to what the engine computes. The HAProxy admin socket's default is
the haproxy modules' `socket` option (validate-modules keeps each module's
DOCUMENTATION and argument_spec equal): the engine's default must be the
same, and the balancer and verify roles and the status playbook spell it
nowhere (they omit the option when canary_haproxy_socket is unset).
docs/variables.md is generated (scripts/variables-doc.py): its rows for these
defaults must show the same values.
"""

from __future__ import annotations

import ast
import glob
import os
import re

import jinja2
import yaml

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as _engine
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.api import DEFAULTS
from ansible_collections.grayrelease.canary.plugins.action.rollout_state import SETTING_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLLOUT_DEFAULTS = os.path.join(REPO, "roles", "rollout", "defaults", "main.yml")
ROLLOUT_SPEC = os.path.join(REPO, "roles", "rollout", "meta", "argument_specs.yml")
SOCKET_MODULES = ("haproxy_server", "haproxy_info")
# `canary_X | default(...)`, the argument with at most one level of parentheses.
DEFAULT_RE = re.compile(r"\b(canary_[a-z_]+)\s*\|\s*default\(((?:[^()]|\([^()]*\))*)\)")
# Shipped YAML that may restate a rollout default (the rollout role's own
# tasks read the engine's settings, not canary_* defaults).
SHIPPED_YAML = ("roles/*/defaults/*.yml", "roles/*/vars/*.yml", "roles/*/tasks/*.yml",
                "roles/*/meta/argument_specs.yml", "playbooks/*.yml", "awx/**/*.yml")


def load(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as handle:
        return handle.read()


def role_defaults():
    return load(ROLLOUT_DEFAULTS)


def spec_options():
    return load(ROLLOUT_SPEC)["argument_specs"]["main"]["options"]


def module_doc(name):
    tree = ast.parse(read("plugins/modules/%s.py" % name))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)
    raise AssertionError("plugins/modules/%s.py has no DOCUMENTATION" % name)


def engine_settings(**raw):
    """The engine's settings for a minimal input (errors about the missing
    version and artifact do not matter here)."""
    settings, _errors = _engine.check_settings(dict({"canary_service": "svc", "canary_backend": "web"}, **raw))
    return settings


def same(a, b):
    """Equal as YAML and Python compare them (2 == 2.0), bools only equal bools."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def test_every_engine_default_is_the_role_default():
    defaults = role_defaults()
    drift = ["%s: engine %r, roles/rollout/defaults/main.yml %r" % (k, v, defaults.get(k, "(missing)"))
             for k, v in sorted(DEFAULTS.items()) if k not in defaults or not same(defaults[k], v)]
    assert len(DEFAULTS) >= 25
    assert drift == [], "\n".join(drift)


def test_every_engine_default_is_the_argument_spec_default():
    options = spec_options()
    drift = ["%s: engine %r, roles/rollout/meta/argument_specs.yml %r"
             % (k, v, options.get(k, {}).get("default", "(none)"))
             for k, v in sorted(DEFAULTS.items()) if not same(options.get(k, {}).get("default"), v)]
    assert drift == [], "\n".join(drift)


def test_argument_spec_defaults_are_the_role_defaults():
    """The other direction and the variables the engine does not default
    (canary_become, hooks, metric sources): spec and defaults/main.yml agree."""
    defaults, options = role_defaults(), spec_options()
    drift = ["%s: argument_specs %r, defaults/main.yml %r" % (k, o["default"], defaults.get(k, "(missing)"))
             for k, o in sorted(options.items())
             if "default" in o and (k not in defaults or not same(defaults[k], o["default"]))]
    undocumented = sorted(k for k in defaults if k not in options)
    assert drift == [] and undocumented == [], "\n".join(drift + ["not in argument_specs: %s" % undocumented])


def test_haproxy_modules_default_socket_is_the_engines():
    for name in SOCKET_MODULES:
        assert module_doc(name)["options"]["socket"]["default"] == DEFAULTS["canary_haproxy_socket"], name
    assert engine_settings()["socket"] == DEFAULTS["canary_haproxy_socket"]


def _literal(text):
    """The value of a YAML/Jinja literal, or None for an expression."""
    text = text.strip()
    if re.match(r"^('[^']*'|\"[^\"]*\"|-?\d+(\.\d+)?|true|false|True|False|\[\]|\{\})$", text):
        return True, yaml.safe_load(text.replace("True", "true").replace("False", "false"))
    return False, None


def _shipped_yaml():
    paths = set()
    for pattern in SHIPPED_YAML:
        paths.update(glob.glob(os.path.join(REPO, pattern), recursive=True))
    return sorted(p for p in paths if os.sep + os.path.join("roles", "rollout", "tasks") not in p)


def test_every_restated_default_in_roles_and_playbooks_is_the_rollout_default():
    """`canary_drain_timeout | default(30)` in the balancer role is a copy of
    the rollout's canary_drain_timeout default: it must be equal."""
    defaults = role_defaults()
    env = jinja2.Environment()
    drift, checked = [], 0
    for path in _shipped_yaml():
        rel = os.path.relpath(path, REPO)
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                for name, arg in DEFAULT_RE.findall(line):
                    where = "%s:%d %s | default(%s)" % (rel, lineno, name, arg)
                    if name == "canary_root":
                        got = env.from_string("{{ %s }}" % arg).render(canary_service="svc")
                        want = engine_settings()["root"]
                    elif name == "canary_lock_path":
                        got = env.from_string("{{ %s }}" % arg).render(canary_backend="web")
                        want = engine_settings()["lock_path"]
                    else:
                        is_literal, got = _literal(arg)
                        if not is_literal:
                            continue  # inventory_hostname, omit, another variable: not a copy
                        if name not in defaults:
                            if got in ("", None, [], {}):
                                continue  # "unset" (canary_probe_from, AWX's canary_previous_version)
                            drift.append("%s: canary_%s has no rollout default to match"
                                         % (where, name[len("canary_"):]))
                            continue
                        want = defaults[name]
                    checked += 1
                    if not same(got, want):
                        drift.append("%s gives %r, the rollout default is %r" % (where, got, want))
    assert checked >= 20, checked  # the scan finds them (about 30 when this was written)
    assert drift == [], "\n".join(drift)


def test_socket_default_is_spelt_only_where_yaml_needs_a_copy():
    """The balancer and verify roles and the status playbook omit the socket
    when canary_haproxy_socket is unset (the module's default applies); only
    the rollout role's defaults and argument spec restate it."""
    socket = DEFAULTS["canary_haproxy_socket"]
    allowed = {"roles/rollout/defaults/main.yml", "roles/rollout/meta/argument_specs.yml"}
    spelt = sorted(os.path.relpath(p, REPO) for p in _shipped_yaml() if socket in open(p, encoding="utf-8").read())
    assert set(spelt) == allowed, "the socket default %s is spelt in %s: omit the option instead" % (
        socket, sorted(set(spelt) - allowed))


def test_root_default_in_the_docs_is_the_engines():
    """Prose spells the release root as /opt/<canary_service> or
    /opt/{{ canary_service }}: each must be the engine's root."""
    want = engine_settings()["root"]
    spellings = 0
    for path in ["roles/rollout/meta/argument_specs.yml", "roles/rollout/defaults/main.yml"] + \
            sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))):
        for match in re.findall(r"(/\w+/(?:<canary_service>|<service>|\{\{ ?canary_service ?\}\}))", read(path)):
            spellings += 1
            got = re.sub(r"<canary_service>|<service>|\{\{ ?canary_service ?\}\}", "svc", match)
            assert got == want, "%s: %s, the engine's root is %s" % (path, match, want.replace("svc", "<service>"))
    assert spellings >= 3, spellings


def test_local_fleet_runs_on_the_defaults():
    """The test fleet's HAProxy is configured from its inventory: it must use
    the default socket and root, so every fleet test exercises the defaults."""
    fleet = load("inventory/local-fleet/group_vars/all.yml")
    assert fleet["canary_haproxy_socket"] == DEFAULTS["canary_haproxy_socket"]
    assert fleet["canary_root"] == engine_settings(canary_service=fleet["canary_service"])["root"]
    assert fleet["canary_port"] == DEFAULTS["canary_port"]


def test_variables_doc_shows_the_engine_defaults():
    """docs/variables.md is generated from the role; the rows of the engine's
    variables must show the engine's values."""
    rows = {}
    for line in read("docs/variables.md").splitlines():
        match = re.match(r"^\| `(canary_[a-z_]+)` \| [^|]+ \| `((?:[^`]|\\\|)*)` \|", line)
        if match:
            rows[match.group(1)] = yaml.safe_load(match.group(2).replace("\\|", "|") or '""')
    drift = ["%s: docs/variables.md %r, engine %r" % (k, rows.get(k, "(missing)"), v)
             for k, v in sorted(DEFAULTS.items()) if k not in rows or not same(rows[k], v)]
    assert drift == [], "\n".join(drift) + "\n(run python scripts/variables-doc.py)"


def test_the_coordinator_reads_every_setting_the_engine_has_a_default_for():
    # A setting missing there never reaches the engine: the run silently uses the default
    # (canary_routing was missing once, so a run asked for user routing rolled by share).
    assert sorted(set(DEFAULTS) - set(SETTING_NAMES)) == []
