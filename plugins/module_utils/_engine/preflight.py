# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-flight: the lock, the survey of the balancers (and the app hosts' health),
the releases read (and the new one pre-staged), the operator's held servers
and the room they leave, the plan, and the repair of what an interrupted run
left drained or weighted. Nothing is switched here.
"""

from __future__ import annotations

import json

from ansible_collections.grayrelease.canary.plugins.module_utils._claims import (
    is_normal,
    matches as claim_matches,
    out_of_rotation,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import (
    PlanError,
    plan_steps,
    resolve_max_unavailable,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact
from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import RolloutError, balancer_consensus
from ansible_collections.grayrelease.canary.plugins.module_utils._sequential import look_confidence

from ansible_collections.grayrelease.canary.plugins.module_utils._engine.routing import (
    check_plan as check_routed_plan,
    resume_refused,
    routing_on,
    survey_routing,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import (
    collect,
    describe_failures,
    halt,
    live_balancers,
    server_of,
    servers_of,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.steps import judged_looks, judged_steps
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.analysis import plan_samples


def after_lock(state, results, now):
    ok, failed = collect(state, 'lock', results, 'pre-flight')
    if failed:
        holder = (results.get('lock') or {}).get(state['lock_host']) or {}
        if holder.get('lock') and not state['act'].get('force') and state['lock_host'] not in state['lost']:
            why = ''
            if holder.get('holder_gone'):
                why = 'its run is provably gone (process %s on %s has ended)' % (
                    holder['lock'].get('controller_pid'), holder['lock'].get('controller'))
            elif state['settings']['lock_takeover']:
                why = 'canary_lock_takeover=true'
            if why:
                state['notes'].append('took over the lock of %r: %s' % (holder['lock'].get('owner'), why))
                state['act'] = dict(state['act'], force=True)
                return
        halt(state, 'preflight', 'could not take the rollout lock: %s' % describe_failures('lock', failed))
        return
    lock = ok[state['lock_host']]
    state['lock_held'] = not state['check_mode']
    state['lock_refreshed'] = now
    if lock.get('took_over') and not state['act'].get('force'):
        state['notes'].append('took over the lock: %s' % lock.get('msg', ''))
    # The balancers first: a backend that cannot take this rollout (a
    # server missing, a balancer down) refuses it before any app host is touched.
    state['act'] = {'phase': 'survey', 'balancers': list(state['balancers']),
                    'urls': [state['identities'][h]['health_url'] for h in state['app_hosts']]}
    if routing_on(state) and not state['check_mode']:
        state['act']['routing'] = survey_routing(state)
    if state['probe_host'] in state['balancers']:
        # It probes in the same call that reads its backend: one task less.
        state['act']['info_probe'] = {'urls': state['act']['urls'], 'rise': 1, 'deadline': 15}
        state['act']['info_probe_from'] = state['probe_host']
    else:
        state['act']['probe'] = [state['probe_host']]


def after_survey(state, results, now):
    """The balancers' backends and the fleet's health are read: refuse, or read (and pre-stage) the releases."""
    settings = state['settings']
    lbs_ok, lbs_failed = collect(state, 'balancers', results, 'pre-flight')
    if 'info_probe' in state['act']:
        # The probe host is a balancer: its checks came with its backend read (reported
        # with any URL credentials redacted, so URLs are compared redacted later).
        probe_ok = dict((h, r.get('probe') or {}) for h, r in lbs_ok.items() if h == state['probe_host'])
        probe_failed = {}
    else:
        probe_ok, probe_failed = collect(state, 'probe', results, 'pre-flight')
    problems = []
    if lbs_failed:
        problems.append(describe_failures('reading the balancer', lbs_failed))
    if probe_failed:
        problems.append(describe_failures('probing health', probe_failed))
    if problems:
        halt(state, 'preflight', 'nothing was changed: ' + '; '.join(problems))
        return
    servers = servers_of(state, state['app_hosts'])
    try:
        consensus = balancer_consensus(lbs_ok, settings['backend'], servers)
    except RolloutError as exc:
        halt(state, 'preflight', 'nothing was changed: %s' % exc)
        return
    if consensus['missing']:
        halt(state, 'preflight', 'nothing was changed: backend %s lacks servers: %s' % (
            settings['backend'], json.dumps(consensus['missing'], sort_keys=True)))
        return
    backends = dict((b, {'backends': {settings['backend']: r['backends'][settings['backend']]},
                         'claims': (r.get('claims') or {}).get(settings['backend']) or {}})
                    for b, r in lbs_ok.items())
    # An operator's choices are respected: those hosts are not rolled, nor staged on, nor readied.
    held, unavailable, ours = _holders(state, backends)
    state['held'] = held
    state['ours'] = ours
    cap = resolve_max_unavailable(settings['max_unavailable'], len(state['app_hosts'])) or len(state['app_hosts'])
    state['capacity'] = {'max_unavailable': cap, 'out_before': unavailable, 'room': cap - len(unavailable)}
    if cap - len(unavailable) < 1:
        halt(state, 'preflight', 'nothing was changed: no room within canary_max_unavailable=%s (%d of %d hosts): '
             'already out of rotation, not by a run of this collection: %s; bring them back into rotation or raise '
             'canary_max_unavailable' % (settings['max_unavailable'], cap, len(state['app_hosts']), '; '.join(
                 '%s (%s)' % (h, why) for h, why in sorted(unavailable.items()))))
        return
    health = probe_ok[state['probe_host']]
    healthy_urls = set(redact(health.get('healthy') or []))
    healthy = [h for h in state['app_hosts'] if redact(state['identities'][h]['health_url']) in healthy_urls]
    # Kept for the releases' record, which decides with the versions too (and drops it).
    state['survey'] = {'balancers': backends, 'consensus': consensus, 'healthy': healthy,
                       'probed': dict((redact(url), result) for url, result in (health.get('results') or {}).items())}
    serving = [h for h in state['app_hosts'] if h not in held]
    fleet = [h for h in serving if not settings['limit'] or h in settings['limit']]
    unfit = [h for h in serving if h not in healthy or server_of(state, h) in consensus['down']]
    stage = []
    if settings['prestage'] and not state['check_mode'] and not unfit:
        # Shipped and unpacked in the same call that reads the releases: a
        # host that has the release already is left as it is, and what this
        # run staged is removed again if the run stops before switching it.
        # A fleet not all healthy and UP is likely refused once its versions
        # are known: nothing is written to it then.
        stage = fleet
    elif settings['prestage'] and not state['check_mode']:
        state['survey']['unfit'] = unfit
    state['act'] = {'phase': 'releases', 'apps': list(state['app_hosts']), 'stage': stage}


def _holders(state, backends):
    """Who holds each app host's server off normal (out of rotation, or off its initial weight) on a balancer.

    A run of this collection, when the balancer's claim says a run left it
    exactly so: `ours` (servers), repaired in pre-flight. Anyone else, an
    operator: `held` (host -> what, where), left alone and named in the
    report; the held servers that take no traffic on some balancer are
    `unavailable` (host -> why) and count against canary_max_unavailable.
    """
    backend = state['settings']['backend']
    held, unavailable, ours = {}, {}, []
    for host in state['app_hosts']:
        server = server_of(state, host)
        marks, out, claimed = [], [], False
        for balancer in sorted(backends):
            info = backends[balancer]['backends'][backend][server]
            if is_normal(info):
                pass
            elif claim_matches(backends[balancer]['claims'].get(server), info):
                claimed = True
            elif info.get('admin_state') != 'ready':
                marks.append('%s on %s' % (info['admin_state'], balancer))
            else:
                marks.append('weight %s (initial %s) on %s' % (info.get('weight'), info.get('initial_weight'), balancer))
            why = out_of_rotation({server: info}).get(server)
            if why:
                out.append('%s on %s' % (why, balancer))
        if marks:
            held[host] = ', '.join(marks)
            if out:
                unavailable[host] = ', '.join(out)
        elif claimed:
            ours.append(server)
    return held, unavailable, ours


# The oldest Python the host-side code (the modules and what they import) is written for (docs/ssh.md).
MIN_HOST_PYTHON = (3, 9)


def _python_below(version, minimum):
    """Is the module's reported Python version below minimum? Unknown (an older module) is not."""
    try:
        return tuple(int(x) for x in str(version).split('.')[:2]) < minimum
    except ValueError:
        return False


def after_releases(state, results, now):
    settings = state['settings']
    survey = state.pop('survey')
    lbs_ok, consensus, healthy = survey['balancers'], survey['consensus'], survey['healthy']
    stage = state['act'].get('stage') or []
    apps_ok, apps_failed = collect(state, 'apps', results, 'pre-flight')
    # A host that failed while staging may have installed nothing or everything: it is cleaned too.
    state['staged'] = sorted(set(h for h, r in apps_ok.items() if r.get('installed_now'))
                             | set(h for h in apps_failed if h in stage and h not in state['lost']))
    if apps_failed:
        stage_failed = dict((h, why) for h, why in apps_failed.items() if h in stage)
        read_failed = dict((h, why) for h, why in apps_failed.items() if h not in stage)
        problems = []
        if stage_failed:
            problems.append('pre-staging %s failed, nothing was switched: %s' % (
                settings['version'], describe_failures('stage', stage_failed)))
        if read_failed:
            problems.append('nothing was changed: %s' % describe_failures('reading the releases', read_failed))
        halt(state, 'preflight', '; '.join(problems))
        return
    too_old = dict((h, apps_ok[h]['python']) for h in state['app_hosts']
                   if _python_below(apps_ok[h].get('python'), MIN_HOST_PYTHON))
    if too_old:
        halt(state, 'preflight', 'nothing was changed: the collection needs Python %s or newer on the hosts, and '
             'these run an older one: %s; install a newer python3 there and point ansible_python_interpreter at it'
             % ('.'.join(map(str, MIN_HOST_PYTHON)),
                ', '.join('%s (Python %s)' % (h, v) for h, v in sorted(too_old.items()))))
        return
    versions = dict((h, apps_ok[h].get('current') or '') for h in state['app_hosts'])
    state['versions'] = dict(versions)
    # Not staged (canary_prestage=false, or a fleet not fit for it): the switch installs.
    state['lacking'] = [h for h in state['app_hosts']
                        if settings['version'] not in (apps_ok[h].get('installed') or [])]
    held_servers = set(servers_of(state, state['held']))
    # The hosts this run may roll: not held by an operator, within canary_limit when it is set.
    serving = [h for h in state['app_hosts'] if h not in state['held']]
    fleet = [h for h in serving if not settings['limit'] or h in settings['limit']]
    version = settings['version']
    done = [h for h in fleet if versions[h] == version and h in healthy]
    old_versions = sorted(set(versions[h] for h in serving if versions[h] != version))
    errors = []
    if '' in old_versions:
        errors.append('no current release on %s (see docs: adopting a fleet)' % ', '.join(
            h for h in serving if versions[h] == ''))
    if len(old_versions) > 1:
        errors.append('the fleet must run one version (or that version and %s when resuming); found %s' % (
            version, ', '.join('%s=%s' % (h, versions[h] or "''") for h in serving)))
    sick = [h for h in serving if h not in healthy and versions[h] != version]
    if sick:
        errors.append('unhealthy before the rollout: %s (%s)' % (', '.join(sick), '; '.join(
            '%s' % (survey['probed'].get(redact(state['identities'][h]['health_url']), {}).get('last_error') or 'unhealthy')
            for h in sick)))
    # Disagreement on a server under maintenance is the operator's business;
    # on a healthy host (drain or weight, e.g. left by a lost balancer) the repair below fixes it.
    disagree = [line for line in consensus['disagree'] if line.split(':', 1)[0] not in held_servers | set(servers_of(state, healthy))]
    if disagree:
        errors.append('balancers disagree: %s' % '; '.join(disagree))
    down = [s for s in consensus['down'] if s not in held_servers and s not in servers_of(state, sick)]
    if down:
        errors.append('not UP on the balancers: %s' % ', '.join(down))
    if errors:
        # What this call staged is removed again by the clean-up.
        halt(state, 'preflight', 'nothing was changed: ' + '; '.join(errors))
        return
    state['previous_version'] = old_versions[0] if old_versions else version
    state['done_before'] = done
    # Servers under maintenance take no traffic: weights are left alone.
    state['initial_weights'] = dict((s, i['initial_weight']) for s, i in consensus['servers'].items()
                                    if s not in held_servers)
    zones = None
    if any(state['identities'][h].get('zone') for h in fleet):
        zones = dict((h, state['identities'][h]['zone']) for h in fleet)
    try:
        # Batches (and rollback groups) as large as the room the operator's servers leave.
        state['max_unavailable'] = state['capacity']['room']
        state['plan_steps'] = plan_steps(fleet, settings['steps'], state['max_unavailable'], zones,
                                         settings['zone_mode'], done)
        # The looks of the whole rollout, as if nothing were done yet: a resumed run
        # (after canary_pause=manual, say) spends only what the earlier runs left.
        whole = plan_steps(fleet, settings['steps'], state['max_unavailable'], zones, settings['zone_mode'], [])
        state['looks_planned'] = len(judged_steps(state, whole, []))
    except PlanError as exc:
        halt(state, 'preflight', 'nothing was changed: %s' % exc)
        return
    state['plan'] = [batch for step in state['plan_steps'] for batch in step]
    unroutable = check_routed_plan(state) if routing_on(state) else ''
    if unroutable:
        halt(state, 'preflight', 'nothing was changed: %s' % unroutable)
        return
    if not plan_samples(state, lbs_ok, held_servers):
        return
    # What an interrupted run left behind (drained, or off its initial
    # weight), as its claims say, on healthy hosts. Never an operator's doing.
    repair = [server_of(state, h) for h in state['app_hosts']
              if h in healthy and h not in state['held'] and server_of(state, h) in state['ours']]
    state['repaired'] = repair
    if survey.get('unfit'):
        state['notes'].append('not pre-staged (not healthy and UP at pre-flight: %s): each host installs %s at '
                              'its switch' % (', '.join(survey['unfit']), version))
    state['plan_lines'] = plan_text(state)
    if repair and not state['check_mode']:
        state['act'] = {'phase': 'repair', 'balancers': live_balancers(state), 'servers': repair, 'state': 'ready',
                        'weights': dict((s, state['initial_weights'][s]) for s in repair)}
        return
    _ready_for_batches(state)


def after_repair(state, results, now):
    ok, failed = collect(state, 'balancers', results, 'pre-flight')
    if failed:
        halt(state, 'preflight', 'could not repair %s: %s' % (
            ', '.join(state['repaired']), describe_failures('ready', failed)))
        return
    _ready_for_batches(state)


def _ready_for_batches(state):
    refused = resume_refused(state) if routing_on(state) else ''
    if refused:
        halt(state, 'preflight', refused)
        return
    state['phase'] = 'batches'
    state['act'] = {}


def plan_text(state):
    settings = state['settings']
    lines = ['Rolling %s from %s to %s on %d hosts' % (
        settings['backend'], state['previous_version'], settings['version'], len(state['app_hosts']))]
    if state['done_before']:
        lines.append('%d already done (resume): %s' % (len(state['done_before']), ', '.join(state['done_before'])))
    if state['settings']['limit']:
        lines.append('canary_limit: only %s; the other app hosts stay as they are' % ', '.join(state['settings']['limit']))
    if state['held']:
        lines.append('left alone (set by an operator): %s' % '; '.join(
            '%s (%s)' % (h, why) for h, why in sorted(state['held'].items())))
    capacity = state['capacity']
    lines.append('at most %d of %d hosts out of rotation at once (canary_max_unavailable=%s)%s' % (
        capacity['max_unavailable'], len(state['app_hosts']), settings['max_unavailable'],
        ', %d out already: batches of at most %d' % (len(capacity['out_before']), capacity['room'])
        if capacity['out_before'] else ''))
    lines.append('repaired before starting: %s' % (', '.join(state['repaired']) or 'nothing'))
    number = 0
    for index, step in enumerate(state['plan_steps']):
        for batch in step:
            number += 1
            lines.append('step %d, batch %d: %s' % (index + 1, number, ', '.join(batch)))
    looks = judged_looks(state) if state['plan_steps'] else []
    if 0 in looks:
        lines.append('step 1 gets %s%% of traffic for %s x %s s of analysis before full weight' % (
            settings['traffic_percent'], settings['analysis_count'], settings['analysis_interval']))
    later = [i + 1 for i in looks if i]
    if later:
        lines.append('step%s %s judged too, at full weight against the hosts still on %s (%s x %s s each)' % (
            's' if len(later) > 1 else '', ', '.join(str(i) for i in later), state['previous_version'],
            settings['analysis_count'], settings['analysis_interval']))
    total = max(state.get('looks_planned') or 0, len(looks))
    if total > 1:
        lines.append('%d looks over the whole rollout share confidence %s (each judged at %.6g)%s' % (
            total, settings['confidence'], look_confidence(settings['confidence'], 1, total),
            '; %d of them in this run' % len(looks) if len(looks) < total else ''))
    return lines
