# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-playbook under cProfile, for bench/bench_scale.py: the main process
(strategy, variable manager, the templating it does, callbacks, result
processing; not the forked workers) is profiled and its stats written to
SCALE_PROFILE_OUT at the end, and also whenever the process gets SIGUSR1, so a
run stopped at its time limit still leaves the profile of what it did.

    SCALE_PROFILE_OUT=/tmp/p.prof python profile_playbook.py -i INV PLAYBOOK ...
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys


def main():
    out = os.environ["SCALE_PROFILE_OUT"]
    prof = cProfile.Profile()

    def dump(signum=None, frame=None):
        prof.disable()
        prof.dump_stats(out)
        prof.enable()

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["ansible-playbook"] + sys.argv[1:]
    from ansible.cli.playbook import main as playbook_main  # pylint: disable=import-outside-toplevel
    prof.enable()
    try:
        rc = playbook_main()
    finally:
        prof.disable()
        prof.dump_stats(out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
