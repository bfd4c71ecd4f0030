#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the action plugin of the same name does the work
# (plugins/action/rollout_release.py), by running the driver's or kind's own module.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_release
short_description: Internal to the rollout role - stage, switch or roll back a release of the kind it uses
version_added: 1.1.0
description:
  - Internal to the C(grayrelease.canary.rollout) role, which installs every
    release with it whatever its kind. Playbooks should call the kind's own
    module, M(grayrelease.canary.release) (a tarball unpacked under
    C(releases/)) or M(grayrelease.canary.container_release) (a container
    image run by Podman under systemd).
  - O(release) names the kind and carries its options; every other option
    goes unchanged to the kind's own action plugin and module, which runs as
    if the task had named it, and whose return values this returns.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: The kind's module reports what it would do and changes nothing.
  diff_mode:
    support: full
    description: The kind's module reports the current release before and after.
options:
  release:
    description:
      - C(kind) (V(tarball) or V(container)) and that kind's options
        (container C(image), C(digest), C(podman)).
      - An unknown kind, or an option the kind does not take, fails the task naming it.
    type: dict
    required: true
notes:
  - Any other option is passed to the kind's module as is.
seealso:
  - module: grayrelease.canary.release
  - module: grayrelease.canary.container_release
"""

EXAMPLES = r"""
- name: Make 1.4.2 current, a container image pinned by digest
  grayrelease.canary.rollout_release:
    release:
      kind: container
      image: registry.example.com/app@sha256:4f3c5ab2e9d1c1a0f2c0e2a7b1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1
    root: /opt/app
    version: 1.4.2
    service: app
    state: current
"""

RETURN = r"""
current:
  description: The version current after the task, in the shape every release kind returns.
  returned: success
  type: str
  sample: 1.4.2
previous:
  description: The version that was current before.
  returned: success
  type: str
  sample: 1.4.1
"""
