#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: container_release
short_description: Stage, switch, roll back and prune container-image releases of a Podman service
version_added: 1.1.0
description:
  - The container-image release kind, answering a rollout as M(grayrelease.canary.release) does
    (same states, same result keys). A release is a version name (the user's label, for example
    V(v2)) pinned to one image digest; the service is a systemd unit that runs
    C(podman run --rm --replace ... ${CANARY_IMAGE}) with C(EnvironmentFile=ROOT/current.env).
  - The host keeps C(ROOT/releases.json) (version -> digest, image id and install time; current,
    previous and the last rollback; mode 0600, replaced with C(rename(2))) and C(ROOT/current.env)
    (C(CANARY_IMAGE=sha256:<image id>), C(CANARY_VERSION=<version>); replaced with C(rename(2)) on every
    switch).
  - The controller pins the image once (the action plugin) and every host is addressed by
    C(sha256:...) only. For O(src), an image archive (C(podman save) output, docker-archive or
    oci-archive), the digest is the image id read from the archive's manifest (the sha256 of its
    config). For O(image) as C(repository:tag) it is the manifest digest the registry serves for the
    tag (registry HTTP API v2); O(image) as C(repository@sha256:...) and O(digest) are used as given.
  - O(state=staged) loads (C(podman load)) or pulls (C(podman pull repository@sha256:...)) the image
    unless the host has it, and records the version. A failed load or pull fails the task and changes
    nothing. O(state=current) stages if needed, rewrites C(ROOT/current.env), restarts O(service) and
    watches it (O(settle), O(ready_url)), and prunes to O(keep). The same version on the same image
    again changes nothing and restarts nothing.
  - O(state=rollback) switches back to O(version), by default to the previous release, whose image
    stays on the host (never pruned while previous), so no registry is needed.
    O(state=absent) forgets a staged release that is neither current nor previous and removes its
    image. O(state=pruned) only prunes to O(keep). O(state=info) only reads. O(state=pinned) is
    answered by the action plugin alone, without contacting the host (the digest it would pin).
  - Refuses (every state that changes something but V(absent) and V(pruned)) a host where
    C(podman-auto-update.timer) is enabled or active, and a unit or container that carries the label
    C(io.containers.autoupdate), since such units replace their own image behind the rollout.
author:
  - grayrelease.canary maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: Reports what would be loaded, pulled, switched, restarted and pruned; changes nothing.
  diff_mode:
    support: full
    description: Returns C(current), C(previous) and the recorded releases before and after.
options:
  root:
    description:
      - Absolute directory of the service's record, holding C(releases.json) and C(current.env).
    type: path
    required: true
  version:
    description:
      - Release name, the user's label of the image (for example V(v2)).
      - Letters, digits and C(. _ + -), not starting with a punctuation character.
      - Required with O(state=staged), O(state=current) and O(state=absent). With O(state=rollback)
        the release to return to (default the previous one).
    type: str
  state:
    description:
      - One of V(info) (the default, read-only), V(staged) (load or pull the image), V(current)
        (stage if needed and switch the unit to it), V(rollback), V(absent), V(pruned), or V(pinned)
        (controller only, see the description). Any other value fails naming the allowed ones.
    type: str
    default: info
  src:
    description:
      - An image archive (C(podman save --format docker-archive) or C(oci-archive)) holding one image.
      - A path on the controller, or an C(http://) / C(https://) URL the controller downloads once; copied
        to a host only when the host lacks the image. With O(remote_src=true) a path on the host (then
        O(digest) is required).
    type: str
  remote_src:
    description:
      - O(src) is already on the host.
    type: bool
    default: false
  copy_first:
    description:
      - Copy O(src) to the host before the module runs unless C(podman image exists) finds the image there
        (one shell command), instead of running the module once to learn whether it needs the archive.
    type: bool
    default: false
  image:
    description:
      - A registry reference, C(repository:tag) (resolved to its manifest digest on the controller) or
        C(repository@sha256:...). The host pulls C(repository@sha256:...). Mutually exclusive with O(src).
    type: str
  registry_scheme:
    description:
      - How the controller talks to the registry of O(image) to resolve a tag.
    type: str
    default: https
    choices: [http, https]
  digest:
    description:
      - The pinned image, C(sha256:<64 hex>). Set by the action plugin from O(src) or O(image); given by the
        user it must match them.
    type: str
  checksum:
    description:
      - Expected sha256 of the archive O(src), as C(sha256:<hex>) or bare hex; a mismatch fails before the
        host is touched.
    type: str
  validate_certs:
    description:
      - Verify TLS certificates of an C(https://) O(src) or registry.
    type: bool
    default: true
  require_current:
    description:
      - With O(state=staged), stage only on a host that has a current release recorded; others are left
        untouched.
    type: bool
    default: false
  service:
    description:
      - The systemd unit that runs the container, restarted after a switch.
    type: str
  container:
    description:
      - Name of the unit's container (its C(--name)), checked for the auto-update label. Default O(service)
        without C(.service).
    type: str
  podman:
    description:
      - The podman executable on the host.
    type: str
    default: podman
  restart:
    description:
      - Restart O(service) after a switch (V(false) leaves it to the caller).
    type: bool
    default: true
  daemon_reload:
    description:
      - Run C(systemctl daemon-reload) before that restart.
    type: bool
    default: false
  settle:
    description:
      - Seconds to watch O(service) after a restart or start; it must be C(ActiveState=active) then, and not
        restarting, else the task fails with its state and its last journal lines. V(0) does not watch.
    type: float
    default: 2
  ready_url:
    description:
      - A URL on the host itself that answers 2xx once the service serves; the watch ends as soon as the
        unit is active and the URL answers, and fails at once when the unit's process is gone.
    type: str
  keep:
    description:
      - Releases (and their images) to keep, at least 1, oldest removed first. Never removed are current,
        previous, O(version) and the release the switch came from. Required with O(state=pruned).
    type: int
notes:
  - Debian bookworm's Podman is 4.3, which has no quadlet (Podman 4.4); the unit is therefore a plain
    systemd unit running C(podman run), see the collection's C(docs/containers.md).
  - Run as root, every state but V(info) refuses a O(root) that a user other than root could write to.
seealso:
  - module: grayrelease.canary.release
  - module: grayrelease.canary.health_check
'''

EXAMPLES = r'''
- name: Pin a registry tag once for the whole play
  grayrelease.canary.container_release:
    root: /var/lib/grayrelease/demoapp
    image: registry.example.com/team/demoapp:v2
    state: pinned
  run_once: true
  register: pin

- name: Pre-pull v2 on every host (nothing switched or restarted)
  grayrelease.canary.container_release:
    root: /var/lib/grayrelease/demoapp
    version: v2
    image: "{{ pin.image }}"
    state: staged

- name: Load v2 from an image archive and switch to it, keep 3 releases
  grayrelease.canary.container_release:
    root: /var/lib/grayrelease/demoapp
    version: v2
    src: dist/demoapp-v2.oci.tar
    state: current
    service: demoapp.service
    ready_url: http://127.0.0.1:8080/healthz
    settle: 30
    keep: 3

- name: Back to the previous image (kept on the host, no registry needed)
  grayrelease.canary.container_release:
    root: /var/lib/grayrelease/demoapp
    state: rollback
    service: demoapp.service
    ready_url: http://127.0.0.1:8080/healthz
'''

RETURN = r'''
python:
  description: The version of the Python that ran the module on the host (the rollout's pre-flight refuses one below 3.9).
  returned: success
  type: str
  sample: 3.11.2
current:
  description: Release now current, C('') when none. In check mode the value it would have.
  returned: always
  type: str
  sample: v2
previous:
  description: Release current before the last switch, C('') when none.
  returned: always
  type: str
  sample: v1
installed:
  description: Recorded releases, sorted.
  returned: always
  type: list
  elements: str
  sample: [v1, v2]
staged:
  description: O(version) is recorded and its image is on the host (V(false) without O(version)).
  returned: always
  type: bool
  sample: true
switched:
  description: The unit's image changed.
  returned: always
  type: bool
  sample: true
switched_from:
  description: Release current before the switch; C('') when nothing switched.
  returned: always
  type: str
  sample: v1
installed_now:
  description: O(version) was recorded (loaded or pulled) by this task.
  returned: always
  type: bool
  sample: true
pruned:
  description: Releases forgotten and their images removed.
  returned: always
  type: list
  elements: str
  sample: [v0]
prune_errors:
  description: Releases forgotten whose image podman could not remove, with its reason.
  returned: when an image removal failed
  type: dict
digest:
  description: The pinned digest of O(version), else of the current release.
  returned: always
  type: str
  sample: sha256:6812773efd03104c0926b5102c1d428b506ff042f4ab99792598aecb4d9c21d5
image_id:
  description: The local image id the unit runs for that release.
  returned: always
  type: str
  sample: sha256:6812773efd03104c0926b5102c1d428b506ff042f4ab99792598aecb4d9c21d5
images:
  description: Every recorded release with its image id.
  returned: always
  type: dict
  sample: {v1: "sha256:6812...", v2: "sha256:9a41..."}
image:
  description: With O(state=pinned), the reference the hosts pull (C(repository@sha256:...)), else C('').
  returned: when state is pinned
  type: str
service:
  description: State of O(service) at the end; empty without O(service).
  returned: always
  type: dict
  contains:
    active_state:
      description: systemd C(ActiveState).
      type: str
    sub_state:
      description: systemd C(SubState).
      type: str
  sample: {active_state: active, sub_state: running}
msg:
  description: What happened, one line.
  returned: always
  type: str
  sample: "loaded sha256:9a41... from demoapp-v2.tar; current v1 -> v2; restarted demoapp.service"
'''


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._container import apply
from ansible_collections.grayrelease.canary.plugins.module_utils._release import (
    RELEASE_OPTIONS,
    RELEASE_REQUIRED_IF,
    release_module,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            RELEASE_OPTIONS,
            image=dict(type='str'),
            registry_scheme=dict(type='str', default='https', choices=['http', 'https']),
            digest=dict(type='str'),
            container=dict(type='str'),
            podman=dict(type='str', default='podman'),
        ),
        required_if=RELEASE_REQUIRED_IF,
        mutually_exclusive=[('src', 'image')],
        supports_check_mode=True,
    )
    if module.params['state'] == 'pinned':
        module.fail_json(msg='state=pinned is answered by the action plugin on the controller; run the module '
                             'through it (grayrelease.canary.container_release as a task), not directly')
    release_module(module, apply)


if __name__ == '__main__':
    main()
