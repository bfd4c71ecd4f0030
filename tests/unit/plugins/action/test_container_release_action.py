# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container_release action plugin: the controller pins the image once (an
archive's image id, a digest as given), refuses a digest the archive does not
hold, answers state=pinned without the host, and copies the archive only when
the module asks for it."""
from __future__ import annotations

import hashlib
import os
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))

from test_container import docker_archive  # noqa: E402  pylint: disable=wrong-import-position

from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible.plugins.action import ActionBase  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.action import container_release  # noqa: E402


@pytest.fixture(autouse=True)
def no_base_run(monkeypatch):
    """ActionBase.run only reads the task's connection settings, which these tests do not have."""
    monkeypatch.setattr(ActionBase, 'run', lambda self, tmp=None, task_vars=None: {})


def plugin(args, answers=()):
    task = SimpleNamespace(args=args, async_val=0, check_mode=False, action='grayrelease.canary.container_release')
    action = container_release.ActionModule(task, SimpleNamespace(_shell=SimpleNamespace(tmpdir=None), become=None),
                                            SimpleNamespace(check_mode=False), None, None, None)
    action.module_calls = []
    action.copies = []
    replies = list(answers)

    def execute(module_name, module_args, task_vars):
        action.module_calls.append(dict(module_args))
        return replies.pop(0)

    def copy_up(local, args):
        action.copies.append(local)
        args.update(src='/remote/tmp/' + os.path.basename(local), remote_src=True)

    action._execute_module = execute
    action._copy_up = copy_up
    action._remove_tmp_path = lambda path: None
    return action


def test_pinned_answers_the_archives_image_id_and_checksum_without_the_host(tmp_path):
    path, digest = docker_archive(tmp_path / 'demoapp-v2.tar', 'v2')
    action = plugin({'state': 'pinned', 'src': path, 'root': '/srv'})
    result = action.run(task_vars={})
    assert result['digest'] == digest and not result['changed']
    assert result['checksum'] == hashlib.sha256(open(path, 'rb').read()).hexdigest()
    assert action.module_calls == []


def test_the_archive_is_copied_only_when_the_module_asks_for_it(tmp_path):
    path, digest = docker_archive(tmp_path / 'demoapp-v2.tar', 'v2')
    action = plugin({'state': 'staged', 'src': path, 'root': '/srv', 'version': 'v2'},
                    answers=[{'failed': True, 'needs_src': True, 'msg': 'copy first'}, {'changed': True}])
    result = action.run(task_vars={})
    assert result['changed'] and 'needs_src' not in result
    first, second = action.module_calls
    assert first['digest'] == second['digest'] == digest and first['src'] == path
    assert second['src'] == '/remote/tmp/demoapp-v2.tar' and second['remote_src'] is True
    assert action.copies == [path]
    present = plugin({'state': 'current', 'src': path, 'root': '/srv', 'version': 'v2'}, answers=[{'changed': False}])
    present.run(task_vars={})
    assert present.copies == [] and len(present.module_calls) == 1


def test_a_digest_the_archive_does_not_hold_and_a_bad_checksum_fail_before_the_host(tmp_path):
    path, _digest = docker_archive(tmp_path / 'demoapp-v2.tar', 'v2')
    action = plugin({'state': 'staged', 'src': path, 'root': '/srv', 'version': 'v2', 'digest': 'sha256:' + 'a' * 64})
    with pytest.raises(AnsibleActionFail, match='holds image sha256:.*, but digest is sha256:a'):
        action.run(task_vars={})
    action = plugin({'state': 'staged', 'src': path, 'root': '/srv', 'version': 'v2', 'checksum': 'b' * 64})
    with pytest.raises(AnsibleActionFail, match='checksum mismatch'):
        action.run(task_vars={})
    assert action.module_calls == []


def test_an_image_with_a_digest_is_used_as_is_and_remote_src_needs_a_digest():
    digest = 'sha256:' + 'c' * 64
    action = plugin({'state': 'pinned', 'image': 'reg.example:5000/team/app:v2@' + digest, 'root': '/srv'})
    result = action.run(task_vars={})
    assert (result['image'], result['digest']) == ('reg.example:5000/team/app@' + digest, digest)
    action = plugin({'state': 'staged', 'src': '/on/host.tar', 'remote_src': True, 'root': '/srv', 'version': 'v2'})
    with pytest.raises(AnsibleActionFail, match='digest is required with remote_src=true'):
        action.run(task_vars={})
