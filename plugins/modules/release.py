#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: release
short_description: Install, switch, roll back and prune release directories of a service
version_added: 1.0.0
description:
  - Manages the release layout of one service on a host in one task
    C(ROOT/releases/VERSION/) (one directory per release, each with a C(.grayrelease-release)
    marker), C(ROOT/current) and C(ROOT/previous) (symlinks into C(releases/)), C(ROOT/.staging/)
    (unpack area) and C(ROOT/.rollback.json) (written by a rollback, removed by the next switch).
  - O(state=staged) installs O(src) (a C(.tar.gz)) as C(ROOT/releases/VERSION). O(src) is opened
    once and copied into C(ROOT/.staging/VERSION) (leftovers of an interrupted install are removed
    first; only root can write there), hashed on the way; the checksum, the checks of the archive
    and the unpack all read that copy, so the tree unpacked is the one whose sum was checked. The
    archive is checked whole before anything is unpacked, including the space it needs (see
    O(min_free_mb)); a single top-level directory is stripped, the marker is written (version,
    artifact name, sha256, install time), and the directory is renamed into place in one step, so
    C(releases/VERSION) is never partially visible. A failed install leaves nothing behind. Does
    not touch C(current) or any service.
  - O(state=current) installs the release if needed, then switches C(current) to it atomically
    (C(previous) first gets the old target of C(current) verbatim; both links are replaced with
    C(rename(2)), so readers never see C(current) missing), forgets an earlier rollback, restarts
    O(service) when C(current) moved and prunes to O(keep) releases.
  - O(state=rollback) points C(current) back at O(version), or by default at the release in
    C(previous), and records the rollback in C(ROOT/.rollback.json). Running it again on a host
    it already rolled back changes nothing (it does not flip forward again). When nothing
    switched, O(service) is still started if it is not running.
  - O(state=absent) removes a release that is neither current nor previous (for example a
    pre-staged release a host never switched to). O(state=pruned) only prunes to O(keep).
    O(state=info) only reads.
  - O(src) is by default a path on the controller. It is copied to the host only when the
    release has to be installed, so a re-run on an installed release transfers nothing.
  - O(src) may also be an C(http://) or C(https://) URL. With O(remote_src=true) the host downloads
    it (only when the release has to be installed) next to the unpack area and checks O(checksum),
    which is then required, before unpacking; otherwise the controller downloads it once and
    treats the file as a controller path.
author:
  - grayrelease.canary maintainers (@grayrelease)
attributes:
  check_mode:
    support: full
    description: Reports what would be installed, switched, restarted and pruned; changes nothing.
  diff_mode:
    support: full
    description: Returns C(current), C(previous) and the installed releases before and after.
options:
  root:
    description:
      - Absolute base directory of the service, holding C(releases/), C(current) and C(previous).
    type: path
    required: true
  version:
    description:
      - Release name; it becomes the directory name C(releases/VERSION).
      - Letters, digits and C(. _ + -), not starting with a punctuation character.
      - Required with O(state=staged), O(state=current) and O(state=absent). With
        O(state=rollback) the release to return to (default the target of C(previous)).
    type: str
  state:
    description:
      - One of V(info) (the default, read-only), V(staged) (install the release), V(current)
        (install it if needed and switch C(current) to it), V(rollback) (switch C(current) back),
        V(absent) (remove a release that is neither current nor previous) or V(pruned) (remove
        old releases beyond O(keep)). Any other value fails naming the allowed ones.
      - The read-only V(info) is a state of this module, not a separate C(_info) module, so that a
        rollout reads and changes a host's releases with one module; the values are therefore
        checked by the module rather than listed as argument choices.
    type: str
    default: info
  src:
    description:
      - The release archive (C(.tar.gz), or any tar the Python C(tarfile) module reads).
      - A path on the controller (relative paths are relative to the directory
        C(ansible-playbook) runs in), copied to the host only when the release is not installed
        yet. With O(remote_src=true) a path on the host.
      - Or an C(http://) / C(https://) URL, downloaded by the controller, or by the host with
        O(remote_src=true). C(user:password@) in the URL (up to the last C(@) before the host) is
        sent as HTTP Basic authentication, only to the URL's origin; a redirect to another scheme,
        host or port (https to http included) is followed without it.
      - Each read of a download may stall 60 seconds, and the whole download, redirects included,
        may take 30 minutes; a slower or stalled download fails naming the URL and the limit.
      - Shown in messages and results with its credentials redacted (C(user:password@) becomes
        C(***@), the value of a query parameter whose name looks secret, such as C(token) or
        C(X-Amz-Signature), C(***)); Ansible masks them in the module's arguments too.
      - Needed only when the release is not installed yet.
    type: str
  remote_src:
    description:
      - O(src) is already on the host, or, for a URL, the host downloads it.
    type: bool
    default: false
  copy_first:
    description:
      - Copy O(src) from the controller to the host before the module runs, unless the release's
        install marker is on the host already (one shell test, no module run), instead of running
        the module once to learn whether the release needs it. One module run less per host when
        the caller expects the release to be missing (the rollout's pre-staging).
      - Ignored with O(remote_src=true) and in check mode.
    type: bool
    default: false
    version_added: 1.1.0
  require_current:
    description:
      - With O(state=staged), install only on a host that has a current release (C(ROOT/current) is a
        symlink, the release layout is in place). A host without one is left untouched and reported as
        it is. The rollout's pre-staging uses it, so a fleet it refuses as not adopted is not written to.
    type: bool
    default: false
    version_added: 1.1.0
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https://) O(src).
    type: bool
    default: true
    version_added: 1.0.0
  checksum:
    description:
      - Expected sha256 of O(src), as C(sha256:<hex>) or bare hex. Verified before unpacking; a
        mismatch fails naming both sums and changes nothing.
      - Required when the host downloads a URL (O(remote_src=true)).
    type: str
  verify_checksum:
    description:
      - When the release is already installed and its marker records another sha256 than the
        one of O(src) (the same version name built twice), fail instead of keeping the installed
        content. V(false) accepts the installed release.
    type: bool
    default: true
  owner:
    description:
      - Owner (name or uid) of the unpacked files. Default the user the module runs as; the
        owners recorded in the archive are never used.
    type: str
  group:
    description:
      - Group (name or gid) of the unpacked files. Default the group the module runs as.
    type: str
  service:
    description:
      - systemd unit of the service, restarted when C(current) switches.
    type: str
  restart:
    description:
      - Restart O(service) when C(current) switched (V(false) leaves it to the caller).
    type: bool
    default: true
  daemon_reload:
    description:
      - Run C(systemctl daemon-reload) before that restart.
    type: bool
    default: false
  settle:
    description:
      - Seconds to watch O(service) after a restart or start. It must be C(ActiveState=active)
        then, else the task fails with its state and its last 8 journal lines. V(0) does not watch.
    type: float
    default: 2
  ready_url:
    description:
      - A URL on the host itself (e.g. C(http://127.0.0.1:8080/healthz)) that answers 2xx once the
        service serves. With it the O(settle) watch polls the unit and this URL and ends as soon as
        the unit is active and the URL answers, and fails at once when the unit's process is gone
        (failed, inactive, auto-restart). Unset, the watch always lasts O(settle) seconds.
    type: str
  min_free_mb:
    description:
      - Free space (MiB) an install must leave on the filesystem of C(ROOT/.staging) (normally that
        of O(root)). Before the archive is copied there, and again before it is unpacked, its size,
        then its unpacked size (regular files in whole 4 KiB blocks, plus one block per member), is
        compared with the free space of that filesystem (what an unprivileged user may use); an
        install that would leave less than this fails naming both figures, and also one with more
        members than free inodes. Nothing is written then.
    type: int
    default: 64
    version_added: 1.1.0
  max_members:
    description:
      - Most members an archive may have. One with more fails while it is being read, before its
        member list takes the host's memory (about 0.5 KB per member).
    type: int
    default: 200000
    version_added: 1.1.0
  shared:
    description:
      - Paths relative to the release (C(logs), C(var/uploads)) that every release shares. Each is
        a symlink in the release to C(ROOT/shared/PATH), which is created as an empty directory
        (mode 0755, O(owner)/O(group)) when missing; what the archive had at that path is dropped.
      - The links are made in the unpack area before the release is renamed into C(releases/), so a
        new release appears with them, and in an installed release that lacks them before
        C(current) switches to it (O(state=current)) or when it is pre-staged (O(state=staged)).
        The release C(current) points at is never modified.
      - C(ROOT/shared) may be a symlink to another disk; below it directories are created without
        following symlinks, so a user who can write there cannot make the module create or chown
        anything elsewhere. A path that is absolute, leaves the release (C(..)) or overlaps another
        fails naming it, before anything changes.
    type: list
    elements: str
  keep:
    description:
      - Number of release directories to keep, at least 1. With O(state=current) pruning happens
        after the switch; oldest (by modification time, that is install time) first. Never removed
        are C(current), C(previous), O(version), and the release C(current) was switched from.
      - Required with O(state=pruned). Without it O(state=current) prunes nothing.
    type: int
notes:
  - The archive is never trusted. Members with absolute paths or C(..) components, symlinks or
    hardlinks that resolve outside the release directory (a symlink's target is followed through
    the archive's other symlinks, as the kernel would, so a chain of links that each look inside
    cannot lead out), members under a symlink, and device or fifo files are refused, naming the
    member, before anything is unpacked. Directories get
    mode 0755, regular files 0755 when the archive gave them any execute bit and 0644 otherwise;
    setuid, setgid and sticky bits are never kept.
  - A release directory without the marker (installed by other means) counts as installed when
    it is not empty. An empty C(releases/VERSION), or a file there, fails with what to do.
  - A restart runs C(systemctl reset-failed) first, so a unit that hit its start limit can start.
  - Run as root, every state but V(info) refuses a O(root) that a user other than root could write
    to (owned by another user, or group- or world-writable without the sticky bit), and so any of
    its parents, naming the directory, its owner and mode and the fix (such a user could plant
    symlinks where root writes). C(ROOT/releases) and C(ROOT/.staging) must be directories, not
    symlinks. Files the module writes (the marker, C(.rollback.json)) are created anew, never
    written through what was at their name. The O(owner) of the unpacked files may be any user.
seealso:
  - module: grayrelease.canary.health_check
  - module: grayrelease.canary.haproxy_server
'''

EXAMPLES = r'''
- name: Pre-stage v2 on every host (nothing switched or restarted)
  grayrelease.canary.release:
    root: /opt/demoapp
    version: v2
    src: dist/demoapp-v2.tar.gz
    checksum: "sha256:{{ lookup('ansible.builtin.file', 'dist/demoapp-v2.tar.gz.sha256') }}"
    state: staged

- name: Switch to v2, restart, keep 5 releases
  grayrelease.canary.release:
    root: /opt/demoapp
    version: v2
    src: dist/demoapp-v2.tar.gz
    state: current
    service: demoapp
    settle: 3
    keep: 5
  register: switch

- name: Each host downloads v3 itself and checks its sum before unpacking
  grayrelease.canary.release:
    root: /opt/demoapp
    version: v3
    src: https://artifacts.example.com/demoapp/demoapp-v3.tar.gz
    remote_src: true
    checksum: sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9
    state: staged

- name: Switch to v3; logs and uploads are the same directories in every release
  grayrelease.canary.release:
    root: /opt/demoapp
    version: v3
    src: dist/demoapp-v3.tar.gz
    state: current
    service: demoapp
    owner: demoapp
    shared: [logs, uploads]

- name: Back to the previous release
  grayrelease.canary.release:
    root: /opt/demoapp
    state: rollback
    service: demoapp

- name: Remove a pre-staged release the host never switched to
  grayrelease.canary.release:
    root: /opt/demoapp
    version: v2
    state: absent

- name: What runs here
  grayrelease.canary.release:
    root: /opt/demoapp
  register: info
'''

RETURN = r'''
python:
  description: The version of the Python that ran the module on the host (the rollout's pre-flight refuses one below 3.9).
  returned: success
  type: str
  sample: 3.11.2
current:
  description: Release C(current) points at (basename of its target), C('') when none. In check mode the value it would have.
  returned: always
  type: str
  sample: v2
previous:
  description: Release C(previous) points at, C('') when none.
  returned: always
  type: str
  sample: v1
installed:
  description: Names of the release directories, sorted.
  returned: always
  type: list
  elements: str
  sample: [v1, v2]
staged:
  description: C(releases/VERSION) exists and is complete (V(false) without O(version)).
  returned: always
  type: bool
  sample: true
switched:
  description: C(current) moved.
  returned: always
  type: bool
  sample: true
switched_from:
  description: Release C(current) pointed at before it moved; C('') when it did not move (or pointed nowhere).
  returned: always
  type: str
  sample: v1
installed_now:
  description: The release was installed by this task.
  returned: always
  type: bool
  sample: true
shared_linked:
  description: The O(shared) paths linked into the release by this task (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [logs, uploads]
pruned:
  description: Release directories removed.
  returned: always
  type: list
  elements: str
  sample: [v0]
service:
  description: State of O(service) at the end; empty without O(service).
  returned: always
  type: dict
  contains:
    active_state:
      description: systemd C(ActiveState).
      type: str
      sample: active
    sub_state:
      description: systemd C(SubState).
      type: str
      sample: running
  sample: {active_state: active, sub_state: running}
msg:
  description: What happened, one line.
  returned: always
  type: str
  sample: "installed v2 from demoapp-v2.tar.gz; current v1 -> v2; restarted demoapp"
'''


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._release import (
    RELEASE_OPTIONS,
    RELEASE_REQUIRED_IF,
    apply,
    release_module,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            RELEASE_OPTIONS,
            verify_checksum=dict(type='bool', default=True),
            owner=dict(type='str'),
            group=dict(type='str'),
            min_free_mb=dict(type='int', default=64),
            max_members=dict(type='int', default=200000),
            shared=dict(type='list', elements='str'),
        ),
        required_if=RELEASE_REQUIRED_IF,
        supports_check_mode=True,
    )
    release_module(module, apply)


if __name__ == '__main__':
    main()
