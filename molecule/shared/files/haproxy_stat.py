# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print the servers of one HAProxy backend as JSON, read from the runtime socket.

Usage: python3 haproxy_stat.py SOCKET BACKEND
Output: {"SERVER": {"status": ..., "weight": ..., "check_status": ..., "req_tot": ...,
          "admin_state": "ready" | "drain" | "maint", "initial_weight": ...}, ...}
The fleet has no socat; the fleet setup (to wait for UP) and the testinfra
tests (to check it) both run this file so they read the socket the same way.
"""
import csv
import json
import socket
import sys


# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced/inherited/config/resolver
# maintenance, and forced/inherited drain.
MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20
DRAIN_BITS = 0x08 | 0x10


def ask(path, command):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
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


def admin_states(path, backend):
    """server -> (admin state name, initial weight) from `show servers state`."""
    out = {}
    for line in ask(path, "show servers state %s" % backend).splitlines()[1:]:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight ...
        bits = int(fields[6])
        name = "maint" if bits & MAINT_BITS else ("drain" if bits & DRAIN_BITS else "ready")
        out[fields[3]] = (name, int(fields[8]))
    return out


def read_backend(path, backend):
    """server -> status, weight, check_status, req_tot, admin_state, initial_weight."""
    text = ask(path, "show stat").lstrip("# ")
    admin = admin_states(path, backend)
    servers = {}
    for row in csv.DictReader(text.splitlines()):
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            state, initial = admin.get(row["svname"], (None, None))
            servers[row["svname"]] = {
                "status": row["status"],
                "weight": int(row["weight"] or 0),
                "check_status": row["check_status"],
                "req_tot": int(row["req_tot"] or 0),
                "admin_state": state,
                "initial_weight": initial,
            }
    return servers


def main(path, backend):
    servers = read_backend(path, backend)
    if not servers:
        sys.exit("no servers for backend %r on %s" % (backend, path))
    print(json.dumps(servers, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
