# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for grayrelease.canary.release.

``src`` is a path on the controller unless ``remote_src`` is true. The
artifact only has to reach the host when its release is not installed yet,
which is the exception (re-runs, the switch after a pre-stage, rollbacks), so
the plugin does not copy it up front:

1. it resolves ``src`` (relative to the directory ansible-playbook runs in),
   computes its sha256 here and checks it against ``checksum`` (a mismatch
   fails before the host is touched);
2. it runs the module with that sha256 as ``checksum`` and the controller
   path as ``src``; the module checks everything and, when the release is
   installed, does its work without the file;
3. only when the module answers ``needs_src`` (it would have to unpack) the
   plugin copies the file into a remote temporary directory (keeping its
   name, which the install marker records) and runs the module again with
   ``remote_src: true``; the temporary directory is removed afterwards.

With ``copy_first`` (the caller expects the release to be missing, e.g. the
rollout's pre-staging) the plugin asks the host with one shell command (no
module run) whether the release carries its install marker (and, with
``require_current``, whether there is a current release at all) and, unless
the module will not need the file, copies it before the module runs: the
module then runs once.

An http(s) URL as ``src`` without ``remote_src`` is downloaded here first,
once, into a private temporary directory (removed at the end), and then
handled like a controller path. With ``remote_src`` the module downloads it on
the host.
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

from ansible_collections.grayrelease.canary.plugins.module_utils._release import MARKER, Host
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import (
    ReleaseError,
    checksum_mismatch_msg,
    download,
    file_sha256,
    is_url,
    parse_checksum,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact_url

MODULE = 'grayrelease.canary.release'
# States that may unpack src; the others never need it.
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
        src = args.get('src')
        remote_src = boolean(args.get('remote_src', False), strict=False)
        local = None
        fetched = None
        try:
            if src and not remote_src and args.get('state', 'info') in INSTALLING:
                if is_url(to_text(src)):
                    fetched = tempfile.mkdtemp(prefix='grayrelease-canary-')
                    src = self._fetch(to_text(src), fetched, args.get('checksum'),
                                      boolean(args.get('validate_certs', True), strict=False))
                local = self._resolve(to_text(src), args.get('checksum'))
                args['src'], args['checksum'] = local
                local = local[0]
            copy_first = boolean(args.pop('copy_first', False), strict=False)
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

    def _wants_src(self, args):
        """Will the module need src? One shell test on the host, no module run.

        No when the release carries its install marker already, or when
        require_current is set and the host has no current release (the
        module then leaves it untouched). A root the module would expand
        (~, $VAR) is not guessed at here: the answer is then yes, and the
        copy is merely wasted if the release is there.
        """
        root, version = args.get('root'), args.get('version')
        if not root or not version or root.startswith('~') or '$' in root:
            return True
        host = Host(root)
        marker = shlex.quote(os.path.join(host.release(version), MARKER))
        bare = ''
        if boolean(args.get('require_current', False), strict=False):
            bare = 'elif ! test -L %s; then echo bare; ' % shlex.quote(host.current)
        command = 'if test -f %s; then echo installed; %selse echo wanted; fi' % (marker, bare)
        result = self._low_level_execute_command(command, sudoable=True)
        # Anything unexpected (a shell that failed): copy, the safe side.
        return result.get('rc') != 0 or result.get('stdout', '').strip() not in ('installed', 'bare')

    def _copy_up(self, local, args):
        """Copy the controller's file into a remote temporary directory; args then name it on the host."""
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, os.path.basename(local))
        self._transfer_file(local, remote)
        self._fixup_perms2((tmpdir, remote))
        args.update(src=remote, remote_src=True)

    @staticmethod
    def _fetch(url, directory, checksum, validate_certs):
        """Download url into directory (keeping its file name, which the marker records)."""
        name = os.path.basename(url.split('?', 1)[0].split('#', 1)[0].rstrip('/')) or 'artifact'
        path = os.path.join(directory, name)
        try:
            expected = parse_checksum(checksum) if checksum else None
            download(url, path, expected, validate_certs=validate_certs)
        except ReleaseError as exc:
            raise AnsibleActionFail(exc.msg, result=dict(exc.result, src=redact_url(url)))
        return path

    @staticmethod
    def _resolve(src, checksum):
        """(absolute controller path, its sha256); fails on a missing file or a checksum mismatch."""
        path = os.path.abspath(os.path.expanduser(src))
        if not os.path.isfile(path):
            raise AnsibleActionFail('src %s (%s) does not exist on the controller or is not a regular file'
                                    % (src, path))
        digest = file_sha256(path)
        if checksum:
            try:
                expected = parse_checksum(checksum)
            except ReleaseError as exc:
                raise AnsibleActionFail(exc.msg)
            if expected != digest:
                raise AnsibleActionFail(checksum_mismatch_msg(src, expected, digest),
                                        result={'expected_sha256': expected, 'sha256': digest})
        return path, digest
