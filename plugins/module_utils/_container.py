# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container-image releases under Podman, for grayrelease.canary.container_release.

Private to grayrelease.canary. Pure standard library. The host layout::

    ROOT/releases.json   the record: version -> image (digest, image id, when),
                         current, previous and the last rollback; root-only (0600),
                         replaced with rename(2)
    ROOT/current.env     CANARY_IMAGE=sha256:<image id> and CANARY_VERSION=<version>,
                         the EnvironmentFile of the service's unit; replaced with
                         rename(2) on every switch

The unit runs ``podman run --rm --replace ... ${CANARY_IMAGE}``, so a switch is
"rewrite current.env, restart the unit". Images are addressed by their image
id (``sha256:...``) only, never by a tag.

Everything that talks to podman or systemd goes through a
``run(argv) -> (rc, out, err)`` callable, and time through ``clock()`` /
``sleep(s)``, so the unit tests fake them. ``apply(params, ...)`` is the one
entry point of the module. The controller's side (what an image archive pins,
what a registry tag resolves to) is ``archive_digest()`` and
``resolve_registry_digest()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible_collections.grayrelease.canary.plugins.module_utils._http import Deadline, open_url
from ansible_collections.grayrelease.canary.plugins.module_utils._release import (
    SERVICE_RE,
    VERSION_RE,
    _write_new,
    check_root_safe,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._systemd import bring_up, unit_state, url_ready
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import (
    ReleaseError,
    checksum_mismatch_msg,
    file_sha256,
    parse_checksum,
)

STATES = ('info', 'staged', 'current', 'rollback', 'absent', 'pruned')
RECORD = 'releases.json'
ENV_FILE = 'current.env'
DIGEST_RE = re.compile(r'^sha256:([0-9a-f]{64})\Z')
HEX_RE = re.compile(r'^[0-9a-f]{64}\Z')
# repo[:tag] or repo@sha256:<hex>; the repository part as the distribution spec writes it.
REFERENCE_RE = re.compile(
    r'^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)'
    r'(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z')
AUTOUPDATE_LABEL = 'io.containers.autoupdate'
AUTOUPDATE_TIMER = 'podman-auto-update.timer'
MANIFEST_TYPES = ', '.join((
    'application/vnd.oci.image.index.v1+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.docker.distribution.manifest.v2+json',
))
MAX_MANIFEST = 4 * 1024 * 1024
STAMP = '%Y-%m-%dT%H:%M:%SZ'


class ContainerError(ReleaseError):
    """A failure of the module; ``result`` goes into the failed task's result."""


def parse_digest(value, what='digest'):
    """'sha256:<hex>' (or 64 bare hex digits) -> 'sha256:<hex>'; ContainerError otherwise."""
    text = str(value).strip().lower()
    if HEX_RE.match(text):
        text = 'sha256:' + text
    if not DIGEST_RE.match(text):
        raise ContainerError("%s must be an image digest as 'sha256:<64 hex digits>', got %r" % (what, value))
    return text


# ------------------------------------------------------------------ controller: what to pin

def _tar_json(tar, name, archive, limit=MAX_MANIFEST):
    try:
        member = tar.getmember(name)
    except KeyError:
        return None
    if not member.isfile() or member.size > limit:
        raise ContainerError('%s: %s in the image archive is not a regular file of at most %d bytes'
                             % (archive, name, limit))
    data = tar.extractfile(member).read()
    try:
        return data, json.loads(data.decode('utf-8'))
    except ValueError as exc:
        raise ContainerError('%s: %s in the image archive is not JSON (%s)' % (archive, name, exc))


def archive_digest(path):
    """The image id (sha256 of its config) of the single image in a docker-archive or oci-archive tar.

    That id is what ``podman load`` gives the image, on every host the same:
    the hosts are then addressed by it. The config blob is hashed, not
    trusted by its name. Fails naming the archive when it holds no image or
    more than one.
    """
    try:
        tar = tarfile.open(path, 'r:*')
    except (tarfile.TarError, OSError) as exc:
        raise ContainerError('%s is not an image archive (docker-archive or oci-archive tar): %s' % (path, exc))
    with tar:
        docker = _tar_json(tar, 'manifest.json', path)
        if docker is not None:
            manifest = docker[1]
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict) \
                    or not isinstance(manifest[0].get('Config'), str):
                raise ContainerError('%s: manifest.json must list exactly one image with its Config; save one '
                                     'image per archive (podman save IMAGE)' % path)
            config = _tar_json(tar, manifest[0]['Config'], path)
            if config is None:
                raise ContainerError('%s: the config %s named in manifest.json is missing'
                                     % (path, manifest[0]['Config']))
            return 'sha256:' + hashlib.sha256(config[0]).hexdigest()
        index = _tar_json(tar, 'index.json', path)
        if index is None:
            raise ContainerError('%s is neither a docker-archive (manifest.json) nor an oci-archive (index.json)'
                                 % path)
        manifests = index[1].get('manifests') if isinstance(index[1], dict) else None
        if not isinstance(manifests, list) or len(manifests) != 1 or not isinstance(manifests[0], dict):
            raise ContainerError('%s: index.json must list exactly one image manifest' % path)
        digest = parse_digest(manifests[0].get('digest'), '%s: index.json manifest digest' % path)
        blob = _tar_json(tar, 'blobs/sha256/' + digest[7:], path)
        if blob is None:
            raise ContainerError('%s: the manifest %s named in index.json is missing' % (path, digest))
        if 'sha256:' + hashlib.sha256(blob[0]).hexdigest() != digest:
            raise ContainerError('%s: the manifest blob %s does not match its digest' % (path, digest))
        config = blob[1].get('config') if isinstance(blob[1], dict) else None
        if not isinstance(config, dict):
            raise ContainerError('%s: the manifest %s names no config (an image index inside an image '
                                 'index is not supported)' % (path, digest))
        return parse_digest(config.get('digest'), '%s: manifest config digest' % path)


def parse_reference(image):
    """'repo[:tag]' or 'repo@sha256:..' -> (registry, repository, tag, digest), Docker Hub's names normalised."""
    match = REFERENCE_RE.match(str(image or '').strip())
    if not match:
        raise ContainerError('image %r is not an image reference: give repository[:tag] or repository@sha256:<hex> '
                             '(for example registry.example.com:5000/team/demoapp:v2)' % (image,))
    name, tag, digest = match.group('name'), match.group('tag'), match.group('digest')
    first, sep, rest = name.partition('/')
    if sep and ('.' in first or ':' in first or first == 'localhost'):
        registry, repository = first, rest
    else:
        registry, repository = 'docker.io', name
    if registry == 'docker.io':
        registry = 'registry-1.docker.io'
        if '/' not in repository:
            repository = 'library/' + repository
    if not tag and not digest:
        tag = 'latest'
    return registry, repository, tag, digest


def repository_name(image):
    """The reference without its tag and digest, as the user wrote it: 'host:5000/team/app:v2' -> 'host:5000/team/app'."""
    name = str(image).strip().split('@', 1)[0]
    head, sep, last = name.rpartition('/')
    if ':' in last:
        last = last.split(':', 1)[0]
    return head + sep + last


def _bearer_token(challenge, timeout, validate_certs, deadline):
    """An anonymous token for a 'Bearer realm=...,service=...,scope=...' challenge, or None."""
    if not challenge.lower().startswith('bearer '):
        return None
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = fields.pop('realm', '')
    if not realm.startswith(('http://', 'https://')):
        return None
    url = realm + ('&' if '?' in realm else '?') + urlencode(sorted(fields.items()))
    with open_url(url, timeout=timeout, validate_certs=validate_certs, deadline=deadline) as response:
        data = json.loads(response.read(MAX_MANIFEST).decode('utf-8'))
    return data.get('token') or data.get('access_token')


def resolve_registry_digest(image, scheme='https', timeout=10.0, validate_certs=True, opener=open_url,
                            clock=time.monotonic, deadline_s=60.0):
    """(repository@sha256:..., digest) for ``image``: the manifest digest the registry serves for its tag.

    One GET of /v2/<repository>/manifests/<tag> (anonymous bearer token when
    the registry asks for one); the digest is Docker-Content-Digest, checked
    against the sha256 of the body the registry sent. A reference that
    carries a digest is returned as it is, without asking anybody.
    """
    registry, repository, tag, digest = parse_reference(image)
    name = repository_name(image)
    if digest:
        return name + '@' + digest, digest
    if scheme not in ('http', 'https'):
        raise ContainerError('registry_scheme must be http or https, got %r' % (scheme,))
    url = '%s://%s/v2/%s/manifests/%s' % (scheme, registry, repository, tag)
    deadline = Deadline(deadline_s, clock)
    headers = {'Accept': MANIFEST_TYPES}
    try:
        try:
            response = opener(url, headers=headers, timeout=timeout, validate_certs=validate_certs, deadline=deadline)
        except HTTPError as exc:
            token = _bearer_token(exc.headers.get('WWW-Authenticate', '') if exc.code == 401 else '',
                                  timeout, validate_certs, deadline)
            if not token:
                raise
            headers['Authorization'] = 'Bearer %s' % token
            response = opener(url, headers=headers, timeout=timeout, validate_certs=validate_certs, deadline=deadline)
        with response:
            body = response.read(MAX_MANIFEST + 1)
            header = response.headers.get('Docker-Content-Digest')
    except HTTPError as exc:
        raise ContainerError('cannot resolve %s: the registry answered %s %s for %s' % (image, exc.code, exc.reason, url))
    except (URLError, OSError, HTTPException, ValueError) as exc:
        raise ContainerError('cannot resolve %s: no answer from the registry at %s (%s)'
                             % (image, url, getattr(exc, 'reason', exc)))
    if len(body) > MAX_MANIFEST:
        raise ContainerError('cannot resolve %s: the manifest at %s is larger than %d bytes' % (image, url, MAX_MANIFEST))
    actual = 'sha256:' + hashlib.sha256(body).hexdigest()
    if header and header.strip().lower() != actual:
        raise ContainerError('cannot resolve %s: the registry says its digest is %s but the manifest it sent has %s'
                             % (image, header.strip(), actual))
    return name + '@' + actual, actual


# ------------------------------------------------------------------ host

class Podman(object):
    """The podman and systemctl commands the module runs."""

    def __init__(self, run, podman='podman'):
        self.run = run
        self.podman = podman

    def _cmd(self, *args):
        return self.run([self.podman] + list(args))

    def image_id(self, ref):
        """'sha256:<id>' of a local image, or None when the host does not have it."""
        rc, out, err = self._cmd('image', 'inspect', '--format', '{{.Id}}', ref)
        value = (out or '').strip().splitlines()
        if rc != 0 or not value:
            return None
        return parse_digest(value[0], 'podman image id of %s' % ref)

    def load(self, path):
        rc, out, err = self._cmd('load', '-q', '-i', path)
        if rc != 0:
            raise ContainerError('podman load -i %s failed (rc %s): %s' % (path, rc, (err or out).strip()),
                                 failed_step='load')

    def pull(self, ref):
        rc, out, err = self._cmd('pull', '-q', ref)
        if rc != 0:
            raise ContainerError('podman pull %s failed (rc %s): %s; the host needs the registry, or give the '
                                 'image as an archive (src)' % (ref, rc, (err or out).strip()), failed_step='pull')

    def remove(self, image_id):
        """None when removed (or already gone), else podman's reason."""
        if self.image_id(image_id) is None:
            return None
        rc, out, err = self._cmd('rmi', image_id)
        return None if rc == 0 else ((err or out).strip() or 'rc %s' % rc)

    def labels(self, kind, name):
        rc, out, err = self._cmd(kind, 'inspect', '--format', '{{json .Config.Labels}}' if kind == 'container'
                                 else '{{json .Labels}}', name)
        if rc != 0:
            return {}
        try:
            value = json.loads((out or '').strip() or 'null')
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class ContainerRelease(object):
    """One run of the module: checks first, then changes (or, in check mode, only reports)."""

    def __init__(self, params, check_mode=False, run=None, clock=time.time, sleep=time.sleep):
        self.p = params
        self.check = check_mode
        self.run = run
        self.clock = clock
        self.sleep = sleep
        self.state = params.get('state') or 'info'
        self.version = params.get('version') or ''
        self.service = params.get('service') or ''
        self.engine = Podman(run, params.get('podman') or 'podman')
        self.changed = False
        self.done = []
        self.result = {'switched': False, 'switched_from': '', 'installed_now': False, 'pruned': [],
                       'prune_errors': {}}
        self._validate()
        self.root = os.path.normpath(params['root'])
        self.record_path = os.path.join(self.root, RECORD)
        self.env_path = os.path.join(self.root, ENV_FILE)
        self.rec = self._load_record()
        self.before = self._view()

    # -------------------------------------------------------- checks

    def _validate(self):
        root = self.p.get('root')
        if not root or not os.path.isabs(root):
            raise ContainerError('root must be an absolute path, got %r' % (root,))
        if self.state not in STATES:
            raise ContainerError('state must be one of %s, got %r' % (', '.join(STATES), self.state))
        if self.version and not VERSION_RE.match(self.version):
            raise ContainerError('version %r is not a valid release name: use letters, digits and . _ + - (not first)'
                                 % (self.version,))
        if not self.version and self.state in ('staged', 'current', 'absent'):
            raise ContainerError('version is required with state=%s' % self.state)
        keep = self.p.get('keep')
        if keep is not None and keep < 1:
            raise ContainerError('keep must be at least 1, got %r' % (keep,))
        if self.state == 'pruned' and keep is None:
            raise ContainerError('keep is required with state=pruned')
        if self.service and not SERVICE_RE.match(self.service):
            raise ContainerError('service %r is not a valid systemd unit name' % (self.service,))
        settle = self.p.get('settle')
        if settle is not None and settle < 0:
            raise ContainerError('settle must be >= 0 seconds, got %r' % (settle,))
        self.digest = parse_digest(self.p['digest']) if self.p.get('digest') else ''
        self.expected = parse_checksum(self.p['checksum']) if self.p.get('checksum') else None
        self.image = (self.p.get('image') or '').strip()
        if self.image:
            parse_reference(self.image)
        if self.p.get('src') and self.image:
            raise ContainerError('give either src (an image archive) or image (a registry reference), not both')

    def _load_record(self):
        empty = {'releases': {}, 'current': '', 'previous': '', 'rollback': {}}
        try:
            with open(self.record_path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            raise ContainerError('%s is not a readable release record (%s); move it away to start a new one'
                                 % (self.record_path, exc))
        if not isinstance(data, dict) or not isinstance(data.get('releases'), dict):
            raise ContainerError('%s is not a release record of this module (no "releases" map); move it away'
                                 % self.record_path)
        for key in ('current', 'previous'):
            data[key] = data.get(key) or ''
        data['rollback'] = data.get('rollback') or {}
        return data

    def _view(self):
        return {'current': self.rec['current'], 'previous': self.rec['previous'],
                'installed': sorted(self.rec['releases'])}

    def _part(self, done, would):
        self.done.append(would if self.check else done)

    def _write(self, path, text, mode):
        tmp = path + '.tmp'
        _write_new(tmp, text, mode)
        os.rename(tmp, path)

    def _save(self):
        if self.check:
            return
        if not os.path.isdir(self.root):
            os.makedirs(self.root, 0o755)
        self._write(self.record_path, json.dumps(self.rec, indent=4, sort_keys=True) + '\n', 0o600)

    def _write_env(self, version):
        entry = self.rec['releases'][version]
        if not self.check:
            self._write(self.env_path, '# written by grayrelease.canary.container_release; do not edit\n'
                        'CANARY_IMAGE=%s\nCANARY_VERSION=%s\n' % (entry['image_id'], version), 0o644)

    def _env_image(self):
        try:
            with open(self.env_path) as handle:
                for line in handle:
                    key, sep, value = line.strip().partition('=')
                    if sep and key == 'CANARY_IMAGE':
                        return value.strip()
        except OSError:
            pass
        return ''

    def refuse_auto_update(self):
        """Units that replace their own image would undo a rollback behind the rollout's back."""
        run = self.run
        rc, out, err = run(['systemctl', 'is-enabled', AUTOUPDATE_TIMER])
        enabled = (out or '').strip()
        rc_active, active, _err = run(['systemctl', 'is-active', AUTOUPDATE_TIMER])
        if enabled in ('enabled', 'enabled-runtime', 'linked') or (active or '').strip() == 'active':
            raise ContainerError('%s is %s on this host: podman auto-update would replace images behind the '
                                 'rollout. Fix: systemctl disable --now %s (the rollout pins every host to a '
                                 'digest itself)' % (AUTOUPDATE_TIMER, enabled if enabled != 'disabled' else 'active',
                                                     AUTOUPDATE_TIMER))
        if not self.service:
            return
        rc, out, err = run(['systemctl', 'cat', self.service])
        if rc == 0 and AUTOUPDATE_LABEL in (out or ''):
            raise ContainerError('unit %s sets the label %s: it updates itself. Remove --label %s=... from the '
                                 'unit (the rollout switches its image)'
                                 % (self.service, AUTOUPDATE_LABEL, AUTOUPDATE_LABEL))
        name = self.p.get('container') or self.service.rsplit('.service', 1)[0]
        labels = self.engine.labels('container', name)
        if AUTOUPDATE_LABEL in labels:
            raise ContainerError('container %s (unit %s) carries the label %s=%s: it updates itself. Remove the '
                                 'label from the unit and the image'
                                 % (name, self.service, AUTOUPDATE_LABEL, labels[AUTOUPDATE_LABEL]))

    # -------------------------------------------------------- stage

    def _pin(self):
        """The digest this run pins version to, from digest or a digest in image."""
        if self.digest:
            return self.digest
        if self.image:
            digest = parse_reference(self.image)[3]
            if digest:
                return digest
        return ''

    def ensure_staged(self):
        """The image of version on the host and in the record, loading or pulling it when missing."""
        version = self.version
        pin = self._pin()
        entry = self.rec['releases'].get(version)
        if entry:
            if pin and pin not in (entry.get('digest'), entry.get('image_id')):
                raise ContainerError(
                    'version %s is recorded with image %s, but this run pins %s. Give the new image its own '
                    'version, or remove %s first (state=absent; it must not be current or previous).'
                    % (version, entry.get('digest'), pin, version))
            if self.engine.image_id(entry['image_id']) is not None:
                return
            if not pin:
                pin = entry.get('digest')
        if not pin:
            raise ContainerError('version %s is not recorded on this host and no image is pinned: give digest '
                                 '(the action plugin sets it from src or image)' % version)
        image_id = self.engine.image_id(self._pull_ref(pin) if self.image else pin)
        if image_id is None:
            image_id = self._fetch(pin)
        self._record(version, pin, image_id, new=entry is None)

    def _pull_ref(self, pin):
        return repository_name(self.image) + '@' + pin

    def _fetch(self, pin):
        src = self.p.get('src')
        if src:
            if not self.p.get('remote_src'):
                if self.check:
                    return pin
                raise ContainerError('image %s of %s is not on the host: src %s must be copied to the host first '
                                     '(the action plugin does that)' % (pin, self.version, src), needs_src=True)
            actual = file_sha256(src) if os.path.isfile(src) else None
            if actual is None:
                raise ContainerError('src %s does not exist on the host or is not a regular file' % src)
            if self.expected and actual != self.expected:
                raise ContainerError(checksum_mismatch_msg(src, self.expected, actual),
                                     expected_sha256=self.expected, sha256=actual)
            found = archive_digest(src)
            if found != pin:
                raise ContainerError('src %s holds image %s, not the pinned %s; nothing loaded' % (src, found, pin))
            self._part('loaded %s from %s' % (pin, os.path.basename(src)),
                       'would load %s from %s' % (pin, os.path.basename(src)))
            if self.check:
                return pin
            self.engine.load(src)
            image_id = self.engine.image_id(pin)
            if image_id is None:
                raise ContainerError('podman load -i %s succeeded but image %s is not there' % (src, pin),
                                     failed_step='load')
            return image_id
        if self.image:
            ref = self._pull_ref(pin)
            self._part('pulled %s' % ref, 'would pull %s' % ref)
            if self.check:
                return pin
            self.engine.pull(ref)
            image_id = self.engine.image_id(ref)
            if image_id is None:
                raise ContainerError('podman pull %s succeeded but the image is not there' % ref, failed_step='pull')
            return image_id
        raise ContainerError('image %s of %s is not on the host and neither src nor image is set to get it from'
                             % (pin, self.version))

    def _record(self, version, pin, image_id, new):
        self.rec['releases'][version] = {
            'digest': pin, 'image_id': image_id, 'image': self.image or '',
            'artifact': os.path.basename(self.p.get('src') or '') or self.image or '',
            'installed': time.strftime(STAMP, time.gmtime(self.clock())), 'installed_ts': self.clock()}
        self.changed = True
        if new:
            self.result['installed_now'] = True
        if not any(part.startswith(('loaded', 'would load', 'pulled', 'would pull')) for part in self.done):
            self._part('recorded %s as %s' % (version, image_id), 'would record %s as %s' % (version, image_id))
        self._save()

    # -------------------------------------------------------- switch

    def switch(self, target):
        old = self.rec['current']
        entry = self.rec['releases'][target]
        if old == target and self._env_image() == entry['image_id']:
            return False
        self._write_env(target)
        if old and old != target:
            self.rec['previous'] = old
        self.rec['current'] = target
        self.rec['rollback'] = {}
        self.changed = True
        self.result.update(switched=True, switched_from=old if old != target else '')
        self._save()
        return True

    def bring_up_service(self, switched):
        service = self.service
        if not service:
            return
        settle = self.p.get('settle')
        settle = 2 if settle is None else settle
        reload_ = bool(self.p.get('daemon_reload'))
        ready = url_ready(self.p['ready_url']) if self.p.get('ready_url') else None
        if switched:
            if not self.p.get('restart', True):
                return
            self._part('restarted %s' % service, 'would restart %s' % service)
            if not self.check:
                self._bring_up('restart', settle, reload_, ready)
            return
        if self.state != 'rollback':
            return
        if unit_state(self.run, service)['active_state'] == 'active':
            return
        self.changed = True
        self._part('started %s' % service, 'would start %s' % service)
        if not self.check:
            self._bring_up('start', settle, reload_, ready)

    def _bring_up(self, action, settle, reload_, ready):
        try:
            bring_up(self.run, self.sleep, self.service, action, settle, reload_, ready, self.clock)
        except ReleaseError as exc:
            raise ContainerError(exc.msg, **dict(exc.result, **self._final()))

    def _final(self):
        result = dict(self.result)
        result.update(self._view())
        return result

    # -------------------------------------------------------- prune / absent

    def _drop(self, version):
        """Forget version and remove its image unless another recorded version uses it."""
        entry = self.rec['releases'].pop(version)
        if any(other.get('image_id') == entry['image_id'] for other in self.rec['releases'].values()):
            return None
        if self.check:
            return None
        return self.engine.remove(entry['image_id'])

    def prune(self, keep, protect):
        protected = set(p for p in protect if p) | set(p for p in (self.rec['current'], self.rec['previous']) if p)
        excess = len(self.rec['releases']) - keep
        if excess <= 0:
            return
        candidates = sorted((entry.get('installed_ts', 0), name) for name, entry in self.rec['releases'].items()
                            if name not in protected)
        for _ts, name in candidates[:excess]:
            error = self._drop(name)
            self.result['pruned'].append(name)
            if error:
                self.result['prune_errors'][name] = error
        if self.result['pruned']:
            self.changed = True
            self._save()
            self._part('pruned %s' % ', '.join(self.result['pruned']),
                       'would prune %s' % ', '.join(self.result['pruned']))

    def absent(self):
        version = self.version
        if version in (self.rec['current'], self.rec['previous']):
            self.done.append('%s is the %s release; not removed'
                             % (version, 'current' if version == self.rec['current'] else 'previous'))
            return
        if version not in self.rec['releases']:
            self.done.append('%s is not installed' % version)
            return
        image_id = self.rec['releases'][version]['image_id']
        error = self._drop(version)
        if error:
            raise ContainerError('cannot remove image %s of %s: %s' % (image_id, version, error))
        self.changed = True
        self._save()
        self._part('removed %s (%s)' % (version, image_id), 'would remove %s (%s)' % (version, image_id))

    # -------------------------------------------------------- states

    def rollback_target(self):
        if self.version:
            return self.version, 'given as version'
        rec = self.rec
        if rec['current'] and rec['rollback'].get('to') == rec['current'] \
                and rec['rollback'].get('from') == rec['previous']:
            return rec['current'], 'recorded in %s' % self.record_path
        if not rec['previous']:
            raise ContainerError('cannot roll back: no previous release recorded in %s (current is %s) and version '
                                 'is not set' % (self.record_path, rec['current'] or 'not set'))
        return rec['previous'], 'previous in %s' % self.record_path

    def execute(self):
        state = self.state
        if state != 'info':
            check_root_safe(self.root)
        if state in ('staged', 'current', 'rollback'):
            self.refuse_auto_update()
        if state == 'staged':
            if self.p.get('require_current') and not self.rec['current']:
                self.done.append('no current release recorded in %s: %s not staged (require_current)'
                                 % (self.record_path, self.version))
            else:
                self.ensure_staged()
                if not self.changed:
                    self.done.append('%s is staged' % self.version)
        elif state == 'current':
            self.ensure_staged()
            switched = self.switch(self.version)
            if switched:
                self._part('current %s -> %s' % (self.result['switched_from'] or '(none)', self.version),
                           'would switch current %s -> %s' % (self.result['switched_from'] or '(none)', self.version))
            else:
                self.done.append('current is %s' % self.version)
            self.bring_up_service(switched)
            if self.p.get('keep') is not None:
                self.prune(self.p['keep'], [self.version, self.result['switched_from']])
        elif state == 'rollback':
            self.rollback()
        elif state == 'absent':
            self.absent()
        elif state == 'pruned':
            self.prune(self.p['keep'], [self.version])
            if not self.result['pruned']:
                self.done.append('nothing to prune (%d recorded, keep %d)' % (len(self.rec['releases']), self.p['keep']))
        else:
            self.done.append('current is %s' % (self.rec['current'] or 'not set'))
        return self.report()

    def rollback(self):
        target, why = self.rollback_target()
        entry = self.rec['releases'].get(target)
        if not entry:
            raise ContainerError('cannot roll back to %s: it is not recorded in %s (%s; current is %s)'
                                 % (target, self.record_path, why, self.rec['current'] or 'not set'))
        if self.engine.image_id(entry['image_id']) is None:
            raise ContainerError('cannot roll back to %s: its image %s is no longer on the host (%s); load it again '
                                 'with state=staged' % (target, entry['image_id'], why))
        old = self.rec['current']
        switched = self.switch(target)
        if switched:
            self.rec['rollback'] = {'from': old, 'to': target, 'at': time.strftime(STAMP, time.gmtime(self.clock()))}
            self._save()
            self._part('rolled back %s -> %s' % (old or '(none)', target),
                       'would roll back %s -> %s' % (old or '(none)', target))
        else:
            self.done.append('current is %s (%s)' % (target, why))
        self.bring_up_service(switched)

    def report(self):
        result = self._final()
        entry = self.rec['releases'].get(self.version) if self.version else None
        result['staged'] = bool(entry) and (self.check or self.engine.image_id(entry['image_id']) is not None)
        current = self.rec['releases'].get(self.rec['current']) or {}
        result['digest'] = (entry or current).get('digest', '')
        result['image_id'] = (entry or current).get('image_id', '')
        result['images'] = dict((name, e.get('image_id', '')) for name, e in self.rec['releases'].items())
        result['service'] = unit_state(self.run, self.service) if self.service and self.run else {}
        if not result['prune_errors']:
            del result['prune_errors']
        result['changed'] = self.changed
        result['msg'] = '; '.join(self.done)
        return result


def apply(params, check_mode=False, run=None, clock=time.time, sleep=time.sleep, diff=False):
    """Run the module's logic; returns the result dict or raises ContainerError."""
    release = ContainerRelease(params, check_mode=check_mode, run=run, clock=clock, sleep=sleep)
    result = release.execute()
    if diff:
        result['diff'] = {'before': release.before, 'after': release._view()}
    return result
