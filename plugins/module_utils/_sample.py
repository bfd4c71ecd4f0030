# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixed-count HTTP sampling for the canary analysis (module http_sample).

Private to grayrelease.canary. Where health_check probes until a target is
healthy, this sends a fixed number of requests to every target, spread evenly
over a time window, and keeps every latency and outcome: the raw samples the
canary judge compares. Request handling is health_check's own (one place for
how a URL is fetched and judged).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait as wait_for

from ansible_collections.grayrelease.canary.plugins.module_utils._health import (
    HealthError,
    probe,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact

# Reasons kept per target: enough to explain a failure, bounded in size.
MAX_REASONS = 5


def sample(targets, count=10, duration=10.0, concurrency=64,
           clock=time.monotonic, sleep=time.sleep, probe_func=probe):
    """Probe every target `count` times, rounds evenly spaced over `duration`.

    targets: the list built by _health.build_targets. Returns url ->
    {total, errors, latencies_ms (of answered requests), statuses
    (code -> count, '-' for no answer), reasons (first failures)}, the
    URLs' credentials redacted (see _redact), in the keys too.

    Rounds start on schedule: a round waits for the previous one only until
    its own start, so a slow target (each request bounded by its timeout,
    see _health.probe) neither holds back the other targets nor its own
    later requests. Every request ends by duration + its timeout: one that
    waited for a free worker gets only what is left of that, and one with
    nothing left is not sent (not counted). The call therefore returns
    within duration + the largest timeout.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise HealthError('count %r must be an integer >= 1' % (count,))
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
        raise HealthError('duration %r must be a number of seconds >= 0' % (duration,))
    gap = float(duration) / count
    out = dict((t.url, {'total': 0, 'errors': 0, 'latencies_ms': [], 'statuses': {}, 'reasons': []})
               for t in targets)
    # Threads are made on demand: overlapping rounds only when a target is slow.
    workers = max(1, min(concurrency, len(targets) * count))
    start = clock()
    window_end = start + duration

    def request(target):
        left = window_end + target.timeout - clock()
        if left >= target.timeout:
            return probe_func(target, target.timeout)
        if left <= 0:
            return None
        return probe_func(target, left)

    rounds = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix='http_sample') as pool:
        for index in range(count):
            # Each round starts with a different target: the first request
            # submitted is measurably slower (thread start-up, measured
            # +35% on loopback), and a fixed order would put that cost on
            # whichever group is listed first, usually the canary.
            shift = index % len(targets)
            jobs = [(t, pool.submit(request, t)) for t in targets[shift:] + targets[:shift]]
            rounds.append(jobs)
            if index + 1 == count:
                break
            next_round = start + gap * (index + 1)
            # Answers usually come well before the next round: wait for them
            # (so requests to one target run in order), but not past it.
            wait_for([job for dummy, job in jobs], timeout=max(0.0, next_round - clock()))
            pause = next_round - clock()
            if pause > 0:
                sleep(pause)
    for jobs in rounds:
        for target, job in jobs:
            outcome = job.result()
            if outcome is None:
                continue
            status, reason, latency_ms = outcome
            rec = out[target.url]
            rec['total'] += 1
            key = str(status) if status is not None else '-'
            rec['statuses'][key] = rec['statuses'].get(key, 0) + 1
            if latency_ms is not None:
                rec['latencies_ms'].append(round(latency_ms, 3))
            if reason is not None:
                rec['errors'] += 1
                if len(rec['reasons']) < MAX_REASONS:
                    rec['reasons'].append(reason)
    return redact(out)
