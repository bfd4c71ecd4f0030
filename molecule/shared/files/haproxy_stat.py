# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print the servers of one HAProxy backend as JSON, read from the runtime socket.

Usage: python3 haproxy_stat.py SOCKET BACKEND
Output: {"SERVER": {"status": ..., "weight": ..., "check_status": ...}, ...}
The fleet has no socat; the fleet setup (to wait for UP) and the testinfra
tests (to check it) both run this file so they read the socket the same way.
"""
import csv
import json
import socket
import sys


def show_stat(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    sock.sendall(b"show stat\n")
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks).decode("utf-8")


def main(path, backend):
    text = show_stat(path).lstrip("# ")
    servers = {}
    for row in csv.DictReader(text.splitlines()):
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            servers[row["svname"]] = {
                "status": row["status"],
                "weight": int(row["weight"] or 0),
                "check_status": row["check_status"],
            }
    if not servers:
        sys.exit("no servers for backend %r on %s" % (backend, path))
    print(json.dumps(servers, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
