"""Capacity monitor for one HAProxy balancer (stdlib only, runs inside it).

Every --interval seconds reads the backend's runtime state over the admin
socket (`show stat` for status and weight, `show servers state` for the admin
state) and counts the servers out of rotation: admin state drain or maint,
weight 0, or a status that is not UP (UP 1/2, still routed to, is UP).
Stops at --duration seconds or when --stop-file appears, then writes one
JSON summary to --out:
  samples, errors, max_out, max_out_servers (the first sample at the max),
  max_out_at (seconds since start), max_out_states (server -> admin state,
  status and weight in that sample), out_seen (server -> samples out),
  final_out (servers out in the last sample), final (last sample per server).

    python3 capacity_monitor.py --backend demoapp --duration 300 \
        --stop-file /tmp/capmon.stop --out /tmp/capmon.json
"""
import argparse
import json
import os
import sys
import time

# The fleet's own socket reader, copied next to this file (fleet_test.InContainer).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haproxy_stat import read_backend  # noqa: E402  pylint: disable=wrong-import-position


def out_of_rotation(info):
    # HAProxy still routes to a server whose status is "UP 1/2" (UP, one
    # failed check on the way down), as the engine counts it
    # (_claims.out_of_rotation); "DOWN 1/2" (on the way up) takes nothing.
    # The monitor once counted the first as out: a loaded machine's missed
    # check on an untouched server read as the engine exceeding its cap.
    return info["admin_state"] != "ready" or info["weight"] == 0 or not info["status"].startswith("UP")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default="/run/haproxy/admin.sock")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if os.path.exists(args.stop_file):
        os.unlink(args.stop_file)
    start = time.monotonic()
    summary = {"samples": 0, "errors": 0, "max_out": 0, "max_out_servers": [], "max_out_at": None,
               "out_seen": {}, "final_out": [], "final": {}, "started": time.time()}
    while time.monotonic() - start < args.duration and not os.path.exists(args.stop_file):
        tick = time.monotonic()
        try:
            servers = read_backend(args.socket, args.backend)
        except Exception:  # a socket hiccup is counted, never fatal
            summary["errors"] += 1
        else:
            out = sorted(s for s, info in servers.items() if out_of_rotation(info))
            summary["samples"] += 1
            for name in out:
                summary["out_seen"][name] = summary["out_seen"].get(name, 0) + 1
            if len(out) > summary["max_out"]:
                # Why each was out at that moment (a drain, maintenance, a failed health check, weight 0).
                states = dict((s, "%s %s weight %s" % (servers[s]["admin_state"], servers[s]["status"], servers[s]["weight"]))
                              for s in out)
                summary.update(max_out=len(out), max_out_servers=out, max_out_at=round(tick - start, 2),
                               max_out_states=states)
            summary["final_out"] = out
            summary["final"] = servers
        time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    summary["seconds"] = round(time.monotonic() - start, 1)
    with open(args.out + ".tmp", "w") as handle:
        json.dump(summary, handle, sort_keys=True)
    os.rename(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
