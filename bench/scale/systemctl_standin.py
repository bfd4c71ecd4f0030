# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in systemctl of the scale harness: what grayrelease.canary.release
runs on a simulated host (reset-failed, restart/start/stop, show
--property=ActiveState/SubState, daemon-reload) goes to the stand-in services
(bench/scale/standin.py) for the host named in SCALE_HOST, which the
scale_local connection sets for every command it runs for that host.
Any other systemctl use fails loudly (rc 2) instead of pretending."""
import os
import sys
import urllib.error
import urllib.request


def call(path, host):
    url = "http://127.0.0.1:%s%s?host=%s" % (os.environ["SCALE_CONTROL_PORT"], path, host)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return 0, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return 1, exc.read().decode()
    except OSError as exc:
        return 1, "stand-in services unreachable: %s\n" % exc


def main(argv):
    host = os.environ.get("SCALE_HOST", "")
    args = [a for a in argv if not a.startswith("--")]
    if not host or not args:
        sys.stderr.write("stand-in systemctl: no SCALE_HOST or no command (%r)\n" % argv)
        return 2
    verb = args[0]
    if verb in ("daemon-reload", "reset-failed"):
        return 0
    if verb in ("restart", "start", "stop", "try-restart", "reload-or-restart"):
        rc, text = call("/stop" if verb == "stop" else "/restart", host)
        if rc:
            sys.stderr.write(text)
        return rc
    if verb == "show":
        rc, text = call("/state", host)
        sys.stdout.write(text)
        return rc
    if verb == "is-active":
        rc, text = call("/state", host)
        active = "ActiveState=active" in text
        sys.stdout.write("active\n" if active else "inactive\n")
        return 0 if active else 3
    sys.stderr.write("stand-in systemctl: %r is not simulated\n" % verb)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
