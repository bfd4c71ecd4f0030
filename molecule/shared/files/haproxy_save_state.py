# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Save HAProxy's server state (drains, weights, health) to its server-state-file.

Usage: python3 haproxy_save_state.py SOCKET FILE
The fleet's haproxy.service drop-in (fleet-setup.yml) runs this before every
reload and stop; haproxy.cfg loads the file back at start
(`load-server-state-from-file global`), so a drain or a canary weight set
through the runtime API outlives the process that had it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haproxy_stat import ask  # noqa: E402  pylint: disable=wrong-import-position


def main(socket_path, state_file):
    text = ask(socket_path, "show servers state")
    # The dump starts with its format version; anything else is an error
    # message, which must not replace the last good state.
    if not text.split("\n", 1)[0].strip().isdigit():
        sys.exit("haproxy_save_state: unexpected answer from %s: %s" % (socket_path, text[:200]))
    with open(state_file + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.rename(state_file + ".tmp", state_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
