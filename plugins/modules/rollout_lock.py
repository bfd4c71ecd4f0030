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
  - Keeps two rollouts of the same service from running at the same time with
    a small JSON lock file C({owner, acquired, ttl, host, pid}) on the host the
    module runs on (the rollout playbook uses the first balancer, never the
    controller, which may be an ephemeral execution environment).
  - O(state=present) acquires the lock. A live lock held by another owner fails
    with that owner and its age. A lock older than its own TTL is taken over and
    the takeover is reported (RV(took_over), RV(previous_owner), RV(previous_age)).
    Acquiring a lock you already hold refreshes it (new acquisition time).
  - O(state=absent) releases the lock only when O(owner) matches, unless
    O(force=true). A lock held by someone else is left in place with a warning.
  - The lock is created atomically (a private temporary file hard-linked to
    O(path)), so two rollouts racing for a free lock cannot both win, and a
    reader never sees a half-written lock. Missing parent directories are
    created with mode 0755.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
options:
  path:
    description:
      - Absolute path of the lock file.
    type: path
    required: true
  state:
    description:
      - V(present) acquires (or refreshes, or takes over an expired) lock,
        V(absent) releases it.
    type: str
    choices: [present, absent]
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
      - With O(state=present), take over a live lock of another owner (its
        holder is known to be gone); the takeover is reported like that of an
        expired lock.
    type: bool
    default: false
  info:
    description:
      - What the holder says about itself, stored in the lock and shown to whoever
        finds it taken. Known keys C(controller) (host the rollout runs from),
        C(controller_pid) (its process there), C(version), C(run); others are ignored.
    type: dict
attributes:
  check_mode:
    support: full
    description: Reports what would happen (acquire, refresh, takeover, release, or failure) and changes nothing.
  diff_mode:
    support: none
    description: No diff output.
notes:
  - The read-decide-write sequence holds an C(flock) on the lock's directory,
    so two takeovers of the same expired lock cannot both succeed on a local
    filesystem.
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
  description: Whether an expired lock of another owner was taken over.
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
  description: The full content of the expired lock that was taken over.
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
path:
  description: The lock path.
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
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            owner=dict(type="str"),
            ttl=dict(type="int", default=3600),
            force=dict(type="bool", default=False),
            info=dict(type="dict"),
        ),
        required_if=[("state", "present", ["owner"])],
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == "__main__":
    main()
