# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout benchmark on the local fleet (`make bench-rollout`): the same
v1 -> v2 update under the same mixed client load, done by

  (a) baseline: bench/rolling_update.yml, a hand-written serial rolling update
      (ansible.builtin + community.general.haproxy, no collection), and
  (b) ours: grayrelease.canary.rollout with max_unavailable=1 and a 1 x 10 s
      canary analysis,

in one invocation, so the ratio compares like with like. For each: wall time,
failed client requests (fast and slow apart, with statuses), tasks started and
executed per batch (bench/callback_plugins/task_counter.py). Targets are
printed with whether they are met; they never fail the run. The run fails
(exit 1) only when something errored unexpectedly: fleet setup, the baseline
playbook, or ours ending without a report (its exit code is reported).

Environment:
  BENCH_WHICH=baseline|ours|both     (default both)
  BENCH_COLLECTION_ROOT=DIR          collections dir for ours (holds
                                     ansible_collections/grayrelease/canary);
                                     default a snapshot of .build/collections
                                     (the work tree) taken at the start
  BENCH_FAST_RATE (20), BENCH_SLOW_RATE (0.5), BENCH_SLOW_SECONDS (6)
  BENCH_SLOW_ARRIVALS (poisson, seeded by the round; or periodic)
  BENCH_PLAYBOOK_TIMEOUT (1200 s per playbook run)
  BENCH_ROUNDS (1): rounds of baseline then ours, each on a reseeded fleet; with
                    more than one the ratio is taken between the median walls
                    (a drain that meets a 6 s request costs up to 6 s, so one
                    pair of runs can differ by 10 s either way)
  BENCH_JUDGE_EVERY_STEP (false): ours judges every step that leaves hosts
                    behind (the default since issue 19) or only the canary (false:
                    the same work as the engine before it, so a before/after
                    comparison measures the engine, not the extra windows); the
                    ratio subtracts one analysis window per judged step
  BENCH_OUT (default .build/bench-rollout.json, with ssh .build/bench-rollout-ssh.json)
  BENCH_TRANSPORT=docker|ssh (default docker): how both playbooks reach the
                    hosts. docker: community.docker.docker on the default fleet
                    (inventory/local-fleet). ssh: ansible_connection=ssh as the
                    unprivileged user deploy with become through sudo,
                    pipelining and ControlPersist (docs/ssh.md), on the
                    inventory molecule/ssh/sshd.yml writes; the fleet is set up
                    and reseeded over docker exec as before.
  BENCH_SSH_FLEET=ssh|default (with BENCH_TRANSPORT=ssh, default ssh): the
                    ssh scenario's own fleet (ssh-lb1, ssh-app1..3; molecule
                    -s ssh), or the default fleet (lb1, lb2, app1-6) with sshd
                    started on it by molecule/ssh/sshd.yml (inventory in
                    .build/ssh-default/; the issue's 6-host figure)
Every wait is bounded; the load client stops by itself after 1500 s at most.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INVENTORY = os.path.join(REPO, "inventory", "local-fleet", "hosts.yml")
BUILD = os.path.join(REPO, ".build")
WORK = os.path.join(BUILD, "bench-rollout")
APPS = ["app%d" % i for i in range(1, 7)]
BALANCERS = ["lb1", "lb2"]
# The molecule scenario whose create/converge sets up and reseeds the fleet.
SCENARIO = "default"
TRANSPORT = os.environ.get("BENCH_TRANSPORT", "docker")
SSH_FLEET = os.environ.get("BENCH_SSH_FLEET", "ssh")
SSH_SETUP = os.path.join(REPO, "molecule", "ssh", "sshd.yml")
if TRANSPORT == "ssh" and SSH_FLEET == "ssh":
    APPS = ["ssh-app%d" % i for i in range(1, 4)]
    BALANCERS = ["ssh-lb1"]
    SCENARIO = "ssh"
    # molecule converge -s ssh writes it (molecule/ssh/sshd.yml).
    INVENTORY = os.path.join(BUILD, "ssh", "inventory.yml")
elif TRANSPORT == "ssh":
    # sshd.yml run on the default fleet after its converge (ssh_setup_default_fleet).
    INVENTORY = os.path.join(BUILD, "ssh-default", "inventory.yml")
# The load runs inside the first balancer, against its own HAProxy.
LOAD_HOST = BALANCERS[0]
if TRANSPORT == "ssh":
    # Apart from a docker-transport bench that may run at the same time.
    WORK = os.path.join(BUILD, "bench-rollout-ssh")
VERSION = "v2"
ANALYSIS_COUNT = 1
ANALYSIS_INTERVAL = 10
JUDGE_EVERY_STEP = os.environ.get("BENCH_JUDGE_EVERY_STEP", "false").lower() in ("1", "true", "yes")
OURS_ARGS = {"canary_max_unavailable": 1, "canary_analysis_count": ANALYSIS_COUNT,
             "canary_analysis_interval": ANALYSIS_INTERVAL, "canary_judge_every_step": JUDGE_EVERY_STEP}
FAST_RATE = float(os.environ.get("BENCH_FAST_RATE", "20"))
SLOW_RATE = float(os.environ.get("BENCH_SLOW_RATE", "0.5"))
SLOW_SECONDS = float(os.environ.get("BENCH_SLOW_SECONDS", "6"))
PLAYBOOK_TIMEOUT = float(os.environ.get("BENCH_PLAYBOOK_TIMEOUT", "1200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
# Periodic slow requests behind HAProxy's roundrobin visit the servers in a
# fixed rotation, so whether a drain meets one depends on how a run's batch
# cadence lines up with it; random (poisson) arrivals give both runs the
# same odds.
SLOW_ARRIVALS = os.environ.get("BENCH_SLOW_ARRIVALS", "poisson")
BASELINE_DRAIN_TASK = "Drain the server on every balancer"
BASELINE_FIRST_TASK = "^" + BASELINE_DRAIN_TASK
TARGETS = {"ours_failed": 0, "ratio": 0.8, "tasks_per_1host_batch": 15, "canary_batch_tasks": 30}


class BenchError(Exception):
    pass


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def run(cmd, timeout=600, check=True, env=None, input_text=None):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, input=input_text,
                         check=False)
    if check and res.returncode != 0:
        raise BenchError("%s failed (rc %s):\n%s\n%s" % (" ".join(cmd), res.returncode, res.stdout[-3000:],
                                                         res.stderr[-3000:]))
    return res


def docker(*args, **kwargs):
    return run(["docker"] + list(args), **kwargs)


def base_env(collection_root=None):
    env = dict(os.environ)
    root = collection_root or os.path.join(BUILD, "collections")
    venv_bin = os.path.join(REPO, ".venv", "bin")
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_LIBRARY",
                "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED"):
        env.pop(key, None)
    env.update(ANSIBLE_COLLECTIONS_PATH=root, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="true", PYTHONPATH=root,
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="false", PY_COLORS="0", MOLECULE_NO_LOG="false")
    return env


def playbook_env(collection_root, counter_out, batch_re=None):
    env = base_env(collection_root)
    env.update(ANSIBLE_FORKS="10", ANSIBLE_PIPELINING="true",
               # Over SSH the inventory's known_hosts holds every host's key.
               ANSIBLE_HOST_KEY_CHECKING="true" if TRANSPORT == "ssh" else "false",
               ANSIBLE_PYTHON_INTERPRETER="auto_silent", ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "bench", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="task_counter", TASK_COUNTER_OUT=counter_out)
    if batch_re:
        env["TASK_COUNTER_BATCH_RE"] = batch_re
    else:
        env.pop("TASK_COUNTER_BATCH_RE", None)
    return env


# -- fleet -----------------------------------------------------------------

def fleet_up():
    # Molecule skips the create when it remembers one, even if the containers
    # were removed since (another scenario with the same names): start over.
    present = subprocess.run(["docker", "inspect"] + BALANCERS + APPS, capture_output=True, check=False)
    if present.returncode != 0:
        run(["molecule", "destroy", "-s", SCENARIO], timeout=900, env=base_env(), check=True)
    log("fleet: molecule create -s %s" % SCENARIO)
    run(["molecule", "create", "-s", SCENARIO], timeout=900, env=base_env(), check=True)


def ssh_setup_default_fleet():
    """sshd, the login user and the SSH inventory on the default fleet (molecule/ssh/sshd.yml, idempotent)."""
    env = base_env()
    env.update(ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_PYTHON_INTERPRETER="auto_silent")
    run(["ansible-playbook", "-i", os.path.join(REPO, "inventory", "local-fleet", "hosts.yml"), SSH_SETUP,
         "-e", "ssh_network=grayrelease-fleet", "-e", "ssh_out_dir=%s" % os.path.dirname(INVENTORY)],
        timeout=900, env=env, check=True)


def reseed():
    """Fleet back to v1, HAProxy runtime state fresh, no other release staged, no lock."""
    t0 = time.monotonic()
    for lb in BALANCERS:
        # Fresh runtime state (admin state, weights) whatever a previous run left.
        docker("exec", lb, "systemctl", "restart", "haproxy", timeout=60, check=False)
        docker("exec", lb, "rm", "-rf", "/var/lib/grayrelease-canary", "/tmp/load.json", "/tmp/load.stop",
               timeout=30, check=False)
    run(["molecule", "converge", "-s", SCENARIO], timeout=900, env=base_env(), check=True)
    if TRANSPORT == "ssh" and SCENARIO == "default":
        ssh_setup_default_fleet()
    for app in APPS:
        docker("exec", app, "sh", "-c",
               "cd /opt/demoapp/releases && for d in *; do [ \"$d\" = v1 ] || rm -rf \"$d\"; done",
               timeout=30)
    versions = {app: os.path.basename(docker("exec", app, "readlink", "/opt/demoapp/current",
                                             timeout=30).stdout.strip()) for app in APPS}
    if set(versions.values()) != {"v1"}:
        raise BenchError("reseed left versions %s" % versions)
    log("fleet: reseeded to v1 in %.0f s" % (time.monotonic() - t0))


def build_release():
    out = run([os.path.join(REPO, "scripts", "build-release.sh"), VERSION], timeout=60).stdout.strip().splitlines()
    artifact = out[-1] if out else os.path.join(REPO, "dist", "demoapp-%s.tar.gz" % VERSION)
    if not os.path.isfile(artifact):
        raise BenchError("release archive %s missing" % artifact)
    return artifact


# -- load ------------------------------------------------------------------

def load_start(seed):
    with open(os.path.join(REPO, "scripts", "load.py"), encoding="utf-8") as fh:
        docker("exec", "-i", LOAD_HOST, "sh", "-c", "cat > /tmp/load.py", input_text=fh.read(), timeout=30)
    docker("exec", LOAD_HOST, "rm", "-f", "/tmp/load.json", "/tmp/load.stop", timeout=30)
    docker("exec", "-d", LOAD_HOST, "python3", "/tmp/load.py", "--url", "http://127.0.0.1/",
           "--rate", str(FAST_RATE), "--duration", "1500", "--max-requests", "100000",
           "--slow-url", "http://127.0.0.1/slow?seconds=%g" % SLOW_SECONDS, "--slow-rate", str(SLOW_RATE),
           "--slow-seconds", str(SLOW_SECONDS), "--slow-arrivals", SLOW_ARRIVALS, "--seed", str(seed),
           "--stop-file", "/tmp/load.stop", "--out", "/tmp/load.json", timeout=30)
    time.sleep(3)  # the load runs before the playbook starts


def load_stop():
    docker("exec", LOAD_HOST, "touch", "/tmp/load.stop", timeout=30)
    deadline = time.monotonic() + SLOW_SECONDS + 40
    while time.monotonic() < deadline:
        res = docker("exec", LOAD_HOST, "cat", "/tmp/load.json", check=False, timeout=30)
        if res.returncode == 0 and res.stdout.strip():
            return json.loads(res.stdout)
        time.sleep(0.5)
    raise BenchError("load client did not report within %.0f s" % (SLOW_SECONDS + 40))


# -- one run -----------------------------------------------------------------

def run_one(which, artifact, collection_root, round_no=1):
    os.makedirs(WORK, exist_ok=True)
    tag = which if round_no == 1 else "%s-%d" % (which, round_no)
    counter_out = os.path.join(WORK, "%s-tasks.json" % tag)
    log_path = os.path.join(WORK, "%s.log" % tag)
    for path in (counter_out,):
        if os.path.exists(path):
            os.unlink(path)
    report_dir = os.path.join(WORK, "%s-reports" % tag)
    shutil.rmtree(report_dir, ignore_errors=True)
    if which == "baseline":
        cmd = ["ansible-playbook", "-i", INVENTORY, os.path.join(REPO, "bench", "rolling_update.yml"),
               "-e", "release_version=%s" % VERSION, "-e", "release_archive=%s" % artifact]
        env = playbook_env(None, counter_out, BASELINE_FIRST_TASK)
    else:
        cmd = ["ansible-playbook", "-i", INVENTORY, "grayrelease.canary.rollout",
               "-e", "canary_version=%s" % VERSION, "-e", "canary_artifact=%s" % artifact,
               # Numbers as JSON: the engine at b5f9a00 rejects the string '1' that
               # `-e canary_max_unavailable=1` gives (reported as a finding).
               "-e", json.dumps(OURS_ARGS),
               "-e", "canary_report_dir=%s" % report_dir]
        env = playbook_env(collection_root, counter_out)
    if TRANSPORT == "ssh":
        # Each run opens its own SSH connections, as a fresh controller or AWX job does.
        control_dir = os.path.join(WORK, "%s-cp" % tag)
        shutil.rmtree(control_dir, ignore_errors=True)
        cmd += ["-e", "ansible_control_path_dir=%s" % control_dir]
    log("%s: load on (fast %g req/s, slow %g s x %g req/s), playbook: %s"
        % (which, FAST_RATE, SLOW_SECONDS, SLOW_RATE, " ".join(cmd[3:])))
    load_start(seed=round_no)   # both sides of a round see the same arrivals
    t0 = time.monotonic()
    timed_out = False
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=PLAYBOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, 15)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                rc = proc.wait(timeout=30)
    wall = round(time.monotonic() - t0, 1)
    load = load_stop()
    log("%s: rc %s in %.1f s (log %s)" % (which, rc, wall, os.path.relpath(log_path, REPO)))
    counter = None
    if os.path.exists(counter_out):
        with open(counter_out, encoding="utf-8") as fh:
            counter = json.load(fh)
    report = None
    if which == "ours" and os.path.exists(os.path.join(report_dir, "report.json")):
        with open(os.path.join(report_dir, "report.json"), encoding="utf-8") as fh:
            report = json.load(fh)
    versions = {app: os.path.basename(docker("exec", app, "readlink", "/opt/demoapp/current",
                                             check=False, timeout=30).stdout.strip()) for app in APPS}
    result = {"rc": rc, "timed_out": timed_out, "wall_seconds": wall, "load": load, "round": round_no,
              "versions_after": versions, "log": os.path.relpath(log_path, REPO)}
    if report is not None:
        result["decision"] = report.get("decision")
        result["plan"] = report.get("plan")
        result["report_seconds"] = report.get("seconds")
        # An engine without canary_judge_every_step judged its first step only.
        result["judged_steps"] = sum(1 for step in report.get("steps") or [] if step.get("judge"))
    result["tasks"] = batch_figures(counter, result.get("plan"))
    result["drain_wait_seconds"] = drain_waits(which, counter, report)
    if counter is not None:
        result["tasks"]["counter_file"] = os.path.relpath(counter_out, REPO)
    return result


def drain_waits(which, counter, report):
    """Seconds each batch waited for in-flight requests to end, or None.

    The load's 6 s requests make this the noisiest part of a run (0 or up to
    6 s a batch, by chance), and both sides pay it. Ours: the longest wait
    its balancers reported. Baseline: each drain task's seconds beyond the
    fastest of the run (its waits come in whole polls of 1 s).
    """
    if which == "ours":
        if report is None:
            return None
        return [round(max([float((view or {}).get("drain", {}).get("waited") or 0)
                           for view in (batch.get("drain") or {}).values()] or [0.0]), 2)
                for step in report.get("steps") or [] for batch in step.get("batches") or []]
    if counter is None:
        return None
    tasks = counter.get("tasks") or []
    seconds = [(tasks[i + 1]["start"] if i + 1 < len(tasks) else counter["seconds"]) - task["start"]
               for i, task in enumerate(tasks) if task["name"].startswith(BASELINE_DRAIN_TASK)]
    if not seconds:
        return None
    return [round(s - min(seconds), 2) for s in seconds]


def batch_figures(counter, plan):
    if counter is None:
        return {"error": "no task counter output"}
    segments = counter["segments"]
    batches = [s for s in segments if s["segment"].startswith("batch ")]
    sizes = None
    if isinstance(plan, list) and len(plan) == len(batches):
        sizes = [len(b) if isinstance(b, list) else None for b in plan]
    one_host_after_canary = [b for i, b in enumerate(batches)
                             if i > 0 and (sizes is None or sizes[i] == 1)]

    def spread(key):
        values = [b[key] for b in one_host_after_canary]
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    canary = batches[0] if batches else None
    return {
        "total_started": counter["tasks_started"],
        "total_executed": counter["tasks_executed"],
        "batches": len(batches),
        "batch_sizes": sizes,
        "segments": [{k: s[k] for k in ("segment", "tasks_started", "tasks_executed", "analysis_tasks_started",
                                        "seconds")} for s in segments],
        "one_host_batches_after_canary": {"count": len(one_host_after_canary), "started": spread("tasks_started"),
                                          "executed": spread("tasks_executed"), "seconds": spread("seconds")},
        "canary_batch": None if canary is None else {
            "started": canary["tasks_started"], "executed": canary["tasks_executed"],
            "analysis_tasks_started": canary["analysis_tasks_started"],
            "started_analysis_aside": canary["tasks_started"] - canary["analysis_tasks_started"],
            "executed_analysis_aside": canary["tasks_executed"] - canary["analysis_tasks_executed"],
            "seconds": canary["seconds"]},
    }


# -- output ------------------------------------------------------------------

def fmt_spread(s):
    return "-" if not s else "%s / %s / %s" % (s["min"], s["median"], s["max"])


def print_run(which, r):
    load = r["load"]
    print("")
    print("== %s" % which)
    extra = ""
    if "decision" in r:
        extra = "  decision %s (report %s s)" % (r["decision"], r.get("report_seconds"))
    print("  playbook rc %s%s, wall %.1f s%s" % (
        r["rc"], " (TIMED OUT)" if r["timed_out"] else "", r["wall_seconds"], extra))
    print("  versions after: %s" % ", ".join("%s=%s" % kv for kv in sorted(r["versions_after"].items())))
    fast, slow = load.get("fast", {}), load.get("slow", {})
    print("  load: %s requests in %s s, failed %s; versions %s; errors %s" % (
        load.get("requests"), load.get("seconds"), load.get("failed"), load.get("versions"), load.get("errors")))
    print("    fast: %s requests, failed %s, statuses %s, errors %s" % (
        fast.get("requests"), fast.get("failed"), fast.get("statuses"), fast.get("errors")))
    print("    slow: %s requests, failed %s, statuses %s, errors %s (skipped %s, max %s ms)" % (
        slow.get("requests"), slow.get("failed"), slow.get("statuses"), slow.get("errors"), slow.get("skipped"),
        slow.get("max_ms")))
    t = r["tasks"]
    if "error" in t:
        print("  tasks: %s" % t["error"])
        return
    print("  tasks: %s started, %s executed, %s batches (sizes %s)" % (
        t["total_started"], t["total_executed"], t["batches"], t["batch_sizes"] or "not reported"))
    for s in t["segments"]:
        print("    %-10s started %3d  executed %3d  %7.1f s%s" % (
            s["segment"], s["tasks_started"], s["tasks_executed"], s["seconds"],
            "  (analysis tasks %d)" % s["analysis_tasks_started"] if s["analysis_tasks_started"] else ""))
    o = t["one_host_batches_after_canary"]
    print("  1-host batches after the canary (%d), min / median / max: started %s; executed %s; seconds %s" % (
        o["count"], fmt_spread(o["started"]), fmt_spread(o["executed"]), fmt_spread(o["seconds"])))
    c = t["canary_batch"]
    if c:
        print("  canary batch (batch 1): started %d (analysis loop aside %d), executed %d (aside %d), %.1f s" % (
            c["started"], c["started_analysis_aside"], c["executed"], c["executed_analysis_aside"], c["seconds"]))


def snapshot_collection(engine):
    root = os.path.join(WORK, "collection-snapshot")
    target = os.path.join(root, "ansible_collections", "grayrelease", "canary")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(target)
    for name in ("galaxy.yml", "meta", "playbooks", "plugins", "roles"):
        source = os.path.join(engine, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif os.path.exists(source):
            shutil.copy2(source, target)
    return root


def median_wall(rounds, which):
    return statistics.median(r[which]["wall_seconds"] for r in rounds if which in r)


def median_batch_ratio(rounds):
    """Median seconds of the 1-host batches after the canary, ours over baseline, pooled over rounds."""
    pooled = {}
    for r in rounds:
        for which in ("ours", "baseline"):
            tasks = (r.get(which) or {}).get("tasks") or {}
            segments = tasks.get("segments") or []
            batches = [seg["seconds"] for seg in segments if seg["segment"].startswith("batch ")][1:]
            pooled.setdefault(which, []).extend(batches)
    if not pooled.get("ours") or not pooled.get("baseline"):
        return None
    return round(statistics.median(pooled["ours"]) / statistics.median(pooled["baseline"]), 3)


def summary(results, rounds):
    out = {}
    print("")
    print("== targets")
    ours, base = results.get("ours"), results.get("baseline")

    def show(label, value, target, met):
        state = "n/a" if met is None else ("MET" if met else "NOT MET")
        print("  %-52s %-18s target %-8s %s" % (label, value, target, state))
        out[label] = {"value": value, "target": target, "met": met}

    if ours:
        f = sum(r["ours"]["load"].get("fast", {}).get("failed") or 0 for r in rounds if "ours" in r)
        s = sum(r["ours"]["load"].get("slow", {}).get("failed") or 0 for r in rounds if "ours" in r)
        show("ours: failed requests fast / slow%s" % (" (all rounds)" if len(rounds) > 1 else ""),
             "%s / %s" % (f, s), "0 / 0", f == 0 and s == 0)
    if ours and base:
        looks = max([r["ours"].get("judged_steps") or 1 for r in rounds if "ours" in r] or [1])
        analysis = ANALYSIS_COUNT * ANALYSIS_INTERVAL * looks
        ours_wall, base_wall = median_wall(rounds, "ours"), median_wall(rounds, "baseline")
        ratio = round((ours_wall - analysis) / base_wall, 3)
        out["ratio"] = ratio
        what = "wall" if len(rounds) == 1 else "median wall of %d rounds" % len(rounds)
        print("  ratio = (ours %s %.1f - analysis %d) / baseline %s %.1f = %.3f" % (
            what, ours_wall, analysis, what, base_wall, ratio))
        pairs = [(r["ours"], r["baseline"]) for r in rounds if "ours" in r and "baseline" in r]
        if len(rounds) > 1:
            print("    per round: %s" % ", ".join(
                "%.3f" % ((o["wall_seconds"] - analysis) / b["wall_seconds"]) for o, b in pairs))
        if pairs and all(o.get("drain_wait_seconds") is not None and b.get("drain_wait_seconds") is not None
                         for o, b in pairs):
            waits = [(sum(o["drain_wait_seconds"]), sum(b["drain_wait_seconds"])) for o, b in pairs]
            aside = [(o["wall_seconds"] - analysis - wo) / (b["wall_seconds"] - wb)
                     for (o, b), (wo, wb) in zip(pairs, waits)]
            out["ratio_drain_waits_aside"] = round(statistics.median(aside), 3)
            print("  drain waits for in-flight 6 s requests, seconds per run: ours %s, baseline %s" % (
                ", ".join("%.1f" % wo for wo, wb in waits), ", ".join("%.1f" % wb for wo, wb in waits)))
            print("  ratio with each run's drain waits aside (median of rounds) = %.3f (reference, no target)"
                  % out["ratio_drain_waits_aside"])
            # The drain waits are luck (which host has a 6 s request in flight when it is
            # drained) and swing single rounds both ways: the same mean wait on both sides
            # shows what the engines themselves are worth against each other.
            rest_ours = statistics.median(o["wall_seconds"] - analysis - wo for (o, b), (wo, wb) in zip(pairs, waits))
            rest_base = statistics.median(b["wall_seconds"] - wb for (o, b), (wo, wb) in zip(pairs, waits))
            mean_wait = statistics.mean([w for pair in waits for w in pair])
            out["ratio_equal_drain_waits"] = round((rest_ours + mean_wait) / (rest_base + mean_wait), 3)
            print("  outside the drain waits, median seconds: ours %.1f (analysis aside), baseline %.1f; with the "
                  "mean wait of all runs (%.1f s) on both sides the ratio is %.3f (reference, no target)"
                  % (rest_ours, rest_base, mean_wait, out["ratio_equal_drain_waits"]))
        batch_ratio = median_batch_ratio(rounds)
        if batch_ratio is not None:
            out["batch_ratio"] = batch_ratio
            print("  1-host batches after the canary, median seconds ours / baseline (all rounds) = %.3f "
                  "(reference, no target)" % batch_ratio)
        promoted = all(r["ours"].get("decision") == "promoted" and r["ours"]["rc"] == 0
                       for r in rounds if "ours" in r)
        if not promoted:
            print("  (ours was not promoted: the ratio compares unlike runs)")
        show("ratio", ratio, "<= %s" % TARGETS["ratio"], ratio <= TARGETS["ratio"] if promoted else None)
    if ours and "error" not in ours["tasks"]:
        o = ours["tasks"]["one_host_batches_after_canary"]
        m = o["started"]["max"] if o["started"] else None
        show("ours: tasks started per 1-host batch (max)", m, "<= %d" % TARGETS["tasks_per_1host_batch"],
             None if m is None else m <= TARGETS["tasks_per_1host_batch"])
        m = o["executed"]["max"] if o["executed"] else None
        show("ours: tasks executed per 1-host batch (max)", m, "<= %d" % TARGETS["tasks_per_1host_batch"],
             None if m is None else m <= TARGETS["tasks_per_1host_batch"])
        c = ours["tasks"]["canary_batch"]
        if c:
            show("ours: canary batch tasks started, analysis aside", c["started_analysis_aside"],
                 "<= %d" % TARGETS["canary_batch_tasks"], c["started_analysis_aside"] <= TARGETS["canary_batch_tasks"])
            show("ours: canary batch tasks executed, analysis aside", c["executed_analysis_aside"],
                 "<= %d" % TARGETS["canary_batch_tasks"], c["executed_analysis_aside"] <= TARGETS["canary_batch_tasks"])
    if base:
        f = base["load"].get("fast", {}).get("failed")
        s = base["load"].get("slow", {}).get("failed")
        show("baseline (reference): failed requests fast / slow", "%s / %s" % (f, s), "0 / 0", f == 0 and s == 0)
    return out


def main():
    which = os.environ.get("BENCH_WHICH", "both")
    if TRANSPORT not in ("docker", "ssh") or SSH_FLEET not in ("ssh", "default"):
        print("BENCH_TRANSPORT must be docker or ssh, not %r; BENCH_SSH_FLEET ssh or default, not %r"
              % (TRANSPORT, SSH_FLEET), file=sys.stderr)
        return 2
    if which not in ("baseline", "ours", "both"):
        print("BENCH_WHICH must be baseline, ours or both, not %r" % which, file=sys.stderr)
        return 2
    collection_root = os.environ.get("BENCH_COLLECTION_ROOT") or None
    if collection_root:
        collection_root = os.path.abspath(collection_root)
        if not os.path.isdir(os.path.join(collection_root, "ansible_collections", "grayrelease", "canary")):
            print("BENCH_COLLECTION_ROOT %s has no ansible_collections/grayrelease/canary" % collection_root,
                  file=sys.stderr)
            return 2
    runs = ["baseline", "ours"] if which == "both" else [which]
    engine = os.path.realpath(os.path.join(collection_root or os.path.join(BUILD, "collections"),
                                           "ansible_collections", "grayrelease", "canary"))
    head = run(["git", "-C", engine, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", engine, "status", "--porcelain", "--", "playbooks", "roles", "plugins"],
                check=False).stdout.strip()
    if not collection_root:
        # The linked collection is the work tree: a snapshot keeps edits made
        # while the bench runs (several minutes) out of its later rounds.
        collection_root = snapshot_collection(engine)
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "which": which,
            "engine": engine, "engine_commit": head, "engine_dirty": bool(dirty),
            "load": {"fast_rate": FAST_RATE, "slow_rate": SLOW_RATE, "slow_seconds": SLOW_SECONDS,
                     "slow_arrivals": SLOW_ARRIVALS},
            "rounds": ROUNDS,
            "ours_args": OURS_ARGS, "forks": 10, "pipelining": True,
            "transport": TRANSPORT, "fleet": {"scenario": SCENARIO, "balancers": BALANCERS, "apps": APPS},
            "inventory": os.path.relpath(INVENTORY, REPO)}
    print("bench-rollout: %s; engine for ours %s @ %s%s" % (
        ", ".join(runs), engine, head or "?", " (+ uncommitted changes)" if dirty else ""))
    print("transport %s: %d balancer(s), %d app hosts (%s), inventory %s" % (
        TRANSPORT, len(BALANCERS), len(APPS), ", ".join(BALANCERS + APPS), os.path.relpath(INVENTORY, REPO)))
    print("load inside %s: fast %g req/s to /, slow %g req/s (%s) to /slow?seconds=%g" % (
        LOAD_HOST, FAST_RATE, SLOW_RATE, SLOW_ARRIVALS, SLOW_SECONDS))
    rounds = []
    failures = []
    try:
        fleet_up()
        for round_no in range(1, max(ROUNDS, 1) + 1):
            rounds.append({})
            for name in runs:
                reseed()
                artifact = build_release()
                r = rounds[-1][name] = run_one(name, artifact, collection_root, round_no)
                if name == "baseline" and (r["rc"] != 0 or r["timed_out"]):
                    failures.append("baseline playbook failed (rc %s%s), see %s" % (
                        r["rc"], ", timed out" if r["timed_out"] else "", r["log"]))
                if name == "ours" and (r["timed_out"] or "decision" not in r):
                    failures.append("ours ended without a report (rc %s%s), see %s" % (
                        r["rc"], ", timed out" if r["timed_out"] else "", r["log"]))
        log("fleet: back to v1")
        reseed()
    except (BenchError, subprocess.TimeoutExpired) as exc:
        failures.append("bench error: %s" % exc)
    rounds = [r for r in rounds if r]
    for number, one in enumerate(rounds, 1):
        for name in runs:
            if name in one:
                print_run(name if len(rounds) == 1 else "%s, round %d" % (name, number), one[name])
    # The run with the median wall of each side stands for it in the figures.
    results = {}
    for name in runs:
        done = sorted((r[name] for r in rounds if name in r), key=lambda run_: run_["wall_seconds"])
        if done:
            results[name] = done[(len(done) - 1) // 2]
    targets = summary(results, rounds)
    data = dict(meta, results=results, rounds=rounds, targets=targets, errors=failures)
    os.makedirs(BUILD, exist_ok=True)
    out = os.environ.get("BENCH_OUT") or os.path.join(BUILD, "bench-rollout%s.json" % (
        "-ssh" if TRANSPORT == "ssh" else ""))
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print("")
    print("figures: %s" % os.path.relpath(out, REPO))
    for failure in failures:
        print("ERROR: %s" % failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
