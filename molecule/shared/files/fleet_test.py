# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the fleet scenarios' tests share: docker exec into the fleet's
containers, their real state (release link, HAProxy runtime state through
haproxy_stat.py), and the environment to run playbooks the way a user does.
Imported by the scenarios' conftest.py files."""
import json
import os
import subprocess
import time

HAPROXY_STAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy_stat.py")


def docker(*args, check=True, input_text=None, timeout=60):
    return subprocess.run(["docker"] + list(args), check=check, capture_output=True, text=True,
                          input=input_text, timeout=timeout)


def version_of(host):
    """The release the host's current link points at, or None."""
    res = docker("exec", host, "readlink", "/opt/demoapp/current", check=False, timeout=15)
    return os.path.basename(res.stdout.strip()) if res.returncode == 0 else None


def haproxy_state(balancer, backend="demoapp"):
    with open(HAPROXY_STAT, encoding="utf-8") as handle:
        code = handle.read()
    return json.loads(docker("exec", "-i", balancer, "python3", "-", "/run/haproxy/admin.sock", backend,
                             input_text=code, timeout=15).stdout)


def ansible_env():
    env = dict(os.environ)
    # molecule's own ansible.cfg points at its generated inventory; the
    # playbooks in the tests run the way a user runs them, with a real one.
    for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_LIBRARY",
                "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_CALLBACK_PLUGINS"):
        env.pop(key, None)
    env.update(ANSIBLE_FORKS="10", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_PYTHON_INTERPRETER="auto_silent",
               ANSIBLE_PIPELINING="true")
    return env


def run_timed(cmd, timeout, stdout_tail=6000, stderr_tail=3000):
    """Run a playbook command with ansible_env(); print the tail of its output; .seconds is its wall time."""
    t0 = time.monotonic()
    res = subprocess.run(cmd, check=False, env=ansible_env(), capture_output=True, text=True, timeout=timeout)
    res.seconds = round(time.monotonic() - t0, 1)
    print(res.stdout[-stdout_tail:])
    print(res.stderr[-stderr_tail:])
    return res
