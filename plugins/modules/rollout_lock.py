#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_lock
short_description: Take or release the one-rollout-per-service lock
version_added: 1.0.0
description:
  - Keeps two rollouts (or a rollout and a rollback) of the same service from
    running at the same time with a small JSON lock file
    C({owner, acquired, ttl, host, pid}) on the host the module runs on (the
    rollout and rollback playbooks use the first balancer, never the
    controller, which may be an ephemeral execution environment).
  - O(state=present) acquires the lock. A live lock held by another owner fails
    with that owner and its age. A lock older than its own TTL is taken over and
    the takeover is reported (RV(took_over), RV(previous_owner), RV(previous_age)).
    Acquiring a lock you already hold refreshes it (new acquisition time).
  - A lock file this module cannot have written (not JSON, truncated, C(NaN),
    C(1e999), a negative or far-future time, a link or FIFO in its place) is a
    corrupt lock, named with its problem, taken over with O(force=true) or once
    its file's mtime is older than O(ttl), refused otherwise with how to take it
    over. It never makes the module crash.
  - O(state=absent) releases the lock only when O(owner) matches, unless
    O(force=true). A lock held by someone else is left in place with a warning.
  - O(state=identity), run on the controller (C(delegate_to=localhost)),
    changes nothing and returns RV(identity), the owner and O(info) that name
    the ansible-playbook run executing it, computed as the rollout computes its
    own; the rollback playbook takes its lock with them.
  - The lock is created atomically (a private temporary file hard-linked to
    O(path)), so two runs racing for a free lock cannot both win, and a
    reader never sees a half-written lock. Missing directories are created
    with mode 0700 (owned by root when the module runs as root).
  - Refuses a lock directory, or a directory above it, that another user owns
    or can write (sticky directories such as C(/tmp) excepted above the lock
    directory), naming its path, owner and mode, as such a user could replace the
    lock.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  path:
    description:
      - Absolute path of the lock file.
      - Required with O(state=present) and O(state=absent).
    type: path
  state:
    description:
      - V(present) acquires (or refreshes, or takes over an expired) lock,
        V(absent) releases it, V(identity) only returns RV(identity) (run it on the controller).
    type: str
    choices: [present, absent, identity]
    default: present
  owner:
    description:
      - Who holds the lock, e.g. C(rollout demoapp v2 by alice (job 42)).
        Shown to anyone who finds the lock taken.
      - Required with O(state=present). With O(state=absent) the lock is only
        removed when it names this owner, unless O(force=true).
    type: str
  ttl:
    description:
      - Seconds after its acquisition at which a lock counts as expired and may
        be taken over by another owner. Must be at least 1.
      - Stored in the lock, so the TTL of the holder applies, not the TTL of
        the one who finds it.
    type: int
    default: 3600
  force:
    description:
      - With O(state=absent), remove the lock whoever holds it (for a rollout
        known to be dead).
      - With O(state=present), take over a live or corrupt lock of another owner (its
        holder is known to be gone); the takeover is reported like that of an
        expired lock.
    type: bool
    default: false
  info:
    description:
      - What the holder says about itself, stored in the lock and shown to whoever
        finds it taken. Known keys C(controller) (host the run is controlled from),
        C(controller_machine) (its machine id), C(controller_boot) (its boot id),
        C(controller_pidns) (its pid namespace), C(controller_pid) (its process there),
        C(controller_start) (that process's start time, clock ticks after boot),
        C(version), C(run), C(action) (such as V(rollback)); others are ignored.
      - The C(controller*) keys let a later run on the same controller prove this
        one gone (its process ended, or its pid now belongs to another process);
        RV(identity.info) has them.
    type: dict
  guard_timeout:
    description:
      - Seconds to wait for the guard (an C(flock) on C(.NAME.guard) beside the lock,
        only the module's user can open it) that makes each read-decide-write
        exclusive. Other calls hold it for milliseconds; after this the module
        fails naming the guard and the process holding it.
    type: float
    default: 10
    version_added: 1.1.0
attributes:
  check_mode:
    support: full
    description: Reports what would happen (acquire, refresh, takeover, release, or failure) and changes nothing.
  diff_mode:
    support: none
    description: No diff output.
notes:
  - The read-decide-write sequence holds an C(flock) on a guard file beside the
    lock (mode 0600, opened without following links), taken without blocking
    and retried for at most O(guard_timeout), so two takeovers of the same
    expired lock cannot both succeed on a local filesystem, and no other local
    user can stall a run by holding it.
"""

EXAMPLES = r"""
- name: Take the rollout lock on the first balancer
  grayrelease.canary.rollout_lock:
    path: /var/lib/grayrelease-canary/demoapp.lock
    owner: "rollout demoapp {{ canary_version }} ({{ lookup('env', 'USER') }})"
    ttl: 7200
  delegate_to: "{{ groups['balancers'][0] }}"
  run_once: true
  register: canary_lock

- name: Tell the operator when a stale lock was taken over
  ansible.builtin.debug:
    msg: "Took over the lock of {{ canary_lock.previous_owner }} ({{ canary_lock.previous_age }}s old)"
  when: canary_lock.took_over

- name: Release it
  grayrelease.canary.rollout_lock:
    path: /var/lib/grayrelease-canary/demoapp.lock
    state: absent
    owner: "rollout demoapp {{ canary_version }} ({{ lookup('env', 'USER') }})"
  delegate_to: "{{ groups['balancers'][0] }}"
  run_once: true

- name: Who this run is, for the lock's owner and info (on the controller)
  grayrelease.canary.rollout_lock:
    state: identity
  delegate_to: localhost
  run_once: true
  register: canary_run

- name: Take the lock as this run
  grayrelease.canary.rollout_lock:
    path: /var/lib/grayrelease-canary/demoapp.lock
    owner: "maintenance {{ canary_run.identity.owner }}"
    info: "{{ canary_run.identity.info | combine({'action': 'maintenance'}) }}"
  delegate_to: "{{ groups['balancers'][0] }}"
  run_once: true

- name: Break the lock of a rollout that is known to be dead
  grayrelease.canary.rollout_lock:
    path: /var/lib/grayrelease-canary/demoapp.lock
    state: absent
    force: true
"""

RETURN = r"""
lock:
  description:
    - With O(state=present), the lock as written (or as it would be written in
      check mode). With O(state=absent), the lock that was found (empty when
      there was none). On failure because the lock is held, the holder's lock.
  returned: always
  type: dict
  sample: {"owner": "rollout demoapp v2", "acquired": 1795000000, "ttl": 3600, "host": "lb1", "pid": 4242}
acquired:
  description: Whether the lock is now held by O(owner) (newly, refreshed, or taken over).
  returned: always
  type: bool
released:
  description: Whether a lock was removed.
  returned: always
  type: bool
took_over:
  description: Whether an expired (or corrupt, or with O(force=true) live) lock of another owner was taken over.
  returned: always
  type: bool
refreshed:
  description: Whether O(owner) already held the lock and it was renewed.
  returned: when O(state=present)
  type: bool
previous_owner:
  description:
    - Owner of the lock that was taken over or released (null for an
      unreadable lock file, or when there was none).
  returned: always
  type: str
previous_age:
  description: Age in seconds of the lock that was taken over, refreshed or released.
  returned: always
  type: int
previous_lock:
  description:
    - The full content of the lock that was taken over; for a corrupt lock, C(corrupt)
      (what is wrong with it) and C(content) (its start).
  returned: when RV(took_over) is true
  type: dict
held_by_other:
  description: With O(state=absent), true when the lock belongs to another owner and was left in place.
  returned: when the lock is held by another owner
  type: bool
owner:
  description: On failure, the owner of the live lock that blocks the acquisition.
  returned: failure because the lock is held
  type: str
age:
  description: On failure, the age in seconds of the live lock that blocks the acquisition.
  returned: failure because the lock is held
  type: int
expires_in:
  description: On failure, seconds until the blocking lock expires.
  returned: failure because the lock is held
  type: int
corrupt:
  description: On failure because of a corrupt lock, what is wrong with it.
  returned: failure because the lock is corrupt
  type: str
guard:
  description: On failure to get the guard in time, its path.
  returned: failure because the guard stayed held
  type: str
guard_holders:
  description: On failure to get the guard in time, the processes holding it, each as C(pid N) and its command line.
  returned: failure because the guard stayed held
  type: list
  elements: str
directory:
  description: On refusal of an unsafe directory, that directory.
  returned: failure because a directory is owned or writable by another user
  type: str
directory_owner:
  description: On refusal of an unsafe directory, its owner's uid.
  returned: failure because a directory is owned or writable by another user
  type: int
directory_mode:
  description: On refusal of an unsafe directory, its mode (octal).
  returned: failure because a directory is owned or writable by another user
  type: str
identity:
  description:
    - With O(state=identity), who this run is. C(owner), such as
      C(alice@ctl-1 pid 4242 run 7f3c09ab), and C(info), for O(info), with the
      controller, its machine id, boot id, pid namespace, the pid of the
      ansible-playbook process and its start time (keys left out when they cannot be read), and C(run).
  returned: when O(state=identity)
  type: dict
  contains:
    owner:
      description: The owner string for O(owner).
      type: str
    info:
      description: The controller's identity and the run id, for O(info).
      type: dict
  sample: {"owner": "alice@ctl-1 pid 4242 run 7f3c09ab", "info": {"controller": "ctl-1", "controller_pid": 4242,
           "controller_start": 123456, "controller_boot": "3d48d3e7-8b4a-4567-b7b0-af2add15ed4e",
           "controller_machine": "0c1f...", "controller_pidns": "pid:[4026531836]", "run": "7f3c09ab"}}
path:
  description: The lock path (links in its directory resolved).
  returned: always
  type: str
msg:
  description: What happened, in one line.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._lock import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            state=dict(type="str", choices=["present", "absent", "identity"], default="present"),
            owner=dict(type="str"),
            ttl=dict(type="int", default=3600),
            force=dict(type="bool", default=False),
            info=dict(type="dict"),
            guard_timeout=dict(type="float", default=10),
        ),
        required_if=[("state", "present", ["path", "owner"]), ("state", "absent", ["path"])],
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == "__main__":
    main()
