# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Calibration of the canary judge: false alarms and detection power.

Not a test: it prints tables (and saves them to bench/results/calibration.txt).
Run from the repo root with the venv (make bench-calibrate):
    .venv/bin/python bench/calibrate.py [--trials 400] [--rate 40]

1. Records real traffic: two instances of the demo app (demoapp/app.py, the
   same release) on loopback ports, driven by paced HTTP clients; every
   request's latency and status is kept, per instance.
2. Replays it through the rollout's own metric assembly (_rollout's
   canary_metrics / analysis_metrics) and judge (judge_analysis), with the
   rollout defaults read from roles/rollout/defaults/main.yml: the first
   step's canary host against the other hosts of the local fleet, the
   canary's share of --rate req/s of real traffic (Poisson counts) over
   canary_analysis_count x canary_analysis_interval, and http_sample's 20
   probes per host per interval. Each side's requests are resampled from
   one instance's recording (A/A: both the same release; the canary side is
   one instance, the baseline the other, at random). A/B: the canary's
   requests are degraded - errors (each request fails with that chance),
   or latency (x factor, or + ms).
3. Counts the verdicts. The rollout stops on anything but `pass` with the
   default canary_on_marginal / canary_on_inconclusive (rollback), so
   "stopped" is the rate that matters: false alarms for A/A, detection for
   A/B. Then, per degradation, the shortest window (in intervals) whose
   detection reaches 95%.
4. Replays whole rollouts of the fleet with the default canary_steps: every
   step that leaves hosts behind is a look (the first step's hosts at
   canary_traffic_percent; later steps' new hosts at full weight, 1/6 of the
   traffic each, against the hosts not yet switched), each look judged at
   the confidence an alpha-spending scheme (_sequential.py) gives it, the
   rollout stopping at the first look that does not pass. A/A false alarms
   over the whole rollout, and detection of a regression that starts only
   at a later step, per scheme; then the windows the looks need to meet the
   goals, and the whole rollout again with them.

"before" is the judge without critical thresholds (as it was), "after" the
defaults. Bounded: recording --record-seconds, replay by trial counts; the
whole run takes about a minute and a half on 2 CPUs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.build', 'collections'))

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import judge  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._plan import resolve_steps  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._power import first_true, plan  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._rollout import (  # noqa: E402
    analysis_metrics,
    canary_metrics,
    judge_analysis,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._sequential import (  # noqa: E402
    DEFAULT_SCHEME,
    SCHEMES,
    look_confidence,
)

# http_sample's count per analysis interval (roles/rollout/tasks/analysis.yml).
PROBES_PER_INTERVAL = 20
# The local fleet (molecule/default): app1-app6 behind the balancers.
FLEET = 6
HOSTS = ['app%d' % (i + 1) for i in range(FLEET)]
SCENARIOS = [
    ('A/A', None),
    ('A/A, 0.5% errors on both', ('background', 0.005)),
    ('A/A, hosts differ', ('hosts', None)),
    ('errors 0.5%', ('errors', 0.005)),
    ('errors 2%', ('errors', 0.02)),
    ('errors 10%', ('errors', 0.10)),
    ('latency +20%', ('times', 1.2)),
    ('latency +100%', ('times', 2.0)),
    ('latency +300 ms', ('plus', 300.0)),
]
GOALS = {'errors 2%': 0.95, 'latency +100%': 0.95}
# Window lengths searched, in analysis intervals (up to 3 minutes at 10 s).
WINDOW_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18)
VERDICTS = ('pass', 'marginal', 'fail', 'inconclusive')
# Whole rollouts: (name, degradation, the first look it shows in). A
# regression from look 3 on is one that appears only once the new version
# serves half of the hosts (load-dependent, or on one host's data).
ROLLOUT_SCENARIOS = [
    ('A/A', None, 1),
    ('A/A, 0.5% errors on both', ('background', 0.005), 1),
    ('A/A, hosts differ', ('hosts', None), 1),
    ('errors 2% from step 1', ('errors', 0.02), 1),
    ('errors 2% from step 3', ('errors', 0.02), 3),
    ('latency +100% from step 3', ('times', 2.0), 3),
]
# Goals: caught by the look after step 3 (not by an earlier false alarm).
ROLLOUT_GOALS = {'errors 2% from step 3': (3, 0.95), 'latency +100% from step 3': (3, 0.95)}
# None: no spending, every look at the single-look confidence (what looking
# at every step would do without a sequential rule).
ROLLOUT_SCHEMES = (None,) + SCHEMES
# Looks whose windows are searched, per goal degradation: the first step's,
# and the look where the late regressions start.
WINDOW_SEARCHES = [(look, name) for look in sorted(set([1] + [k for k, dummy in ROLLOUT_GOALS.values()]))
                   for name in GOALS]


# ---------------------------------------------------------------- recording

def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _wait_up(url, deadline):
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise SystemExit('demo app at %s did not come up' % url)


def record(seconds, rate, instances=6, workers=1):
    """{instance: [(latency_ms, status), ...]} of GET / on real demo app processes."""
    tmp = tempfile.mkdtemp(prefix='calibrate-')
    release = os.path.join(tmp, 'release.json')
    with open(release, 'w', encoding='utf-8') as handle:
        json.dump({'version': 'calibration'}, handle)
    procs, ports = [], []
    recordings = dict((i, []) for i in range(instances))
    lock = threading.Lock()
    try:
        for dummy in range(instances):
            port = _free_port()
            procs.append(subprocess.Popen(
                [sys.executable, os.path.join(REPO, 'demoapp', 'app.py'), '--bind', '127.0.0.1', '--port', str(port),
                 '--release-file', release], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            _wait_up('http://127.0.0.1:%d/healthz' % port, time.monotonic() + 15)
        end = time.monotonic() + seconds
        # Paced like scripts/load.py: each worker sends one request every gap seconds.
        gap = workers * instances / float(rate)

        def client(index, offset):
            url = 'http://127.0.0.1:%d/' % ports[index]
            due = time.monotonic() + offset
            while True:
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() >= end:
                    return
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        resp.read()
                        status = resp.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError:
                    status = 0
                with lock:
                    recordings[index].append((round((time.monotonic() - t0) * 1000.0, 3), status))
                due += gap

        threads = [threading.Thread(target=client, args=(i, gap * w / workers))
                   for i in range(instances) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 10)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return recordings


# ---------------------------------------------------------------- replay

def rollout_defaults():
    with open(os.path.join(REPO, 'roles', 'rollout', 'defaults', 'main.yml'), encoding='utf-8') as handle:
        data = yaml.safe_load(handle)
    return {
        'traffic_percent': float(data['canary_traffic_percent']),
        'interval': float(data['canary_analysis_interval']),
        'count': int(data['canary_analysis_count']),
        'steps': data['canary_steps'],
        'confidence': float(data.get('canary_confidence', 0.98)),
        'critical_ratio': float(data.get('canary_critical_ratio', 0)),
        'critical_difference': float(data.get('canary_critical_difference', 0)),
        'stop_on': set(['fail'] + [v for v in ('marginal', 'inconclusive')
                                   if data['canary_on_%s' % v] == 'rollback']),
    }


def _poisson(rng, mean):
    if mean <= 0:
        return 0
    if mean > 200:
        return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _draw(rng, recording, n, degrade, canary):
    """n requests resampled from a recording, degraded on the canary side: (latencies, errors)."""
    kind, amount = degrade if degrade else (None, 0)
    drawn = rng.choices(recording, k=n)
    errors = sum(1 for dummy, status in drawn if status >= 500 or status == 0)
    if (kind == 'errors' and canary) or kind == 'background':
        # Injected errors on requests that had none: each fails with chance `amount`.
        errors += sum(1 for dummy, status in drawn if 0 < status < 500 and rng.random() < amount)
    if kind == 'times' and canary:
        return [round(latency * amount, 3) for latency, dummy in drawn], errors
    if kind == 'plus' and canary:
        return [round(latency + amount, 3) for latency, dummy in drawn], errors
    return [latency for latency, dummy in drawn], errors


def rollout_looks(conf):
    """Every look of the default plan on the fleet: (canary hosts, baseline hosts, host -> traffic share).

    Look 1 is the first step, its hosts at canary_traffic_percent (the
    weights set on canary and stable servers); at a later step every server
    is at full weight, so each host takes 1/FLEET of the traffic, and the
    step's new hosts are judged against the hosts not yet switched (the
    hosts promoted earlier serve too, on neither side). The step that
    switches the last hosts leaves no baseline and is not judged.
    """
    looks, done = [], 0
    for target in resolve_steps(conf['steps'], FLEET):
        if target >= FLEET:
            break
        canary, baseline = HOSTS[done:target], HOSTS[target:]
        if done == 0:
            share = conf['traffic_percent'] / 100.0
            traffic = dict([(h, share / len(canary)) for h in canary]
                           + [(h, (1 - share) / len(baseline)) for h in baseline])
        else:
            traffic = dict((h, 1.0 / FLEET) for h in canary + baseline)
        looks.append((canary, baseline, traffic))
        done = target
    return looks


def host_recordings(rng, recordings, degrade):
    """host -> the recording its requests are resampled from.

    Both sides from the version's recording (every instance's requests
    pooled); with 'hosts', each host from its own instance, so the hosts
    differ as the recorded processes did.
    """
    if degrade and degrade[0] == 'hosts':
        return dict(zip(HOSTS, rng.sample(recordings['instances'], FLEET)))
    return dict((h, recordings['pooled']) for h in HOSTS)


def one_analysis(rng, recordings, conf, count, rate, degrade, judge_options, with_log, metric_options=None,
                 look=None, recording_of=None):
    """The verdict of one replayed analysis: look (rollout_looks' item) or the first step's.

    recording_of: host_recordings() kept over the looks of one rollout;
    drawn for this analysis when None.
    """
    canary_hosts, baseline_hosts, traffic = look or rollout_looks(conf)[0]
    if recording_of is None:
        recording_of = host_recordings(rng, recordings, degrade)
    window = conf['interval'] * count
    before, after, logs = {'backends': {'demoapp': {}}}, {'backends': {'demoapp': {}}}, {}
    for group, canary in ((canary_hosts, True), (baseline_hosts, False)):
        for host in group:
            n = _poisson(rng, rate * window * traffic[host])
            latencies, errors = _draw(rng, recording_of[host], n, degrade, canary)
            before['backends']['demoapp'][host] = {'req_tot': 0, 'hrsp_5xx': 0}
            after['backends']['demoapp'][host] = {'req_tot': n, 'hrsp_5xx': errors}
            logs[host] = {'response_ms': latencies}
    rounds = []
    for dummy in range(count):
        samples = {}
        for group, canary in ((canary_hosts, True), (baseline_hosts, False)):
            for host in group:
                latencies, errors = _draw(rng, recording_of[host], PROBES_PER_INTERVAL, degrade, canary)
                samples['http://%s/' % host] = {'latencies_ms': latencies, 'errors': errors,
                                                'total': PROBES_PER_INTERVAL}
        rounds.append(samples)
    metrics = canary_metrics({'lb1': before}, {'lb1': after}, 'demoapp', canary_hosts, baseline_hosts, rounds,
                             ['http://%s/' % h for h in canary_hosts], ['http://%s/' % h for h in baseline_hosts])
    metrics = analysis_metrics(metrics, logs=logs if with_log else None, canary_servers=canary_hosts,
                               baseline_servers=baseline_hosts, options=metric_options)
    return judge_analysis(metrics, judge_fn=judge, **judge_options)['verdict']


def run_scenario(rng, recordings, conf, count, rate, degrade, judge_options, with_log, trials, metric_options=None,
                 look=None):
    tally = dict((v, 0) for v in VERDICTS)
    for dummy in range(trials):
        tally[one_analysis(rng, recordings, conf, count, rate, degrade, judge_options, with_log,
                           metric_options, look)] += 1
    stopped = sum(tally[v] for v in conf['stop_on'])
    return tally, stopped / float(trials)


def window_needed(rng, recordings, conf, rate, degrade, judge_options, with_log, trials, goal=0.95, look=None):
    """Shortest WINDOW_COUNTS entry with detection >= goal, by bisection (detection grows with the window)."""
    low, high = 0, len(WINDOW_COUNTS) - 1

    def enough(index):
        dummy, stopped = run_scenario(rng, recordings, conf, WINDOW_COUNTS[index], rate, degrade, judge_options,
                                      with_log, trials, look=look)
        return stopped >= goal

    if not enough(high):
        return None
    return WINDOW_COUNTS[first_true(low, high, enough)]


def per_look_confidence(confidence, look, looks, scheme):
    """What look `look` of `looks` is judged at: the scheme's confidence, or with no scheme the single look's."""
    return confidence if scheme is None else look_confidence(confidence, look, looks, scheme)


def look_options(judge_options, look, looks, scheme):
    return dict(judge_options, confidence=per_look_confidence(judge_options['confidence'], look, looks, scheme))


def one_rollout(rng, recordings, conf, counts, rate, degrade, from_look, judge_options, scheme):
    """The look (1-based) a replayed rollout stops at, 0 when every look passes.

    counts: each look's window, in intervals. The degradation shows on the
    canary side from look from_look on; with 'hosts' each host keeps its
    recording for the whole rollout.
    """
    looks = rollout_looks(conf)
    recording_of = host_recordings(rng, recordings, degrade)
    for number, (look, count) in enumerate(zip(looks, counts), 1):
        verdict = one_analysis(rng, recordings, conf, count, rate, degrade if number >= from_look else None,
                               look_options(judge_options, number, len(looks), scheme), False, look=look,
                               recording_of=recording_of)
        if verdict in conf['stop_on']:
            return number
    return 0


def run_rollouts(rng, recordings, conf, counts, rate, degrade, from_look, judge_options, scheme, trials):
    """Of `trials` rollouts, how many stopped at each look: [promoted, stopped at look 1, at look 2, ...]."""
    stops = [0] * (len(rollout_looks(conf)) + 1)
    for dummy in range(trials):
        stops[one_rollout(rng, recordings, conf, counts, rate, degrade, from_look, judge_options, scheme)] += 1
    return stops


# ---------------------------------------------------------------- report

def _window_text(count, conf):
    """A window in intervals for reading; None: longer than any searched."""
    if count is None:
        return '> %gs' % (WINDOW_COUNTS[-1] * conf['interval'])
    return '%d x %gs = %gs' % (count, conf['interval'], count * conf['interval'])


def table(title, rows, conf):
    out = ['', title, '',
           '%-26s %6s %6s %6s %6s %6s %9s %9s  %s' % (
               'scenario', 'trials', 'pass', 'margin', 'fail', 'inconc', 'stopped', 'fail-only',
               '95% stopped at (window)'),
           '-' * 112]
    for name, trials, tally, stopped, needed in rows:
        if name == 'A/A':
            goal = '  false alarms, goal <= 1%%: %s' % ('met' if stopped <= 0.01 else 'NOT met')
            window = '-'
        elif name.startswith('A/A'):
            goal, window = '  (stress case, no goal)', '-'
        else:
            window = needed if isinstance(needed, str) else _window_text(needed, conf)
            goal = ''
            if name in GOALS:
                goal = '  goal >= 95%%: %s' % ('met' if stopped >= GOALS[name] else 'NOT met')
        out.append('%-26s %6d %6d %6d %6d %6d %8.1f%% %8.1f%%  %s%s' % (
            name, trials, tally['pass'], tally['marginal'], tally['fail'], tally['inconclusive'], 100 * stopped,
            100.0 * tally['fail'] / trials, window, goal))
    return out


# Candidate tunings of the defaults, each as the variables a user would set.
RATIO_METRICS = ('http_5xx_ratio', 'probe_error_ratio')
TUNINGS = [
    ('defaults', {}, {}, {}),
    ('confidence 0.98 (canary_judge default)', {'confidence': 0.98}, {}, {}),
    ('confidence 0.999', {'confidence': 0.999}, {}, {}),
    ('max_absolute 0.005 (ratio metrics)', {}, dict((m, {'max_absolute': 0.005}) for m in RATIO_METRICS), {}),
    ('max_absolute 0.02 (ratio metrics)', {}, dict((m, {'max_absolute': 0.02}) for m in RATIO_METRICS), {}),
    ('probe_error_ratio not critical', {}, {'probe_error_ratio': {'critical': False}}, {}),
    ('canary_analysis_count 6 (60 s)', {}, {}, {'count': 6}),
    ('canary_traffic_percent 20', {}, {}, {'traffic_percent': 20.0}),
]
SWEEP_ROWS = (('A/A', None), ('A/A, 0.5% errors on both', ('background', 0.005)), ('errors 2%', ('errors', 0.02)),
              ('latency +100%', ('times', 2.0)))


def sweep_table(args, cells):
    """Stopped rate per candidate tuning: what each would buy in detection and cost in false alarms."""
    out = ['', 'Tuning candidates (AFTER defaults plus one change; stopped rate, %d analyses per cell, A/A %d)'
           % (args.trials, 2 * args.trials), '', '%-38s' % 'change' + ''.join('%14s' % name[:13] for name, dummy in SWEEP_ROWS),
           '-' * (38 + 14 * len(SWEEP_ROWS))]
    for index, (title, dummy, dummy, dummy) in enumerate(TUNINGS):
        out.append('%-38s' % title + ''.join('%13.1f%%' % (100 * cells[('sweep', index, row)][1])
                                             for row in range(len(SWEEP_ROWS))))
    return out


def describe_looks(conf, rate):
    """One line per look of the plan: who against whom, and what a default window gives each side."""
    window = conf['interval'] * conf['count']
    out = []
    for number, (canary, baseline, traffic) in enumerate(rollout_looks(conf), 1):
        shares = [sum(traffic[h] for h in side) for side in (canary, baseline)]
        out.append('  look %d: %s at %.3g%% of the traffic vs %s (%.3g%%): ~%d canary / %d baseline requests, '
                   'probes %d / %d per %g s window' % (
                       number, ', '.join(canary), 100 * shares[0], ', '.join(baseline), 100 * shares[1],
                       rate * window * shares[0], rate * window * shares[1],
                       PROBES_PER_INTERVAL * conf['count'] * len(canary),
                       PROBES_PER_INTERVAL * conf['count'] * len(baseline), window))
    return out


def rollout_table(title, rows, single):
    """rows: (scenario name, run_rollouts' stops). Stopped anywhere, and caught by the look the regression starts at.

    single: scenario name -> the single look's stopped rate, which the
    whole rollout's false alarms should not exceed by much.
    """
    looks = len(rows[0][1]) - 1
    out = ['', title, '',
           '%-26s %8s' % ('scenario', 'rollouts') + ''.join('%8s' % ('stop@%d' % k) for k in range(1, looks + 1))
           + ' %8s %8s  %s' % ('promoted', 'stopped', 'goal'),
           '-' * 112]
    from_look = dict((name, first) for name, dummy, first in ROLLOUT_SCENARIOS)
    for name, stops in rows:
        trials = float(sum(stops))
        stopped = 1 - stops[0] / trials
        if name.startswith('A/A'):
            goal = ('false alarms over the rollout, goal <= 1%%: %s' % ('met' if stopped <= 0.01 else 'NOT met')
                    if name == 'A/A' else '(stress case, no goal)') + '; single look %.1f%%' % (100 * single[name])
        else:
            look = from_look[name]
            goal = 'caught by look %d: %.1f%%' % (look, 100 * stops[look] / trials)
            if name in ROLLOUT_GOALS:
                goal += ', goal >= %d%%: %s' % (100 * ROLLOUT_GOALS[name][1],
                                                'met' if stops[look] / trials >= ROLLOUT_GOALS[name][1] else 'NOT met')
        out.append('%-26s %8d' % (name, trials) + ''.join('%8d' % n for n in stops[1:])
                   + ' %8d %7.1f%%  %s' % (stops[0], 100 * stopped, goal))
    return out


def window_table(cells, conf, args):
    """Per scheme, the window each searched look needs for each goal degradation."""
    looks = len(rollout_looks(conf))
    out = ['', 'Windows the looks need: shortest canary_analysis_count (x %g s) with >= 95%% of %d analyses of that '
           'look stopped' % (conf['interval'], args.window_trials), '',
           '%-16s' % 'scheme' + ''.join('%24s' % ('look %d: %s' % (look, name)) for look, name in WINDOW_SEARCHES),
           '-' * (16 + 24 * len(WINDOW_SEARCHES))]
    for s, scheme in enumerate(ROLLOUT_SCHEMES):
        out.append('%-16s' % (scheme or 'none') + ''.join(
            '%24s' % ('%s (%.2g)' % (_window_text(cells[('look-window', s, g)], conf),
                                     1 - per_look_confidence(conf['confidence'], look, looks, scheme)))
            for g, (look, dummy) in enumerate(WINDOW_SEARCHES)))
    out.append('(in brackets: the alpha that look is judged at, 1 - its confidence)')
    return out


def tuned_count(cells, conf, scheme_index):
    """The one window every look can use to meet the searched goals (never shorter than the default), or None.

    One canary_analysis_count for every look: the engine then needs no
    per-look window, and the first look, judged at a stricter confidence
    than alone, gets back the detection it had.
    """
    needed = [cells[('look-window', scheme_index, g)] for g in range(len(WINDOW_SEARCHES))]
    return None if None in needed else max([conf['count']] + needed)


# Set in the parent before the workers fork: the recordings, defaults and options.
_SHARED = {}


def _task(key):
    """One cell of the tables, computed in a worker with its own seeded generator."""
    shared = _SHARED
    args, conf, recordings = shared['args'], shared['conf'], shared['recordings']
    rng = random.Random('%d/%r' % (args.seed, key))
    what, first, second = key
    looks = rollout_looks(conf)
    if what in ('rollout', 'tuned'):
        # ('rollout', scheme, scenario): the default window at every look;
        # ('tuned', scenario, window): the default scheme, that window at every look.
        if what == 'rollout':
            scheme, index, count = ROLLOUT_SCHEMES[first], second, conf['count']
        else:
            scheme, index, count = DEFAULT_SCHEME, first, second
        name, degrade, from_look = ROLLOUT_SCENARIOS[index]
        trials = args.rollout_trials * (2 if name.startswith('A/A') else 1)
        return key, run_rollouts(rng, recordings, conf, [count] * len(looks), args.rate, degrade, from_look,
                                 shared['defaults'], scheme, trials)
    if what == 'look-window':
        look, name = WINDOW_SEARCHES[second]
        return key, window_needed(rng, recordings, conf, args.rate, dict(SCENARIOS)[name],
                                  look_options(shared['defaults'], look, len(looks), ROLLOUT_SCHEMES[first]), False,
                                  args.window_trials, look=looks[look - 1])
    if what == 'sweep':
        title, judge_options, metric_options, overrides = TUNINGS[first]
        tuned = dict(conf, **overrides)
        trials = args.trials * (2 if SWEEP_ROWS[second][0].startswith('A/A') else 1)
        return key, run_scenario(rng, recordings, tuned, tuned['count'], args.rate, SWEEP_ROWS[second][1],
                                 dict(shared['defaults'], **judge_options), False, trials, metric_options)
    title, options, with_log, dummy = shared['configs'][first]
    name, degrade = SCENARIOS[second]
    if what == 'window':
        return key, window_needed(rng, recordings, conf, args.rate, degrade, options, with_log, args.window_trials)
    trials = args.trials * 4 if name.startswith('A/A') else args.trials
    return key, run_scenario(rng, recordings, conf, conf['count'], args.rate, degrade, options, with_log, trials)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--trials', type=int, default=200, help='A/B analyses per degradation (A/A: 4x)')
    ap.add_argument('--window-trials', type=int, default=100, help='analyses per window length searched')
    ap.add_argument('--rollout-trials', type=int, default=400, help='whole rollouts per degradation (A/A: 2x)')
    ap.add_argument('--rate', type=float, default=40.0,
                    help='req/s through the backend (scripts/load.py default: 40)')
    ap.add_argument('--record-seconds', type=float, default=20.0)
    ap.add_argument('--record-rate', type=float, default=120.0, help='req/s recorded, all instances')
    ap.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument('--seed', type=int, default=20261128)
    ap.add_argument('--out', default=os.path.join(REPO, 'bench', 'results', 'calibration.txt'))
    args = ap.parse_args(argv)
    started = time.monotonic()
    conf = rollout_defaults()

    recorded = record(args.record_seconds, args.record_rate, instances=FLEET)
    recordings = {'instances': [recorded[i] for i in sorted(recorded)],
                  'pooled': [r for i in sorted(recorded) for r in recorded[i]]}
    lines = ['Canary judge calibration (bench/calibrate.py, seed %d)' % args.seed, '']
    for index, rec in sorted(recorded.items()):
        lat = sorted(r[0] for r in rec)
        statuses = dict((s, sum(1 for r in rec if r[1] == s)) for s in sorted(set(r[1] for r in rec)))
        lines.append('recorded demo app instance %d: %d requests, statuses %s, latency p50 %.2f ms, p90 %.2f ms, '
                     'p99 %.2f ms' % (index + 1, len(rec), statuses, lat[len(lat) // 2], lat[int(len(lat) * 0.9)],
                                      lat[int(len(lat) * 0.99)]))
    window = conf['interval'] * conf['count']
    share = conf['traffic_percent'] / 100.0
    looks = rollout_looks(conf)
    first_step = len(looks[0][0])
    lines += ['defaults (roles/rollout/defaults/main.yml): canary_traffic_percent %g, window %d x %g s = %g s, '
              'first step %d of %d hosts; stop on %s' % (
                  conf['traffic_percent'], conf['count'], conf['interval'], window, first_step, FLEET,
                  ', '.join(sorted(conf['stop_on']))),
              'traffic %g req/s: ~%d canary / %d baseline requests per analysis; probes %d canary / %d baseline'
              % (args.rate, args.rate * window * share, args.rate * window * (1 - share),
                 PROBES_PER_INTERVAL * conf['count'] * first_step,
                 PROBES_PER_INTERVAL * conf['count'] * (FLEET - first_step)),
              'planner (_power.plan) for this window: %s' % json.dumps(dict(
                  (k, v) for k, v in plan(args.rate, conf['traffic_percent'], conf['interval'], conf['count'],
                                          alpha=1 - conf['confidence'], latency_ratio=conf['critical_ratio'] or 2).items()
                  if k in ('error_power', 'latency_power', 'detectable_error_rate', 'detectable_latency_ratio',
                           'needed_count', 'needed_traffic_percent')), sort_keys=True)]
    defaults = {'confidence': conf['confidence'], 'critical_ratio': conf['critical_ratio'],
                'critical_difference': conf['critical_difference'],
                # As the engine judges (_engine.judge_options): few requests with clearly too many errors fail.
                'exact_below_min_samples': True}
    first_look = look_confidence(conf['confidence'], 1, len(looks), DEFAULT_SCHEME)
    configs = [
        ('BEFORE: the judge as it was (confidence 0.98, no critical thresholds)',
         {'confidence': 0.98, 'critical_ratio': 0, 'critical_difference': 0}, False, False),
        ('AFTER: defaults (confidence %g, critical_ratio %g, critical_difference %g)'
         % (conf['confidence'], conf['critical_ratio'], conf['critical_difference']), defaults, False, True),
        ('AFTER, with canary_haproxy_log (real-traffic latency judged too)', defaults, True, True),
        ('AFTER, as look 1 of %d of a rollout (%s spending: confidence %.5g)'
         % (len(looks), DEFAULT_SCHEME, first_look), dict(defaults, confidence=first_look), False, False),
    ]
    _SHARED.update(args=args, conf=conf, recordings=recordings, defaults=defaults, configs=configs)
    keys = [('window', c, i) for c, config in enumerate(configs) if config[3]
            for i, (name, dummy) in enumerate(SCENARIOS) if not name.startswith('A/A')]
    keys += [('table', c, i) for c in range(len(configs)) for i in range(len(SCENARIOS))]
    keys += [('sweep', t, r) for t in range(len(TUNINGS)) for r in range(len(SWEEP_ROWS))]
    keys += [('rollout', s, i) for s in range(len(ROLLOUT_SCHEMES)) for i in range(len(ROLLOUT_SCENARIOS))]
    keys += [('look-window', s, g) for s in range(len(ROLLOUT_SCHEMES)) for g in range(len(WINDOW_SEARCHES))]
    default_scheme = ROLLOUT_SCHEMES.index(DEFAULT_SCHEME)

    def compute(pool, keys):
        return dict(pool.imap_unordered(_task, keys) if pool else (_task(key) for key in keys))

    with (multiprocessing.get_context('fork').Pool(args.workers) if args.workers > 1
          else contextlib.nullcontext()) as pool:
        cells = compute(pool, keys)
        # Then the whole rollout again with the windows the default scheme's looks need.
        tuned = tuned_count(cells, conf, default_scheme)
        if tuned:
            cells.update(compute(pool, [('tuned', i, tuned) for i in range(len(ROLLOUT_SCENARIOS))]))
    for c, (title, dummy, dummy, search) in enumerate(configs):
        rows = []
        for i, (name, dummy) in enumerate(SCENARIOS):
            tally, stopped = cells[('table', c, i)]
            trials = args.trials * 4 if name.startswith('A/A') else args.trials
            needed = None if name.startswith('A/A') else cells.get(('window', c, i), 'not searched')
            rows.append((name, trials, tally, stopped, needed))
        lines += table(title, rows, conf)
    lines += sweep_table(args, cells)
    # configs[1], the defaults: the single look each look of the rollout is compared with.
    single = dict((name, cells[('table', 1, i)][1]) for i, (name, dummy) in enumerate(SCENARIOS))
    lines += ['', 'WHOLE ROLLOUT: %d hosts, canary_steps %s -> hosts switched after each step %s; every step that '
              'leaves hosts behind is judged, the last one is not; the rollout stops at the first look whose verdict '
              'is not pass' % (FLEET, conf['steps'], resolve_steps(conf['steps'], FLEET))]
    lines += describe_looks(conf, args.rate)
    for s, scheme in enumerate(ROLLOUT_SCHEMES):
        title = ('Whole rollout, %s: looks judged at alpha %s (confidence 1 - alpha), each over %s' % (
            'scheme %s' % scheme if scheme else 'no spending (every look at the single-look confidence)',
            ', '.join('%.3g' % (1 - per_look_confidence(conf['confidence'], k, len(looks), scheme))
                      for k in range(1, len(looks) + 1)), _window_text(conf['count'], conf)))
        lines += rollout_table(title, [(name, cells[('rollout', s, i)])
                                       for i, (name, dummy, dummy) in enumerate(ROLLOUT_SCENARIOS)], single)
    lines += window_table(cells, conf, args)
    if tuned:
        lines += rollout_table('Whole rollout, scheme %s, every look over the window they all meet their goals with: '
                               '%s (canary_analysis_count %d)' % (DEFAULT_SCHEME, _window_text(tuned, conf), tuned),
                               [(name, cells[('tuned', i, tuned)])
                                for i, (name, dummy, dummy) in enumerate(ROLLOUT_SCENARIOS)], single)
    else:
        lines += ['', 'No window up to %s meets the goals of scheme %s: no whole rollout with tuned windows'
                  % (_window_text(WINDOW_COUNTS[-1], conf), DEFAULT_SCHEME)]
    lines += ['', 'stopped = verdict the rollout stops on (%s); fail-only = verdict fail; window = shortest '
              'canary_analysis_count (x interval) with >= 95%% stopped in %d analyses; stop@k = rollouts stopped by '
              'look k; whole-rollout rows: %d rollouts (A/A: %d)'
              % (', '.join(sorted(conf['stop_on'])), args.window_trials, args.rollout_trials, 2 * args.rollout_trials),
              # The load says whether the runtime is the bench's own: others' jobs slow it down.
              'runtime %.0f s (%d workers, load average %.1f at the end)' % (
                  time.monotonic() - started, args.workers, os.getloadavg()[0])]
    text = '\n'.join(lines) + '\n'
    sys.stdout.write(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as handle:
        handle.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
