# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a balancer module does for a set of servers, whatever the balancer.

Private to grayrelease.canary. Stdlib only: shipped to the balancer hosts with
the driver's module (haproxy_server, nginx_server) and run there.

``Control`` plans the change (state, weights), refuses a drain that would take
more servers out than ``max_unavailable`` allows, writes this run's claims
before the change (so a run killed right after it still leaves them), has the
driver apply it, waits until the drain is proven or the servers are healthy,
and reports before/after in one shape. ``hand_over`` readies one batch and
drains the next in one call. A *driver* is the balancer's side of it:

    name, capabilities      see plugins/module_utils/_drivers.py
    describe()              where it is, for messages ("HAProxy on /run/...")
    read()                  {server: info}: admin_state, weight, initial_weight,
                            status, scur (connections in flight), counters
    require_writable()      before any change (HAProxy: an admin-level socket)
    apply(ops)              all ops [(server, 'state'|'weight', value)]; returns
                            the commands it ran; a refused change changes nothing
                            or says what was applied before the failure
    verify(after, ops)      the balancer shows what was applied
    drain_state(servers)    (done, evidence): done only on evidence
    shutdown_sessions(servers)  or None when the balancer cannot
    wait_healthy(control, timeout, left_maint, after, result)
                            the balancer's own health checks passed (None when
                            it has none: the probe is the only health signal)
    process()               the process whose runtime state this is (pid)
    public(info)            the keys a result shows per server
    command(server, what, value)  the command an op is (check mode shows it)
"""

from __future__ import annotations

import re
import time

from ansible_collections.grayrelease.canary.plugins.module_utils import _claims
from ansible_collections.grayrelease.canary.plugins.module_utils._health import HealthError, check_urls
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact, redact_url
from ansible_collections.grayrelease.canary.plugins.module_utils._weights import MAX_WEIGHT, parse_percent

# What every balancer accepts without quoting (no spaces, nothing a command could be smuggled in with).
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+\Z")
STATES = ("ready", "drain", "maint")


class BalancerError(Exception):
    """A failure with a message meant for the user.

    ``kind`` lets callers and tests tell the causes apart; ``result`` carries
    whatever was known (e.g. ``before``) when the failure happened.
    """

    def __init__(self, msg, kind="error", result=None):
        super(BalancerError, self).__init__(msg)
        self.msg = msg
        self.kind = kind
        self.result = result or {}


def validate_name(what, name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BalancerError(
            "invalid %s name %r: only the characters [A-Za-z0-9_.:-] are allowed "
            "(nothing was sent to the balancer)" % (what, name), kind="invalid_name")
    return name


def unique_names(servers, what="server"):
    seen = []
    for server in servers:
        validate_name(what, server)
        if server not in seen:
            seen.append(server)
    return seen


def resolve_weight(spec, initial, server=None):
    """An absolute weight 0-256 from an int or "N%" of the initial weight.

    "N%" is computed here, not by the balancer, so the result can be compared
    with the current weight (idempotence) and shown in check mode:
    round-half-up(initial * N / 100).
    """
    where = " for server %s" % server if server else ""
    if isinstance(spec, bool):
        raise BalancerError("invalid weight %r%s" % (spec, where), kind="bad_weight")
    if isinstance(spec, int):
        value = spec
    else:
        text = str(spec).strip()
        if text.endswith("%"):
            pct = parse_percent(text)
            if pct is None:
                raise BalancerError("invalid weight %r%s: expected 0-256 or 'N%%' with N a number >= 0"
                                    % (spec, where), kind="bad_weight")
            # Compared before int(): a huge N% (or initial * N) is infinite
            # as a float, and int() of that raises OverflowError.
            exact = initial * pct / 100.0 + 0.5
            if exact >= MAX_WEIGHT + 1:
                raise BalancerError("weight %r%s of initial weight %d is above the maximum %d"
                                    % (spec, where, initial, MAX_WEIGHT), kind="bad_weight")
            return int(exact)
        # int() alone would also take '1_0' and other scripts' digits.
        if not (text.isascii() and text.isdigit()):
            raise BalancerError("invalid weight %r%s: expected 0-256 or 'N%%'" % (spec, where), kind="bad_weight")
        value = int(text)
    if value < 0 or value > MAX_WEIGHT:
        raise BalancerError("invalid weight %r%s: must be between 0 and %d" % (spec, where, MAX_WEIGHT),
                            kind="bad_weight")
    return value


def plan_changes(current, servers, state=None, weight=None, weights=None):
    """[(server, 'weight'|'state', value)] needed to reach the target.

    Order matters: going to ready, weights first so a canary never gets a
    moment of full weight; going to drain/maint, state first so traffic
    stops before anything else.
    """
    weights = weights or {}
    weight_ops, state_ops = [], []
    for server in servers:
        info = current[server]
        spec = weights.get(server, weight)
        if spec is not None:
            target = resolve_weight(spec, info["initial_weight"], server)
            if target != info["weight"]:
                weight_ops.append((server, "weight", target))
        if state is not None and info["admin_state"] != state:
            state_ops.append((server, "state", state))
    if state == "ready":
        return weight_ops + state_ops
    return state_ops + weight_ops


def predict(current, ops):
    after = dict((s, dict(i)) for s, i in current.items())
    for server, what, value in ops:
        if what == "weight":
            after[server]["weight"] = value
        else:
            after[server]["admin_state"] = value
            after[server]["status"] = {"maint": "MAINT", "drain": "DRAIN"}.get(value, after[server]["status"])
    return after


def diff_text(backend, servers, infos):
    return "".join("%s/%s: admin_state=%s weight=%s\n" % (backend, s, infos[s]["admin_state"], infos[s]["weight"])
                   for s in servers)


# The probe option of the balancer modules (docs: doc_fragments/haproxy_probe.py).
PROBE_SPEC = dict(type='dict', options=dict(
    urls=dict(type='list', elements='str', required=True),
    rise=dict(type='int', default=2),
    interval=dict(type='float', default=0.25),
    deadline=dict(type='float', default=60),
    timeout=dict(type='float', default=5),
))


# The options of every balancer's server module (haproxy_server, nginx_server);
# each adds its connection options and what only it can do.
SERVER_OPTIONS = dict(
    backend=dict(type='str', required=True),
    servers=dict(type='list', elements='str', required=True),
    state=dict(type='str', choices=list(STATES)),
    weight=dict(type='raw'),
    weights=dict(type='dict'),
    drain_timeout=dict(type='int', default=60),
    health_timeout=dict(type='int', default=60),
    wait=dict(type='bool', default=True),
    then_drain=dict(type='list', elements='str'),
    probe=PROBE_SPEC,
    claims=dict(type='path'),
    owner=dict(type='str', default=''),
    max_unavailable=dict(type='int'),
    fleet=dict(type='list', elements='str'),
)


def run_probe(probe, check=None):
    """The checks of a module's ``probe`` option from this host, URL credentials redacted."""
    check = check or check_urls
    # The spec's defaults for what the caller left out (a module fills them in itself).
    settings = dict((key, probe[key] if probe.get(key) is not None else spec['default'])
                    for key, spec in PROBE_SPEC['options'].items() if key != 'urls')
    try:
        report = check(probe['urls'], **settings)
    except HealthError as exc:
        raise BalancerError("probe: %s" % redact_url(str(exc)), kind="bad_input")
    # Health URLs may carry user:password@; the result is printed when a task fails.
    return redact(report)


def probe_before_ready(driver, servers, probe, check=None):
    """Before a ready: every URL of ``probe`` answers healthy from this host,
    where the balancer probes from. Unknown names fail first; an unhealthy URL
    raises BalancerError (kind ``unhealthy``) with the probe's report under
    ``probe``, and nothing has been changed. Returns the report, its URLs'
    credentials redacted."""
    Control(driver, servers).read()
    report = run_probe(probe, check)
    if report["unhealthy"]:
        raise BalancerError("not readied: unhealthy as probed from this host: %s" % report["msg"],
                            kind="unhealthy", result={"changed": False, "probe": report})
    return report


class Control(object):
    """What a balancer module does for ``servers``, without Ansible: plan, apply, wait, report."""

    def __init__(self, driver, servers, clock=time.monotonic, sleep=time.sleep, claims=None, owner='',
                 max_unavailable=None, fleet=None):
        self.driver = driver
        # A drain that would leave more than max_unavailable of fleet (default: every server of the
        # backend) out of rotation here is refused before anything changes.
        self.max_unavailable = max_unavailable
        self.fleet = fleet
        # Where this balancer keeps what runs of this collection set (_claims), and this run's name there.
        self.claims = claims
        self.owner = owner
        self.backend = driver.backend
        if not servers:
            raise BalancerError("servers must list at least one server", kind="bad_input")
        self.servers = unique_names(servers)
        self.clock = clock
        self.sleep = sleep
        self.warnings = []

    def read(self):
        servers = self.driver.read()
        unknown = [s for s in self.servers if s not in servers]
        if unknown:
            raise BalancerError(
                "unknown server(s) %s in backend %r; its servers are: %s"
                % (", ".join(unknown), self.backend, ", ".join(sorted(servers))), kind="unknown_server")
        return servers

    def run(self, state=None, weight=None, weights=None, drain_timeout=60, shutdown_sessions=False,
            wait_healthy=True, health_timeout=60, wait=True, check_mode=False, want_diff=False):
        if state is not None and state not in STATES:
            raise BalancerError("invalid state %r: expected one of %s" % (state, ", ".join(STATES)), kind="bad_input")
        weights = dict(weights or {})
        for name in weights:
            validate_name("server", name)
            if name not in self.servers:
                self.servers.append(name)
        current = self.read()
        if not check_mode:
            # Before anything changes, so a balancer that cannot be changed fails cleanly.
            self.driver.require_writable()
        before = dict((s, current[s]) for s in self.servers)
        ops = plan_changes(current, self.servers, state, weight, weights)
        public = self.driver.public
        result = {"changed": bool(ops), "before": dict((s, public(i)) for s, i in before.items())}
        result["commands"] = [self.driver.command(*op) for op in ops]
        if self.max_unavailable is not None and state in ("drain", "maint"):
            self._check_room(current, ops)
        if check_mode:
            after = predict(before, ops)
        else:
            if self.claims and ops:
                # Claimed before the change: a run killed right after it still leaves its claim.
                self._claims(_claims.claim, predict(before, ops), current, self.owner, time.time())
            left_maint = set(s for s, what, value in ops
                             if what == "state" and before[s]["admin_state"] == "maint")
            try:
                result["commands"] = self.driver.apply(ops) if ops else []
            except BalancerError as exc:
                exc.result = dict(result, **exc.result)
                raise
            after = self.read()
            self.driver.verify(after, ops)
            if wait and state in ("drain", "maint"):
                result["drain"] = self._wait_drained(drain_timeout, shutdown_sessions, result)
                after = self.read()
            if wait and state == "ready" and wait_healthy:
                health = self.driver.wait_healthy(self, health_timeout, left_maint, after, result)
                if health is not None:
                    result["health"] = health
                    after = self.read()
            if self.claims:
                try:
                    self._claims(_claims.release, after)
                except BalancerError as exc:
                    # The change is made; a claim left on a normal server is dropped by the next claim.
                    self.warnings.append(exc.msg)
        result["servers"] = dict((s, public(after[s])) for s in self.servers)
        result["process"] = self.driver.process()
        if want_diff:
            result["diff"] = {
                "before_header": "%s (before)" % self.backend,
                "after_header": "%s (after)" % self.backend,
                "before": diff_text(self.backend, self.servers, before),
                "after": diff_text(self.backend, self.servers, after),
            }
        return result

    def _check_room(self, current, ops):
        fleet = [s for s in (self.fleet or sorted(current)) if s in current]
        planned = predict(dict((s, current[s]) for s in fleet), [op for op in ops if op[0] in fleet])
        out = _claims.out_of_rotation(planned)
        if len(out) > self.max_unavailable:
            raise BalancerError(
                "draining %s would leave %d servers of backend %s out of rotation here, more than max_unavailable=%d: "
                "%s; nothing was changed" % (", ".join(self.servers), len(out), self.backend, self.max_unavailable,
                                             ", ".join("%s (%s)" % (s, why) for s, why in sorted(out.items()))),
                kind="capacity")

    def _claims(self, change, *args):
        try:
            change(self.claims, self.backend, *args)
        except (OSError, _claims.ClaimsError) as exc:
            raise BalancerError("could not record this run's claims on its servers in %s: %s" % (self.claims, exc),
                                kind="claims")

    def _wait_drained(self, timeout, shutdown_sessions, result):
        """Until the driver proves the drain done (never because a timer ran out): at the
        timeout, with shutdown_sessions, the driver ends the sessions left once."""
        start = self.clock()
        deadline = start + float(timeout)
        killed = {}
        while True:
            done, evidence = self.driver.drain_state(self.servers)
            busy = evidence.get("busy") or {}
            if done:
                return dict({"waited": round(self.clock() - start, 3), "timed_out": bool(killed),
                             "shutdown": killed, "sessions_left": 0}, **evidence.get("extra", {}))
            if self.clock() >= deadline:
                if not shutdown_sessions or killed or not self.driver.capabilities.get("shutdown_sessions"):
                    partial = dict(result)
                    partial["drain"] = dict({"waited": round(self.clock() - start, 3), "timed_out": True,
                                             "shutdown": killed, "sessions_left": sum(busy.values())},
                                            **evidence.get("extra", {}))
                    partial["servers"] = dict((s, self.driver.public(i)) for s, i in self.read().items()
                                              if s in self.servers)
                    raise BalancerError(self.driver.drain_timeout_message(timeout, evidence, killed),
                                        kind="drain_timeout", result=partial)
                killed.update(self.driver.shutdown_sessions(busy))
                # Killing is asynchronous inside the balancer; give it a short grace.
                deadline = self.clock() + 10
            self.sleep(0.2)


def hand_over(make_control, servers, then_drain, run_args=None, drain_args=None, check_mode=False,
              want_diff=False, clock=time.monotonic):
    """Ready ``servers`` and, once they are healthy, drain ``then_drain``: a rolling
    update hands over from one batch to the next with one call to this balancer.
    With ``run_args['state']`` None the first part only sets weights (a canary's
    weights restored after its analysis), then drains. ``make_control(servers)``
    makes a Control for the driver.

    The drain starts only after the ready (and its health wait) succeeded here,
    so this balancer never has both batches out of rotation at once; a failed
    ready drains nothing. Returns (result, warnings): the ready's result with
    ``then_drain`` (the drain's result plus its ``seconds``). A failing drain
    raises BalancerError whose result is the ready's plus ``then_drain.failed``.
    """
    run_args = dict({"state": "ready"}, **(run_args or {}))
    if run_args["state"] not in ("ready", None):
        raise BalancerError("then_drain needs state=ready or no state, not state=%s" % run_args["state"],
                            kind="bad_input")
    # Weights only, a server may be re-weighted and then drained (the canary's
    # weights restored on every server, then the next batch drained).
    overlap = sorted(set(servers) & set(then_drain or [])) if run_args["state"] else []
    if overlap:
        raise BalancerError("then_drain names servers that are readied in the same call: %s" % ", ".join(overlap),
                            kind="bad_input")
    readied = make_control(servers)
    drained = make_control(then_drain)
    # Unknown names fail here, before the ready changes anything.
    drained.read()
    result = readied.run(check_mode=check_mode, want_diff=want_diff, **run_args)
    start = clock()
    try:
        part = drained.run(state="drain", check_mode=check_mode, **(drain_args or {}))
    except BalancerError as exc:
        part = dict(exc.result, failed=True, msg=exc.msg, seconds=round(clock() - start, 3))
        exc.result = dict(result, changed=result["changed"] or bool(exc.result.get("changed")), then_drain=part)
        exc.msg = "%s %s; then draining %s failed: %s" % ("readied" if run_args["state"] else "re-weighted",
                                                          ", ".join(servers), ", ".join(then_drain), exc.msg)
        exc.args = (exc.msg,)
        raise
    part["seconds"] = round(clock() - start, 3)
    result["then_drain"] = part
    result["changed"] = result["changed"] or part["changed"]
    return result, readied.warnings + drained.warnings


def server_module(module, make_driver, probe=None, ready_args=None, drain_args=None, warnings=()):
    """A balancer's server module, given its AnsibleModule (parameters from
    SERVER_OPTIONS) and ``make_driver()``: probe first when ``probe`` is given,
    then ready/drain/weights (with ``then_drain``, the hand-over), and exit with
    the result or fail with the BalancerError's message and result. The
    driver's own options go in ``ready_args`` / ``drain_args``; ``warnings``
    are added to the run's."""
    p = module.params
    if p['probe'] and p['state'] != 'ready':
        module.fail_json(msg='probe needs state=ready, not state=%s' % p['state'], error_kind='bad_input',
                         changed=False)
    if p['then_drain'] and p['state'] not in ('ready', None):
        module.fail_json(msg='then_drain needs state=ready or no state, not state=%s' % p['state'],
                         error_kind='bad_input', changed=False)
    drain_args = dict(drain_args or {}, drain_timeout=p['drain_timeout'], wait=p['wait'])
    ready_args = dict(ready_args or {}, state=p['state'], weight=p['weight'], weights=p['weights'], wait=p['wait'])
    control_args = dict(claims=p['claims'], owner=p['owner'], max_unavailable=p['max_unavailable'], fleet=p['fleet'])
    probed = None
    try:
        driver = make_driver()
        if probe:
            probed = probe_before_ready(driver, p['servers'], probe)
        if p['then_drain']:
            result, run_warnings = hand_over(lambda names: Control(driver, names, **control_args), p['servers'],
                                             p['then_drain'], run_args=ready_args, drain_args=drain_args,
                                             check_mode=module.check_mode, want_diff=module._diff)
        else:
            ctl = Control(driver, p['servers'], **control_args)
            ready_args.update(drain_args)
            result = ctl.run(check_mode=module.check_mode, want_diff=module._diff, **ready_args)
            run_warnings = ctl.warnings
    except BalancerError as exc:
        extra = dict(exc.result)
        extra.setdefault('changed', False)
        module.fail_json(msg=exc.msg, error_kind=exc.kind, **extra)
    for warning in list(run_warnings) + list(warnings):
        module.warn(warning)
    if probed is not None:
        result['probe'] = probed
    module.exit_json(**result)
