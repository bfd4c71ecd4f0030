# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for grayrelease.canary.container_release.

The controller pins the image to one digest, so every host gets the same bytes:

- ``src`` (an image archive, a controller path or an http(s) URL downloaded
  here once, as grayrelease.canary.release does it): its sha256 is checked
  against ``checksum`` and the image id (the sha256 of the image's config) is
  read from the archive's manifest. That id is the digest.
- ``image`` as ``repository:tag``: the manifest digest the registry serves
  for the tag (registry HTTP API, one GET); ``image`` becomes
  ``repository@sha256:...``. With ``state=pinned`` the plugin only answers
  this pin and never contacts the host, so a play resolves a tag once
  (``run_once``) and hands the digest to every host.
- ``image`` as ``repository@sha256:...`` or a given ``digest``: used as is.

The archive reaches a host only when it lacks the image: the module answers
``needs_src`` and the plugin copies the file and runs it again, or, with
``copy_first``, one shell test (``podman image exists``) decides before the
module runs. Path resolution, download and checksum come from the release
action plugin.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.grayrelease.canary.plugins.action.release import ActionModule as ReleaseAction
from ansible_collections.grayrelease.canary.plugins.module_utils._container import (
    ContainerError,
    archive_digest,
    parse_digest,
    parse_reference,
    repository_name,
    resolve_registry_digest,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import is_url

MODULE = 'grayrelease.canary.container_release'
# States that may load or pull the image; the others never need it.
INSTALLING = ('staged', 'current')


class ActionModule(ActionBase):

    TRANSFERS_FILES = True
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = {}
        base = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self._task.args.copy()
        state = args.get('state', 'info')
        fetched = None
        local = None
        try:
            if state == 'pinned' or (state in INSTALLING and (args.get('src') or args.get('image'))):
                fetched, local = self.pin(args)
            if state == 'pinned':
                return merge_hash(base, {'changed': False, 'digest': args['digest'], 'image': args.get('image', ''),
                                         'checksum': args.get('checksum', ''),
                                         'msg': 'pinned %s' % args['digest']})
            copy_first = boolean(args.pop('copy_first', False), strict=False)
            for key in ('registry_scheme',):
                args.pop(key, None)
            if local and copy_first and not self._task.check_mode and self._wants_src(args):
                self._copy_up(local, args)
            result = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            if local and result.get('needs_src') and not self._task.check_mode:
                self._copy_up(local, args)
                result = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            result.pop('needs_src', None)
            return merge_hash(base, result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
            if fetched:
                shutil.rmtree(fetched, ignore_errors=True)

    def pin(self, args):
        """Set args' digest (and for a registry tag, image) from src or image; returns (download dir, local path)."""
        src, image = args.get('src'), args.get('image')
        remote_src = boolean(args.get('remote_src', False), strict=False)
        given = None
        try:
            if args.get('digest'):
                given = parse_digest(args['digest'])
            if src and image:
                raise ContainerError('give either src (an image archive) or image (a registry reference), not both')
            if src and remote_src:
                if not given:
                    raise ContainerError('digest is required with remote_src=true: the controller cannot read '
                                         'the archive %s on the host to pin it' % src)
                args['digest'] = given
                return None, None
            if src:
                fetched = None
                if is_url(to_text(src)):
                    fetched = tempfile.mkdtemp(prefix='grayrelease-canary-')
                    src = ReleaseAction._fetch(to_text(src), fetched, args.get('checksum'),
                                               boolean(args.get('validate_certs', True), strict=False))
                path, checksum = ReleaseAction._resolve(to_text(src), args.get('checksum'))
                digest = archive_digest(path)
                if given and given != digest:
                    raise ContainerError('src %s holds image %s, but digest is %s' % (args['src'], digest, given))
                args.update(src=path, checksum=checksum, digest=digest)
                return fetched, path
            if image:
                image = to_text(image)
                carried = parse_reference(image)[3]
                if given and carried and carried != given:
                    raise ContainerError('image %s carries another digest than digest %s' % (image, given))
                if given or carried:
                    digest = given or carried
                    ref = repository_name(image) + '@' + digest
                else:
                    ref, digest = resolve_registry_digest(
                        image, scheme=args.get('registry_scheme') or 'https',
                        validate_certs=boolean(args.get('validate_certs', True), strict=False))
                args.update(image=ref, digest=digest)
                return None, None
            if given:
                args['digest'] = given
                return None, None
            raise ContainerError('state=pinned needs src (an image archive), image or digest')
        except ContainerError as exc:
            raise AnsibleActionFail(exc.msg, result=exc.result)

    def _wants_src(self, args):
        """Will the module need the archive? One shell test on the host (podman image exists), no module run."""
        podman = args.get('podman') or 'podman'
        command = '%s image exists %s && echo present || echo wanted' % (
            shlex.quote(podman), shlex.quote(args['digest']))
        result = self._low_level_execute_command(command, sudoable=True)
        return result.get('rc') != 0 or result.get('stdout', '').strip() != 'present'

    def _copy_up(self, local, args):
        """Copy the controller's archive into a remote temporary directory; args then name it on the host."""
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, os.path.basename(local))
        self._transfer_file(local, remote)
        self._fixup_perms2((tmpdir, remote))
        args.update(src=remote, remote_src=True)
