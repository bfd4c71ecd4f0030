# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rollout through ansible-runner (as AWX runs a job), for bench/bench_scale.py:
runs the playbook in a private data directory, then measures the job events
ansible-runner wrote (artifacts/<ident>/job_events/*.json): how many, their
total size, the largest event file, and the largest event_data.res (the task
result AWX stores with the event; AWX drops a res above 700,000 bytes,
MAX_EVENT_RES_DATA). The environment (ANSIBLE_*, SCALE_*) is passed through.
Writes a JSON summary to --out; the exit code is the playbook's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys


def measure(artifact_dir):
    out = {"events": 0, "total_bytes": 0, "largest_event_bytes": 0, "largest_res_bytes": 0,
           "res_over_100k": 0, "res_over_700k": 0, "largest_res_task": None, "largest_res_host": None,
           "largest_res_event": None}
    for path in glob.glob(os.path.join(artifact_dir, "job_events", "*.json")):
        size = os.path.getsize(path)
        out["events"] += 1
        out["total_bytes"] += size
        out["largest_event_bytes"] = max(out["largest_event_bytes"], size)
        try:
            with open(path, encoding="utf-8") as handle:
                event = json.load(handle)
        except (OSError, ValueError):
            continue
        data = event.get("event_data") or {}
        res = data.get("res")
        if res is None:
            continue
        res_bytes = len(json.dumps(res, separators=(",", ":")))
        out["res_over_100k"] += int(res_bytes > 100000)
        out["res_over_700k"] += int(res_bytes > 700000)
        if res_bytes > out["largest_res_bytes"]:
            out.update(largest_res_bytes=res_bytes, largest_res_task=data.get("task"),
                       largest_res_host=data.get("host"), largest_res_event=event.get("event"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--private-dir", required=True)
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--playbook", required=True)
    ap.add_argument("--extra-vars", required=True, help="a JSON file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    import ansible_runner  # pylint: disable=import-outside-toplevel

    with open(args.extra_vars, encoding="utf-8") as handle:
        extravars = json.load(handle)
    os.makedirs(args.private_dir, exist_ok=True)
    envvars = {k: v for k, v in os.environ.items() if k.startswith(("ANSIBLE_", "SCALE_", "TASK_COUNTER_"))}
    envvars.update(PATH=os.environ["PATH"], PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    res = ansible_runner.run(private_data_dir=args.private_dir, playbook=args.playbook, inventory=args.inventory,
                             extravars=extravars, envvars=envvars, quiet=True, ident="scale")
    summary = measure(os.path.join(args.private_dir, "artifacts", "scale"))
    summary.update(rc=res.rc, status=res.status)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    print(json.dumps(summary, indent=1))
    return res.rc if isinstance(res.rc, int) else 1


if __name__ == "__main__":
    sys.exit(main())
