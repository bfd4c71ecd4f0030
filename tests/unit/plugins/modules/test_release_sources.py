# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Artifacts where users keep them: an http(s) URL downloaded by the host or the
controller, a file already on the host, always with the sha256 checked before
anything is unpacked. A loopback http.server stands in for the artifact store."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.grayrelease.canary.plugins.action import rollout_state as coordinator
from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine
from ansible_collections.grayrelease.canary.plugins.module_utils._release import apply
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import ReleaseError, download, file_sha256

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
WRONG = 'sha256:' + '0' * 64


def tarball(version):
    """A release archive with one top-level directory, as bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        for name, data in (('app.py', b'print("%s")\n' % version.encode()),
                           ('release.json', b'{"version": "%s"}\n' % version.encode())):
            info = tarfile.TarInfo('demoapp-%s/%s' % (version, name))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ArtifactStore(object):
    """Serves ``files`` (path -> bytes) on 127.0.0.1; records every request and its headers."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                store.requests.append((self.path, dict(self.headers)))
                body = store.files.get(self.path)
                if body is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store():
    data = {'/demoapp-v2.tar.gz': tarball('v2'), '/demoapp-v3.tar.gz': tarball('v3')}
    server = ArtifactStore(data)
    server.sums = dict((path, 'sha256:' + _sha(body)) for path, body in data.items())
    yield server
    server.close()


def _sha(body):
    return hashlib.sha256(body).hexdigest()


@pytest.fixture
def root(tmp_path):
    path = tmp_path / 'opt' / 'demoapp'
    path.mkdir(parents=True)
    return path


def stage(root, **params):
    params = dict(params, root=str(root), state=params.get('state', 'staged'), version=params.get('version', 'v2'))
    return apply(params, check_mode=params.pop('check', False), run=lambda argv: (0, '', ''), clock=lambda: 0.0,
                 sleep=lambda s: None)


def listing(path):
    return sorted(os.path.relpath(os.path.join(base, name), str(path))
                  for base, dirs, files in os.walk(str(path)) for name in dirs + files)


# ------------------------------------------------------------------ the host downloads

def test_host_downloads_checks_the_sum_and_installs(root, store):
    url = store.url + '/demoapp-v2.tar.gz'
    res = stage(root, src=url, remote_src=True, checksum=store.sums['/demoapp-v2.tar.gz'])
    assert res['installed_now'] and res['changed'] and res['staged']
    marker = json.loads((root / 'releases' / 'v2' / '.grayrelease-release').read_text())
    assert marker['artifact'] == 'demoapp-v2.tar.gz'
    assert 'sha256:' + marker['sha256'] == store.sums['/demoapp-v2.tar.gz']
    assert (root / 'releases' / 'v2' / 'app.py').read_text() == 'print("v2")\n'
    # the download went to the unpack area and is gone
    assert not (root / '.staging').exists()
    assert len(store.requests) == 1

    # Installed: the checksum is compared with the marker, nothing is downloaded.
    res = stage(root, src=url, remote_src=True, checksum=store.sums['/demoapp-v2.tar.gz'])
    assert not res['changed'] and len(store.requests) == 1
    with pytest.raises(ReleaseError, match='was installed from an artifact with sha256'):
        stage(root, src=store.url + '/demoapp-v3.tar.gz', remote_src=True, checksum=store.sums['/demoapp-v3.tar.gz'])
    assert len(store.requests) == 1


def test_host_download_with_the_wrong_sum_leaves_nothing(root, store):
    url = store.url + '/demoapp-v2.tar.gz'
    with pytest.raises(ReleaseError) as err:
        stage(root, src=url, remote_src=True, checksum=WRONG)
    assert '0' * 64 in err.value.msg and store.sums['/demoapp-v2.tar.gz'][7:] in err.value.msg
    assert url in err.value.msg
    assert listing(root) == []


def test_host_download_needs_a_checksum(root, store):
    with pytest.raises(ReleaseError, match=r'checksum is required when the host downloads src \(http://127'):
        stage(root, src=store.url + '/demoapp-v2.tar.gz', remote_src=True)
    assert store.requests == [] and listing(root) == []


def test_missing_url_and_refused_connection_name_the_url(root, store, tmp_path):
    with pytest.raises(ReleaseError, match=r'cannot download http://127\.0\.0\.1:\d+/nope\.tar\.gz: HTTP 404'):
        stage(root, src=store.url + '/nope.tar.gz', remote_src=True, checksum=WRONG)
    assert listing(root) == []
    closed = ArtifactStore({})
    closed.close()
    with pytest.raises(ReleaseError, match=r'cannot download %s/x\.tar\.gz: .*refused' % closed.url):
        download(closed.url + '/x.tar.gz', str(tmp_path / 'x.tar.gz'))
    assert not (tmp_path / 'x.tar.gz').exists()


def test_credentials_are_sent_as_basic_auth_and_never_shown(store, tmp_path):
    port = store.url.rsplit(':', 1)[1]
    url = 'http://deploy:s3cr%40t@127.0.0.1:' + port + '/demoapp-v2.tar.gz'
    digest = download(url, str(tmp_path / 'a.tar.gz'))
    assert digest == store.sums['/demoapp-v2.tar.gz'][7:]
    headers = store.requests[-1][1]
    assert headers['Authorization'] == 'Basic ' + base64.b64encode(b'deploy:s3cr@t').decode()
    with pytest.raises(ReleaseError) as err:
        download(url.replace('v2', 'v9'), str(tmp_path / 'b.tar.gz'))
    assert 's3cr' not in err.value.msg and '***@127.0.0.1' in err.value.msg


def test_check_mode_downloads_nothing(root, store):
    res = stage(root, src=store.url + '/demoapp-v2.tar.gz', remote_src=True,
                checksum=store.sums['/demoapp-v2.tar.gz'], state='current', check=True)
    assert res['installed_now'] and res['switched'] and res['current'] == 'v2'
    assert store.requests == [] and listing(root) == []


def test_file_already_on_the_host_is_checked_before_unpacking(root, tmp_path):
    src = tmp_path / 'demoapp-v2.tar.gz'
    src.write_bytes(tarball('v2'))
    with pytest.raises(ReleaseError, match='checksum mismatch'):
        stage(root, src=str(src), remote_src=True, checksum=WRONG)
    assert listing(root) == []
    res = stage(root, src=str(src), remote_src=True, checksum='sha256:' + file_sha256(str(src)))
    assert res['installed_now']


# ------------------------------------------------------------------ the rollout's settings

def settings(**raw):
    base = {'canary_version': 'v2', 'canary_backend': 'demoapp', 'canary_service': 'demoapp'}
    base.update(raw)
    seen = []

    def exists(path):
        seen.append(path)
        return path == '/srv/demoapp-v2.tar.gz'
    result, errors = engine.check_settings(base, artifact_exists=exists)
    return result, errors, seen


def problems(**raw):
    return settings(**raw)[1]


def test_settings_accept_a_url_for_the_controller_without_looking_for_a_file():
    result, errors, seen = settings(canary_artifact=' https://repo.example/demoapp-v2.tar.gz ')
    assert errors == [] and seen == []
    assert result['artifact'] == 'https://repo.example/demoapp-v2.tar.gz'
    assert result['artifact_url'] and not result['artifact_remote']


@pytest.mark.parametrize('remote', [True, 'true', 'yes'])
def test_settings_for_the_hosts_need_a_checksum_and_an_absolute_path(remote):
    result, errors, seen = settings(canary_artifact='/srv/on-host/demoapp-v2.tar.gz', canary_artifact_remote=remote,
                                    canary_artifact_checksum='sha256:' + 'a' * 64)
    assert errors == [] and seen == [] and result['artifact_remote'] is True
    errors = problems(canary_artifact='http://repo/demoapp-v2.tar.gz', canary_artifact_remote=remote)
    assert errors == ['canary_artifact_checksum is required with canary_artifact_remote=true: every app host reads '
                      'http://repo/demoapp-v2.tar.gz on its own, and only the sum proves they all install the same '
                      'release']
    errors = problems(canary_artifact='dist/demoapp-v2.tar.gz', canary_artifact_remote=remote,
                      canary_artifact_checksum='a' * 64)
    assert errors == ['canary_artifact=dist/demoapp-v2.tar.gz must be an absolute path on the app hosts '
                      '(canary_artifact_remote=true)']


def test_settings_refuse_other_schemes_bad_sums_and_bad_switches():
    errors = problems(canary_artifact='ftp://u:pw@repo/demoapp-v2.tar.gz')
    assert errors == ['canary_artifact=ftp://***@repo/demoapp-v2.tar.gz: only http:// and https:// URLs are '
                      'downloaded; a file is given as a path']
    errors = problems(canary_artifact='/srv/demoapp-v2.tar.gz', canary_artifact_checksum='md5:abc')
    assert errors == ["canary_artifact_checksum='md5:abc' must be a sha256 as 'sha256:<64 hex digits>' "
                      "or 64 hex digits"]
    errors = problems(canary_artifact='/srv/demoapp-v2.tar.gz', canary_artifact_remote='maybe')
    assert errors == ["canary_artifact_remote='maybe' must be true or false"]
    errors = problems(canary_artifact='/srv/missing.tar.gz')
    assert errors == ['canary_artifact=/srv/missing.tar.gz must be a .tar.gz on the controller; no such file']


def test_coordinator_downloads_a_controller_url_once_and_removes_it(store):
    url = store.url + '/demoapp-v3.tar.gz'
    result, errors, seen = settings(canary_artifact=url, canary_artifact_checksum=store.sums['/demoapp-v3.tar.gz'])
    assert errors == [] and seen == []
    assert coordinator._fetch_artifact(result) == []
    assert result['artifact_source'] == url and os.path.basename(result['artifact']) == 'demoapp-v3.tar.gz'
    assert 'sha256:' + file_sha256(result['artifact']) == store.sums['/demoapp-v3.tar.gz']
    coordinator._remove_download(result)
    assert not os.path.exists(result['artifact_download'])

    result = settings(canary_artifact=url, canary_artifact_checksum=WRONG)[0]
    problems = coordinator._fetch_artifact(result)
    assert len(problems) == 1 and problems[0].startswith('canary_artifact: checksum mismatch: %s' % url)
    assert result['artifact'] == url and 'artifact_download' not in result


# ------------------------------------------------------------------ through Ansible (module + action plugin)

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The controller downloads and ships it
      grayrelease.canary.release: {root: "{{ root }}", version: v2, src: "{{ base }}/demoapp-v2.tar.gz", state: staged}
      register: r_controller
    - name: The host downloads it itself, wrong sum
      grayrelease.canary.release:
        root: "{{ root }}"
        version: v3
        src: "{{ base }}/demoapp-v3.tar.gz"
        remote_src: true
        checksum: "sha256:{{ '0' * 64 }}"
        state: current
      register: r_badsum
      ignore_errors: true
    - name: The host downloads it itself
      grayrelease.canary.release:
        root: "{{ root }}"
        version: v3
        src: "{{ base }}/demoapp-v3.tar.gz"
        remote_src: true
        checksum: "{{ v3_sum }}"
        state: current
      register: r_host
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'controller': r_controller, 'badsum': r_badsum, 'host': r_host} | to_json }}"
        mode: "0644"
"""


@pytest.mark.slow
def test_url_sources_through_ansible(tmp_path, store):
    exe = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    root = tmp_path / "opt" / "demoapp"
    controller_tmp = tmp_path / "controller-tmp"
    controller_tmp.mkdir()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1", TMPDIR=str(controller_tmp),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    extra = {"root": str(root), "base": store.url, "out": str(tmp_path / "out.json"),
             "v3_sum": store.sums['/demoapp-v3.tar.gz'], "ansible_python_interpreter": sys.executable}
    proc = subprocess.run([exe, "-i", "localhost,", "-c", "local", "-e", json.dumps(extra), str(tmp_path / "pb.yml")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["controller"]["installed_now"] and out["controller"]["current"] == ""
    assert json.loads((root / "releases" / "v2" / ".grayrelease-release").read_text())["artifact"] == \
        "demoapp-v2.tar.gz"
    assert out["badsum"]["failed"] and "checksum mismatch" in out["badsum"]["msg"]
    assert out["host"]["installed_now"] and out["host"]["switched"] and out["host"]["current"] == "v3"
    # the controller's temporary download is gone; the hosts' download area is empty
    assert [p for p in os.listdir(str(controller_tmp)) if p.startswith("grayrelease-canary")] == []
    assert not (root / ".staging").exists()
    assert [path for path, _headers in store.requests] == ["/demoapp-v2.tar.gz", "/demoapp-v3.tar.gz",
                                                           "/demoapp-v3.tar.gz"]
