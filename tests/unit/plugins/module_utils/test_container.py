# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of grayrelease.canary.container_release on temporary roots, real image archives,
a fake podman and systemd, and a fake registry on loopback."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.grayrelease.canary.plugins.module_utils._container import (
    ContainerError, apply, archive_digest, parse_digest, parse_reference, repository_name, resolve_registry_digest)

NOW = 1_767_225_600.0


def sha(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def docker_archive(path, version):
    """A docker-archive as `podman save` writes it: manifest.json naming <config hex>.json and a layer."""
    config = json.dumps({'config': {'Cmd': ['/app.py'], 'Labels': {'v': version}}}).encode()
    hexid = hashlib.sha256(config).hexdigest()
    with tarfile.open(str(path), 'w') as tar:
        _add(tar, hexid + '.json', config)
        _add(tar, 'layer.tar', b'layer of ' + version.encode())
        _add(tar, 'manifest.json', json.dumps([{'Config': hexid + '.json', 'RepoTags': ['localhost/demoapp:' + version],
                                               'Layers': ['layer.tar']}]).encode())
    return str(path), 'sha256:' + hexid


def oci_archive(path, version):
    config = json.dumps({'config': {'Labels': {'v': version}}}).encode()
    manifest = json.dumps({'schemaVersion': 2, 'config': {'digest': sha(config), 'size': len(config)},
                           'layers': []}).encode()
    with tarfile.open(str(path), 'w') as tar:
        _add(tar, 'oci-layout', b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, 'blobs/sha256/' + sha(config)[7:], config)
        _add(tar, 'blobs/sha256/' + sha(manifest)[7:], manifest)
        _add(tar, 'index.json', json.dumps({'schemaVersion': 2, 'manifests': [
            {'digest': sha(manifest), 'mediaType': 'application/vnd.oci.image.manifest.v1+json'}]}).encode())
    return str(path), sha(config)


class FakeHost(object):
    """podman + systemctl as the module calls them: images by id, one unit, labels, a timer."""

    def __init__(self):
        self.images = {}            # image id -> set of refs it answers to
        self.archives = {}          # path -> image id a load gives
        self.registry = {}          # repo@digest -> image id a pull gives
        self.calls = []
        self.unit = {'ActiveState': 'active', 'SubState': 'running'}
        self.after_restart = {'ActiveState': 'active', 'SubState': 'running'}
        self.unit_text = '[Service]\nExecStart=/usr/bin/podman run --name demoapp ${CANARY_IMAGE}\n'
        self.container_labels = {}
        self.timer = ('disabled', 'inactive')
        self.in_use = set()

    def find(self, ref):
        for image_id, refs in self.images.items():
            if ref == image_id or ref in refs:
                return image_id
        return None

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == 'podman':
            return self.podman(argv[1:])
        if argv[0] == 'systemctl':
            return self.systemctl(argv[1:])
        if argv[0] == 'journalctl':
            return 0, 'Traceback: crash on start\n', ''
        raise AssertionError(argv)

    def podman(self, args):
        if args[:2] == ['image', 'inspect']:
            found = self.find(args[-1])
            return (0, found[7:] + '\n', '') if found else (125, '', 'no such image')
        if args[0] == 'load':
            path = args[-1]
            if path not in self.archives:
                return 125, '', 'payload does not match any of the supported image formats'
            self.images.setdefault(self.archives[path], set())
            return 0, 'Loaded image: %s\n' % self.archives[path], ''
        if args[0] == 'pull':
            if args[-1] not in self.registry:
                return 125, '', 'initializing source docker://%s: pinging container registry: connection refused' % args[-1]
            self.images.setdefault(self.registry[args[-1]], set()).add(args[-1])
            return 0, self.registry[args[-1]] + '\n', ''
        if args[0] == 'rmi':
            if args[1] in self.in_use:
                return 2, '', 'image used by container demoapp'
            del self.images[args[1]]
            return 0, '', ''
        if args[:2] == ['container', 'inspect']:
            return 0, json.dumps(self.container_labels) + '\n', ''
        raise AssertionError(args)

    def systemctl(self, args):
        if args[0] == 'show':
            return 0, 'ActiveState=%(ActiveState)s\nSubState=%(SubState)s\n' % self.unit, ''
        if args[0] == 'is-enabled':
            return (0 if self.timer[0] == 'enabled' else 1), self.timer[0] + '\n', ''
        if args[0] == 'is-active':
            return (0 if self.timer[1] == 'active' else 3), self.timer[1] + '\n', ''
        if args[0] == 'cat':
            return 0, self.unit_text, ''
        if args[0] in ('restart', 'start'):
            self.unit = dict(self.after_restart)
            return 0, '', ''
        if args[0] in ('reset-failed', 'daemon-reload'):
            return 0, '', ''
        raise AssertionError(args)

    def commands(self, word):
        return [c for c in self.calls if word in c]


class Clock(object):
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def host(tmp_path):
    fake = FakeHost()
    fake.root = str(tmp_path / 'state')
    fake.dist = tmp_path
    return fake


def call(host, check=False, **params):
    params.setdefault('root', host.root)
    params.setdefault('service', 'demoapp.service')
    params.setdefault('settle', 0)
    clock = Clock()
    return apply(params, check_mode=check, run=host, clock=clock, sleep=clock.sleep)


def archive(host, version):
    path, digest = docker_archive(host.dist / ('demoapp-%s.tar' % version), version)
    host.archives[path] = digest
    return path, digest


def staged(host, version):
    path, digest = archive(host, version)
    return call(host, version=version, state='staged', src=path, remote_src=True, digest=digest), digest


def env_image(host):
    with open(os.path.join(host.root, 'current.env')) as handle:
        return dict(line.split('=', 1) for line in handle.read().split('\n') if '=' in line)['CANARY_IMAGE']


# ------------------------------------------------------------------ pinning

def test_the_digest_of_a_docker_archive_is_the_sha256_of_its_config(tmp_path):
    path, digest = docker_archive(tmp_path / 'a.tar', 'v1')
    assert archive_digest(path) == digest


def test_the_digest_of_an_oci_archive_is_its_manifests_config_digest(tmp_path):
    path, digest = oci_archive(tmp_path / 'a.tar', 'v1')
    assert archive_digest(path) == digest


def test_an_archive_that_is_no_image_is_refused_naming_it(tmp_path):
    path = tmp_path / 'release.tar'
    with tarfile.open(str(path), 'w') as tar:
        _add(tar, 'app.py', b'print(1)')
    with pytest.raises(ContainerError, match='release.tar is neither a docker-archive'):
        archive_digest(str(path))


def test_an_archive_whose_oci_manifest_blob_was_tampered_with_is_refused(tmp_path):
    path, _digest = oci_archive(tmp_path / 'a.tar', 'v1')
    with tarfile.open(str(path)) as tar:
        index = json.loads(tar.extractfile('index.json').read())
    index['manifests'][0]['digest'] = 'sha256:' + 'f' * 64
    bad = tmp_path / 'bad.tar'
    with tarfile.open(str(path)) as src, tarfile.open(str(bad), 'w') as dst:
        for member in src.getmembers():
            if member.name != 'index.json':
                dst.addfile(member, src.extractfile(member))
        _add(dst, 'index.json', json.dumps(index).encode())
    with pytest.raises(ContainerError, match='is missing'):
        archive_digest(str(bad))


def test_references_are_parsed_and_bad_ones_named():
    assert parse_reference('demoapp') == ('registry-1.docker.io', 'library/demoapp', 'latest', None)
    assert parse_reference('localhost:5000/team/app:v2') == ('localhost:5000', 'team/app', 'v2', None)
    assert repository_name('localhost:5000/team/app:v2') == 'localhost:5000/team/app'
    assert parse_digest('A' * 64) == 'sha256:' + 'a' * 64
    with pytest.raises(ContainerError, match="image 'Bad Name' is not an image reference"):
        parse_reference('Bad Name')
    with pytest.raises(ContainerError, match="digest must be an image digest .* got 'sha256:12'"):
        parse_digest('sha256:12')


class Registry(object):
    """A registry on loopback: /v2/<repo>/manifests/<tag>, optionally behind an anonymous bearer token."""

    def __init__(self, manifests, token=None, lie=False):
        outer = self
        self.manifests, self.token, self.lie, self.requests = manifests, token, lie, []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                port = self.server.server_address[1]
                if self.path.startswith('/token'):
                    return self._send(200, json.dumps({'token': outer.token}).encode(), {})
                if outer.token and self.headers.get('Authorization') != 'Bearer ' + outer.token:
                    return self._send(401, b'{}', {'WWW-Authenticate': 'Bearer realm="http://127.0.0.1:%d/token",'
                                                   'service="fake",scope="repository:team/app:pull"' % port})
                body = outer.manifests.get(self.path)
                if body is None:
                    return self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', {})
                digest = sha(b'other' if outer.lie else body)
                return self._send(200, body, {'Docker-Content-Digest': digest,
                                              'Content-Type': 'application/vnd.oci.image.manifest.v1+json'})

            def _send(self, code, body, headers):
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


MANIFEST = b'{"schemaVersion": 2, "config": {"digest": "sha256:' + b'c' * 64 + b'"}}'


@pytest.mark.parametrize('token', [None, 's3cret'])
def test_a_tag_resolves_to_the_manifest_digest_the_registry_serves(token):
    registry = Registry({'/v2/team/app/manifests/v2': MANIFEST}, token=token)
    try:
        ref, digest = resolve_registry_digest('127.0.0.1:%d/team/app:v2' % registry.port, scheme='http')
    finally:
        registry.close()
    assert digest == sha(MANIFEST)
    assert ref == '127.0.0.1:%d/team/app@%s' % (registry.port, digest)
    assert 'manifest.v2+json' in registry.requests[-1][1]['Accept']
    if token:
        assert registry.requests[-1][1]['Authorization'] == 'Bearer s3cret'


def test_a_missing_tag_and_a_lying_registry_fail_naming_the_image():
    registry = Registry({'/v2/team/app/manifests/v2': MANIFEST}, lie=True)
    try:
        image = '127.0.0.1:%d/team/app' % registry.port
        with pytest.raises(ContainerError, match='cannot resolve %s:v9: the registry answered 404' % image):
            resolve_registry_digest(image + ':v9', scheme='http')
        with pytest.raises(ContainerError, match='the registry says its digest is sha256:'):
            resolve_registry_digest(image + ':v2', scheme='http')
    finally:
        registry.close()


def test_no_registry_is_a_clear_failure_and_a_digest_needs_none():
    with pytest.raises(ContainerError, match='no answer from the registry at http://127.0.0.1:9/'):
        resolve_registry_digest('127.0.0.1:9/team/app:v2', scheme='http', timeout=2)
    digest = 'sha256:' + 'd' * 64
    assert resolve_registry_digest('127.0.0.1:9/team/app:v2@' + digest) == ('127.0.0.1:9/team/app@' + digest, digest)


# ------------------------------------------------------------------ stage

def test_staging_loads_the_archive_once_and_records_the_version(host):
    result, digest = staged(host, 'v1')
    assert result['changed'] and result['installed_now'] and result['staged']
    assert result['installed'] == ['v1'] and result['current'] == ''
    assert len(host.commands('load')) == 1
    record = json.load(open(os.path.join(host.root, 'releases.json')))
    assert record['releases']['v1']['image_id'] == digest
    assert oct(os.stat(os.path.join(host.root, 'releases.json')).st_mode & 0o777) == '0o600'
    again, _digest = staged(host, 'v1')
    assert not again['changed'] and not again['installed_now'] and len(host.commands('load')) == 1


def test_an_archive_on_the_controller_is_asked_for_only_when_the_host_lacks_the_image(host):
    path, digest = archive(host, 'v1')
    with pytest.raises(ContainerError, match='must be copied to the host first') as info:
        call(host, version='v1', state='staged', src=path, digest=digest)
    assert info.value.result == {'needs_src': True}
    host.images[digest] = set()
    result = call(host, version='v1', state='staged', src=path, digest=digest)
    assert result['staged'] and not host.commands('load')


def test_a_failed_load_fails_and_records_nothing(host):
    path, digest = docker_archive(host.dist / 'demoapp-v1.tar', 'v1')   # podman refuses it
    with pytest.raises(ContainerError, match='podman load -i .*demoapp-v1.tar failed .*supported image formats'):
        call(host, version='v1', state='staged', src=path, remote_src=True, digest=digest)
    assert not os.path.exists(os.path.join(host.root, 'releases.json'))


def test_an_archive_holding_another_image_than_the_pin_is_refused_before_loading(host):
    path, _digest = archive(host, 'v1')
    with pytest.raises(ContainerError, match='holds image sha256:.*, not the pinned sha256:' + 'e' * 64):
        call(host, version='v1', state='staged', src=path, remote_src=True, digest='sha256:' + 'e' * 64)
    assert not host.commands('load')


def test_a_wrong_checksum_is_refused_naming_both_sums(host):
    path, digest = archive(host, 'v1')
    with pytest.raises(ContainerError, match='checksum mismatch'):
        call(host, version='v1', state='staged', src=path, remote_src=True, digest=digest, checksum='0' * 64)


def test_a_pull_by_digest_and_a_failed_pull(host):
    digest = 'sha256:' + 'a' * 64
    host.registry['reg.example:5000/team/app@' + digest] = 'sha256:' + 'b' * 64
    result = call(host, version='v1', state='staged', image='reg.example:5000/team/app:v1@' + digest)
    assert result['staged'] and result['digest'] == digest and result['image_id'] == 'sha256:' + 'b' * 64
    assert host.commands('pull')[0][-1] == 'reg.example:5000/team/app@' + digest
    with pytest.raises(ContainerError, match=r'podman pull reg.example:5000/team/app@sha256:f+ failed .*connection '
                                             r'refused; the host needs the registry'):
        call(host, version='v2', state='staged', image='reg.example:5000/team/app@sha256:' + 'f' * 64)


def test_a_version_recorded_with_another_image_is_refused(host):
    staged(host, 'v1')
    path, digest = archive(host, 'v2')
    with pytest.raises(ContainerError, match='version v1 is recorded with image .* but this run pins ' + digest):
        call(host, version='v1', state='staged', src=path, remote_src=True, digest=digest)


def test_require_current_leaves_a_host_without_a_current_release_alone(host):
    path, digest = archive(host, 'v1')
    result = call(host, version='v1', state='staged', src=path, remote_src=True, digest=digest, require_current=True)
    assert not result['changed'] and not host.commands('load')


# ------------------------------------------------------------------ switch, rollback

def switched(host, version, **extra):
    path, digest = archive(host, version)
    return call(host, version=version, state='current', src=path, remote_src=True, digest=digest, **extra)


def test_switch_rewrites_the_env_file_restarts_and_a_rerun_is_a_no_op(host):
    first = switched(host, 'v1')
    assert first['switched'] and first['current'] == 'v1' and first['switched_from'] == ''
    second = switched(host, 'v2')
    assert second['switched'] and second['current'] == 'v2' and second['previous'] == 'v1'
    assert second['switched_from'] == 'v1' and env_image(host) == second['image_id']
    restarts = len(host.commands('restart'))
    again = switched(host, 'v2')
    assert not again['changed'] and not again['switched'] and len(host.commands('restart')) == restarts
    assert again['current'] == 'v2' and again['previous'] == 'v1'


def test_check_mode_changes_nothing(host):
    switched(host, 'v1')
    path, digest = archive(host, 'v2')
    calls = len(host.calls)
    result = call(host, check=True, version='v2', state='current', src=path, remote_src=True, digest=digest)
    assert result['changed'] and result['current'] == 'v2' and 'would switch current v1 -> v2' in result['msg']
    assert not [c for c in host.calls[calls:] if c[1] in ('load', 'restart', 'rmi')]
    assert call(host)['current'] == 'v1'
    assert env_image(host) != digest


def test_a_crashing_image_fails_the_watch_and_rollback_restores_the_previous_digest(host):
    one = switched(host, 'v1')
    host.after_restart = {'ActiveState': 'activating', 'SubState': 'auto-restart'}
    with pytest.raises(ContainerError, match='did not stay up after the restart .*crash on start') as info:
        switched(host, 'bad', settle=5, ready_url='http://127.0.0.1:9/healthz')
    assert info.value.result['current'] == 'bad' and info.value.result['switched_from'] == 'v1'
    host.after_restart = {'ActiveState': 'active', 'SubState': 'running'}
    back = call(host, state='rollback')
    assert back['switched'] and back['current'] == 'v1' and back['switched_from'] == 'bad'
    assert env_image(host) == one['image_id'] and not host.commands('pull')
    again = call(host, state='rollback')    # does not flip forward again
    assert not again['changed'] and again['current'] == 'v1'


def test_rollback_without_the_previous_image_is_refused_naming_it(host):
    switched(host, 'v1')
    two = switched(host, 'v2')
    del host.images[json.load(open(os.path.join(host.root, 'releases.json')))['releases']['v1']['image_id']]
    with pytest.raises(ContainerError, match='cannot roll back to v1: its image sha256:.* is no longer on the host'):
        call(host, state='rollback')
    assert env_image(host) == two['image_id']


def test_units_that_update_themselves_are_refused(host):
    path, digest = archive(host, 'v1')
    host.timer = ('enabled', 'active')
    with pytest.raises(ContainerError, match='podman-auto-update.timer is enabled .*systemctl disable --now'):
        call(host, version='v1', state='staged', src=path, remote_src=True, digest=digest)
    host.timer = ('disabled', 'inactive')
    host.unit_text += 'ExecStart=/usr/bin/podman run --label io.containers.autoupdate=registry x\n'
    with pytest.raises(ContainerError, match='unit demoapp.service sets the label io.containers.autoupdate'):
        call(host, version='v1', state='current', src=path, remote_src=True, digest=digest)
    host.unit_text = '[Service]\n'
    host.container_labels = {'io.containers.autoupdate': 'local'}
    with pytest.raises(ContainerError, match='container demoapp .* carries the label io.containers.autoupdate=local'):
        call(host, version='v1', state='current', src=path, remote_src=True, digest=digest)
    assert not host.commands('load')


# ------------------------------------------------------------------ absent, prune

def test_absent_removes_a_staged_release_but_never_current_or_previous(host):
    switched(host, 'v1')
    switched(host, 'v2')
    _result, digest = staged(host, 'v3')
    for version in ('v1', 'v2'):
        assert not call(host, version=version, state='absent')['changed']
    result = call(host, version='v3', state='absent')
    assert result['changed'] and result['installed'] == ['v1', 'v2'] and digest not in host.images


def test_prune_keeps_current_previous_and_the_newest(host):
    for number, version in enumerate(('v1', 'v2', 'v3', 'v4')):
        host_clock = NOW + number
        switched(host, version)
        record_path = os.path.join(host.root, 'releases.json')
        record = json.load(open(record_path))
        record['releases'][version]['installed_ts'] = host_clock
        with open(record_path, 'w') as handle:
            json.dump(record, handle)
    ids = json.load(open(os.path.join(host.root, 'releases.json')))['releases']
    host.in_use.add(ids['v4']['image_id'])
    result = call(host, state='pruned', keep=2)
    assert result['pruned'] == ['v1', 'v2'] and result['installed'] == ['v3', 'v4']
    assert ids['v1']['image_id'] not in host.images and ids['v3']['image_id'] in host.images
    assert not call(host, state='pruned', keep=2)['changed']


def test_bad_values_are_named(host):
    with pytest.raises(ContainerError, match="state must be one of .* got 'latest'"):
        call(host, state='latest')
    with pytest.raises(ContainerError, match="version '../x' is not a valid release name"):
        call(host, version='../x', state='staged')
    with pytest.raises(ContainerError, match="root must be an absolute path, got 'rel'"):
        call(host, root='rel')
    with pytest.raises(ContainerError, match='keep must be at least 1, got 0'):
        call(host, state='pruned', keep=0)
