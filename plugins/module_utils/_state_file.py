# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a rollout's engine state lives between two coordinator calls: a file on the controller.

Private to grayrelease.canary; controller side only (the rollout_state
action plugin writes and reads it, the rollout_progress callback reads it).

The state is the coordinator's working memory: 16 KB for 6 hosts, about
0.9 MB for 1,000. Returned as a fact it reached every host of the play (a
skipped task cost 25% more at 1,000 hosts) and every coordinator job event
of AWX (which drops results over 700,000 bytes). So the coordinator keeps
it in one file per run and returns only a reference, REF_FACT: {path, run};
the run id is random and must match the file's on every read, so a file of
another run at the same path is never taken for this one.

Location: STATE_DIR_NAME in tempfile.gettempdir() (TMPDIR, else /tmp), one
directory per user, mode 0700 (the state holds the run's settings), files
0600. The controller's temporary directory because the state is needed for
one playbook run only, by processes of that run on the controller (the
action plugin in a worker, the callback in ansible-playbook itself: same
machine, same environment); it is local and always writable, unlike
canary_report_dir, which is meant to be shared and read by people, and in
AWX's execution environment it goes away with the job's container.

Clean-up: each run's start removes the files of earlier runs untouched for
STALE_SECONDS (a live run rewrites its file after every coordinator call),
except a file whose run's controller process is provably still running; a
stale temporary file of an interrupted write goes as well. The files of the
last day stay, for a look after a run (-vvv prints the path).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
import uuid

from ansible_collections.grayrelease.canary.plugins.module_utils._lock import controller_identity

REF_FACT = 'grayrelease_rollout_state_file'
STATE_DIR_NAME = 'grayrelease-canary-state-%d'
FORMAT = 1
STALE_SECONDS = 24 * 3600
NAME_RE = re.compile(r'(rollout-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{32}\.json|\.rollout-.*\.tmp)\Z')


class StateFileError(Exception):
    """The state file cannot be made, written or read; the message names the path."""


def state_dir(base=None):
    """This user's private directory for state files (made 0700 if missing), or StateFileError.

    In a shared /tmp another user could have made the directory first, or
    put a link there: only a real directory owned by this user is used.
    """
    uid = os.getuid()
    path = os.path.join(base or tempfile.gettempdir(), STATE_DIR_NAME % uid)
    try:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise StateFileError('the rollout state directory %s is not a directory of this user (uid %d); '
                                 'remove it or set TMPDIR to another directory' % (path, uid))
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise StateFileError('cannot make the rollout state directory %s: %s' % (path, exc)) from exc
    return path


def new_ref(directory, now=None):
    """The reference of a new run's state file: {path, run}."""
    run = uuid.uuid4().hex
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() if now is None else now))
    return {'path': os.path.join(directory, 'rollout-%s-%s.json' % (stamp, run)), 'run': run}


def identity_of(lock_info):
    """Which controller process the run is (from the state's lock_info), for the clean-up."""
    lock_info = lock_info if isinstance(lock_info, dict) else {}
    return dict((k, v) for k, v in lock_info.items() if k.startswith('controller'))


def write(ref, state, identity=None):
    """The state written whole: a 0600 temporary file in the same directory,
    fsync'ed, then renamed over ref['path'] (a reader sees the old file or
    the new one, never half of one); StateFileError names the path."""
    path = ref['path']
    directory = os.path.dirname(path)
    doc = {'format': FORMAT, 'run': ref['run'], 'identity': identity or {}, 'state': state}
    try:
        # mkstemp: O_EXCL, mode 0600, a random name (a planted link is never followed).
        fd, tmp = tempfile.mkstemp(prefix='.rollout-', suffix='.tmp', dir=directory)
    except OSError as exc:
        raise StateFileError('cannot write the rollout state file %s: %s' % (path, exc)) from exc
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump(doc, handle, separators=(',', ':'))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, (OSError, TypeError, ValueError)):
            raise StateFileError('cannot write the rollout state file %s: %s' % (path, exc)) from exc
        raise
    return path


def read_doc(ref):
    """The whole document of a run's state file ({format, run, identity, state}), checked
    against the reference; StateFileError, naming the path, otherwise."""
    if not isinstance(ref, dict) or not ref.get('path') or not ref.get('run'):
        raise StateFileError('no rollout state (no %s fact): op=start must run first' % REF_FACT)
    path = ref['path']
    try:
        with open(path, encoding='utf-8') as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise StateFileError('the rollout state file %s is missing (removed while the run was going on?)'
                             % path) from None
    except (OSError, ValueError) as exc:
        raise StateFileError('cannot read the rollout state file %s: %s' % (path, exc)) from exc
    if not isinstance(doc, dict) or doc.get('run') != ref['run']:
        raise StateFileError('the rollout state file %s is not this run\'s (run %r in the file, %r expected)'
                             % (path, doc.get('run') if isinstance(doc, dict) else None, ref['run']))
    if not isinstance(doc.get('state'), dict) or 'act' not in doc['state']:
        raise StateFileError('the rollout state file %s holds no rollout state' % path)
    return doc


def read(ref):
    """The state of the run `ref` names; StateFileError otherwise."""
    return read_doc(ref)['state']


def _alive(path):
    """Is the run of this state file provably still running (its controller process, same start)?"""
    try:
        with open(path, encoding='utf-8') as handle:
            identity = json.load(handle).get('identity') or {}
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(identity, dict) or not identity.get('controller_pid') or not identity.get('controller_start'):
        return False
    return controller_identity(identity['controller_pid']) == identity


def prune(directory, now=None, max_age=STALE_SECONDS, keep=None):
    """Remove the state files (and interrupted writes' temporary files) of earlier runs untouched for
    max_age seconds, unless their run is provably alive. Never `keep`; errors are ignored. Returns
    the names removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in sorted(names):
        path = os.path.join(directory, name)
        if not NAME_RE.match(name) or path == keep:
            continue
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < max_age:
                continue
            if name.endswith('.json') and _alive(path):
                continue
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue
    return removed
