# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the decision plugins: rollout_plan, health_check, canary_judge.

Not a test: it prints figures. Run from the repo root with the venv:
    .venv/bin/python bench/bench_decisions.py
Targets (issue 3): 10,000-host plan < 100 ms; 200 health targets < 3x the
wall time of 1 target; 10,000-sample judge < 1 s.

The HTTP targets are served by a child process (so the server does not
compete with the prober for this process's GIL) on 127.0.0.1 only; every
request waits 50 ms before it is answered.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, '.build', 'collections'))

DELAY_S = 0.050


def serve():
    """Child mode: an asyncio HTTP server answering every GET after 50 ms.

    asyncio rather than a thread per connection: the benchmark measures the
    prober, and on a 2-CPU machine a thread-per-request server would spend
    more time spawning threads than the prober spends probing.
    """
    import asyncio

    async def handle(reader, writer):
        try:
            await reader.readuntil(b'\r\n\r\n')
            await asyncio.sleep(DELAY_S)
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, '127.0.0.1', 0, backlog=1024)
        sys.stdout.write('%d\n' % server.sockets[0].getsockname()[1])
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        # Stops when the parent closes our stdin, and after 300 s in any case.
        eof = loop.run_in_executor(None, sys.stdin.read)
        await asyncio.wait_for(eof, timeout=300)
        server.close()

    try:
        asyncio.run(main())
    except asyncio.TimeoutError:
        pass


def timed(func, repeat):
    times = []
    for dummy in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def bench_plan():
    from ansible_collections.grayrelease.canary.plugins.module_utils._plan import plan
    print('rollout_plan (steps [1, 25%, 50%, 100%], max_unavailable 10%, 12 zones, best/median of 7)')
    for n in (1000, 10000):
        hosts = ['app-%05d' % i for i in range(n)]
        zones = dict((h, 'zone-%02d' % (i % 12)) for i, h in enumerate(hosts))
        done = hosts[:n // 20]
        for mode in ('spread', 'sequential'):
            def run():
                return plan(hosts, steps=[1, '25%', '50%', '100%'], max_unavailable='10%',
                            zones=zones, zone_mode=mode, done=done)
            best, median = timed(run, 7)
            print('  %6d hosts %-10s best %7.2f ms  median %7.2f ms  (%d batches)'
                  % (n, mode, best * 1000, median * 1000, len(run())))


def bench_health():
    from ansible_collections.grayrelease.canary.plugins.module_utils._health import build_targets, run_checks
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--serve'],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        defaults = dict(status_codes=[200], body_regex=None, json_query=None, json_expect=None,
                        max_latency_ms=None, rise=1, timeout=5, headers=None, validate_certs=True,
                        ca_path=None)

        def wall(count, concurrency, rise=1, interval=1.0):
            urls = ['http://127.0.0.1:%d/t/%d' % (port, i) for i in range(count)]
            targets = build_targets(urls, dict(defaults, rise=rise))
            start = time.perf_counter()
            result = run_checks(targets, interval=interval, deadline=30, concurrency=concurrency)
            elapsed = time.perf_counter() - start
            assert len(result['healthy']) == count, result['msg']
            return elapsed

        wall(20, 256)  # warm-up: imports, thread start-up, server accept loop
        print('health_check (each target answers in 50 ms; best / median of 7 runs)')
        for label, concurrency, rise in (('one round (rise=1), default concurrency 256', 256, 1),
                                         ('one round (rise=1), concurrency 64', 64, 1),
                                         ('module defaults (rise=2, interval=1 s)', 256, 2)):
            best = {}
            median = {}
            for count in (1, 50, 200):
                runs = [wall(count, concurrency, rise) for dummy in range(7)]
                best[count] = min(runs)
                median[count] = statistics.median(runs)
            print('  %s' % label)
            for name, fig in (('best', best), ('median', median)):
                print('    %-6s  1: %6.0f ms  50: %6.0f ms  200: %6.0f ms  ratio 200/1: %.2fx'
                      % (name, fig[1] * 1000, fig[50] * 1000, fig[200] * 1000, fig[200] / fig[1]))
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def bench_judge():
    from ansible_collections.grayrelease.canary.plugins.module_utils._judge import judge
    rng = random.Random(3)
    n = 10000
    baseline = [round(rng.lognormvariate(3.0, 0.4), 1) for dummy in range(n)]
    canary = [round(rng.lognormvariate(3.05, 0.4), 1) for dummy in range(n)]
    metrics = [
        dict(name='latency_ms', kind='samples', baseline=baseline, canary=canary),
        dict(name='http_5xx', kind='ratio', baseline={'errors': 12, 'total': n}, canary={'errors': 19, 'total': n}),
    ]
    best, median = timed(lambda: judge(metrics), 5)
    result = judge(metrics)
    print('canary_judge (%d samples a side, with ties, + one ratio metric; best/median of 5)' % n)
    print('  best %.1f ms  median %.1f ms  verdict %s, p=%.3g'
          % (best * 1000, median * 1000, result['verdict'], result['metrics']['latency_ms']['p_value']))


def main():
    if sys.argv[1:] == ['--serve']:
        serve()
        return
    # Shared build machines are often busy: the load says how far to trust the figures.
    print('python %s on %d CPUs, load average %.1f'
          % (sys.version.split()[0], os.cpu_count() or 0, os.getloadavg()[0]))
    bench_plan()
    bench_health()
    bench_judge()


if __name__ == '__main__':
    main()
