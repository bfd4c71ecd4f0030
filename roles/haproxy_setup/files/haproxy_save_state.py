# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Save HAProxy's server state (drains, weights, health) to its server-state-file.

Usage: python3 haproxy_save_state.py SOCKET FILE

Installed by the role grayrelease.canary.haproxy_setup, whose haproxy.service
drop-in runs it before every reload and stop; haproxy.cfg loads the file back
at start (load-server-state-from-file global), so a drain or a canary weight
set through the runtime API outlives the process that had it. Standard library
only: the balancer needs no socat.
"""
import os
import socket
import sys


def ask(path, command, timeout=5):
    """HAProxy's answer to one runtime API command on a unix socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
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


def main(socket_path, state_file):
    text = ask(socket_path, "show servers state")
    # The dump starts with its format version; anything else is an error
    # message (a socket without level admin answers "Permission denied"),
    # which must not replace the last good state.
    if not text.split("\n", 1)[0].strip().isdigit():
        sys.exit("haproxy_save_state: unexpected answer from %s: %s" % (socket_path, text[:200]))
    tmp = state_file + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, state_file)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    main(sys.argv[1], sys.argv[2])
