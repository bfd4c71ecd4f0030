"""Capacity monitor for one HAProxy balancer (stdlib only, runs inside it).

Every --interval seconds reads the backend's runtime state over the admin
socket (`show stat` for status and weight, `show servers state` for the admin
state) and counts the servers out of rotation: admin state drain or maint,
weight 0, or a status other than UP. Stops at --duration seconds or when
--stop-file appears, then writes one JSON summary to --out:
  samples, errors, max_out, max_out_servers (the first sample at the max),
  max_out_at (seconds since start), out_seen (server -> samples out),
  final_out (servers out in the last sample), final (last sample per server).

    python3 capacity_monitor.py --backend demoapp --duration 300 \
        --stop-file /tmp/capmon.stop --out /tmp/capmon.json
"""
import argparse
import csv
import json
import os
import socket
import time

MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20
DRAIN_BITS = 0x08 | 0x10


def ask(path, command):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.connect(path)
    sock.sendall(command.encode("ascii") + b"\n")
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks).decode("utf-8")


def sample(path, backend):
    admin = {}
    for line in ask(path, "show servers state %s" % backend).splitlines()[1:]:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        bits = int(fields[6])
        admin[fields[3]] = "maint" if bits & MAINT_BITS else ("drain" if bits & DRAIN_BITS else "ready")
    servers = {}
    for row in csv.DictReader(ask(path, "show stat").lstrip("# ").splitlines()):
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            servers[row["svname"]] = {"status": row["status"], "weight": int(row["weight"] or 0),
                                      "admin_state": admin.get(row["svname"])}
    return servers


def out_of_rotation(info):
    return info["admin_state"] != "ready" or info["weight"] == 0 or info["status"] != "UP"


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
            servers = sample(args.socket, args.backend)
        except Exception:  # a socket hiccup is counted, never fatal
            summary["errors"] += 1
        else:
            out = sorted(s for s, info in servers.items() if out_of_rotation(info))
            summary["samples"] += 1
            for name in out:
                summary["out_seen"][name] = summary["out_seen"].get(name, 0) + 1
            if len(out) > summary["max_out"]:
                summary.update(max_out=len(out), max_out_servers=out, max_out_at=round(tick - start, 2))
            summary["final_out"] = out
            summary["final"] = servers
        time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    summary["seconds"] = round(time.monotonic() - start, 1)
    with open(args.out + ".tmp", "w") as handle:
        json.dump(summary, handle, sort_keys=True)
    os.rename(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
