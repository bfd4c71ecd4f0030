# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for grayrelease.canary.rollout_state: the rollout's coordinator.

Runs on the controller only (nothing is executed on a host). It reads the
state object from this run's state file (module_utils/_state_file.py; the
`grayrelease_rollout_state_file` fact names it), collects what the actors of
the pending act registered (from hostvars, with the play's live hosts to see
who is gone), calls the engine in module_utils/_engine, writes the new state
back to the file and returns, as facts, only the file's reference and the
small view every host's conditions read (`grayrelease_rollout_view`). At
`finish` it also writes report.json, report.md and report.html.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from urllib.parse import urlsplit

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine
from ansible_collections.grayrelease.canary.plugins.module_utils._container import archive_digest, resolve_registry_digest
from ansible_collections.grayrelease.canary.plugins.module_utils._contract import ANALYSIS_REGISTERS, REGISTERS
from ansible_collections.grayrelease.canary.plugins.module_utils._lock import holder_gone, run_identity
from ansible_collections.grayrelease.canary.plugins.module_utils._artifact import (
    ReleaseError,
    check_artifact,
    download,
    file_sha256,
    is_url,
    parse_checksum,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.notify import due as notify_due, notify
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.report import run_origin
from ansible_collections.grayrelease.canary.plugins.module_utils._notify import body as notify_body, deliver
from ansible_collections.grayrelease.canary.plugins.module_utils._report_html import report_html
from ansible_collections.grayrelease.canary.plugins.module_utils._state_file import (
    REF_FACT,
    StateFileError,
    identity_of,
    new_ref,
    prune as prune_state_files,
    read_doc as read_state_doc,
    state_dir,
    write as write_state,
)

# The fact naming this run's state file ({path, run}): the state itself (16 KB
# for 6 hosts, about 0.9 MB for 1,000) is no fact, see module_utils/_state_file.py.
FACT = REF_FACT
# The small part every task's conditions read (templating the whole state on
# every host for every task costs about 0.1 s a task).
VIEW = 'grayrelease_rollout_view'
# Settings read from the inventory / extra vars (DESIGN.md's names).
SETTING_NAMES = (
    'canary_version', 'canary_artifact', 'canary_artifact_checksum', 'canary_backend', 'canary_service',
    'canary_haproxy_socket', 'canary_root', 'canary_port', 'canary_lock_path', 'canary_limit', 'canary_steps',
    'canary_max_unavailable', 'canary_zone_mode', 'canary_traffic_percent', 'canary_pause',
    'canary_analysis_interval', 'canary_analysis_count', 'canary_drain_timeout', 'canary_health_deadline',
    'canary_auto_rollback', 'canary_on_marginal', 'canary_on_inconclusive', 'canary_report_dir',
    'canary_release_keep', 'canary_shared_paths', 'canary_release_owner', 'canary_release_group',
    'canary_lock_ttl', 'canary_lock_takeover', 'canary_prestage', 'canary_settle_seconds',
    'canary_artifact_remote',
    'canary_confidence', 'canary_critical_ratio', 'canary_critical_difference', 'canary_request_rate',
    'canary_min_power',
    'canary_underpowered', 'canary_judge_every_step', 'canary_balancer_driver', 'canary_nginx_upstream_file',
    'canary_nginx_access_log',
    'canary_release_kind', 'canary_image',
    'canary_haproxy_log', 'canary_prometheus_url', 'canary_prometheus_metrics', 'canary_metric_options',
    'canary_notify_url', 'canary_notify_format', 'canary_notify_headers', 'canary_notify_events',
    'canary_notify_timeout', 'canary_notify_retries', 'canary_routing',
    'canary_before_drain_tasks', 'canary_after_ready_tasks',
)
# Read again from the variables whenever a notification is sent: never kept in the state (its file).
NOTIFY_SECRETS = ('canary_notify_url', 'canary_notify_headers')
OPS = ('start', 'record', 'batch', 'rollback', 'rollback_group', 'cleanup', 'finish_survey', 'finish')
# Every run's own copy of its report, beside the latest at the top of canary_report_dir;
# the newest KEEP_RUNS of them are kept.
RUNS = 'runs'
KEEP_RUNS = 50
RUN_NAME_RE = re.compile(r'\d{8}T\d{6}Z-')
# What the finish returns of the report (`report`): its headline, which the role's
# set_stats reads. The whole document (per step, batch and host: about as big as
# the state, 0.1 MB at 100 hosts) is report.json, not a task result (AWX keeps
# every result in its job events, and drops those over 700,000 bytes).
REPORT_SUMMARY = ('decision', 'reason', 'reasons', 'run', 'artifact', 'version', 'previous_version', 'backend',
                  'started', 'finished', 'seconds', 'check_mode')


def _fetch_artifact(settings):
    """Download the canary_artifact URL into a private directory; [] or the problem."""
    url = settings['artifact']
    directory = tempfile.mkdtemp(prefix='grayrelease-canary-artifact-')
    name = os.path.basename(urlsplit(url).path.rstrip('/')) or 'artifact.tar.gz'
    path = os.path.join(directory, name)
    try:
        download(url, path, parse_checksum(settings['checksum']) if settings['checksum'] else None)
    except ReleaseError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        return ['canary_artifact: %s' % exc.msg]
    settings.update(artifact=path, artifact_source=url, artifact_download=directory)
    return []


def _pin_image(settings):
    """The container kind: the image pinned to one digest, once, here, so that every host runs the
    same bytes (an archive's image id; a registry tag's manifest digest now). [] or the problem."""
    release = settings['release']
    try:
        if release.get('image'):
            ref, digest = resolve_registry_digest(release['image'])
            release.update(image=ref, digest=digest)
        elif not settings['artifact_remote']:
            if settings['checksum'] and parse_checksum(settings['checksum']) != file_sha256(settings['artifact']):
                return ['canary_artifact=%s does not match canary_artifact_checksum' % settings['artifact']]
            release['digest'] = archive_digest(settings['artifact'])
    except ReleaseError as exc:
        return ['%s: %s' % ('canary_image=%s' % release['image'] if release.get('image')
                            else 'canary_artifact=%s' % settings['artifact'], exc.msg)]
    return []


def _remove_download(settings):
    if settings.get('artifact_download'):
        shutil.rmtree(settings['artifact_download'], ignore_errors=True)


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False
    _VALID_ARGS = frozenset(('op', 'index', 'app_group', 'balancer_group', 'owner', 'metrics', 'metrics_failed'))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self._task.args
        op = args.get('op')
        if op not in OPS:
            raise AnsibleActionFail('op=%r is not one of %s' % (op, ', '.join(OPS)))
        now = time.time()
        if op == 'start':
            try:
                directory = state_dir()
            except StateFileError as exc:
                raise AnsibleActionFail(to_text(exc)) from None
            # Earlier runs' files untouched for a day (never a live run's).
            prune_state_files(directory, now)
            state = self._start(task_vars, now)
            ref, identity = new_ref(directory, now), identity_of(state.get('lock_info'))
        else:
            ref = _plain(task_vars.get(FACT))
            try:
                doc = read_state_doc(ref)
            except StateFileError as exc:
                raise AnsibleActionFail(to_text(exc)) from None
            state, identity = doc['state'], doc.get('identity')
            ref = {'path': ref['path'], 'run': ref['run']}
            try:
                engine.advance(state, op, lambda work: result.update(self._advance(work, op, task_vars, now)),
                               time.time)
            except Exception as exc:  # pylint: disable=broad-except
                # Only the finish's errors come here: the lock is released by
                # then; a report with what is known still names the error.
                error = engine.redact(to_text(exc))
                written = self._write_files(state, {
                    'report.json': json.dumps(engine.fallback_report(state, iso, error), indent=2, sort_keys=True)
                    + '\n',
                    'report.md': '# Canary rollout: the report could not be built\n\n%s\n'
                                 % engine.md_text(error, starts_line=True),
                    'report.html': '<!DOCTYPE html><title>Canary rollout</title><h1>The report could not be built'
                                   '</h1><pre>%s</pre>\n' % html.escape(error)})
                raise AnsibleActionFail('internal error in the coordinator (finish): %s; %s' % (
                    error, written.get('report_error') or 'a short report is in %s' % written['report_path']))
            # What this call reached (a step begun or judged, a rollback begun), told as it happens.
            self._notify(state, task_vars)
        try:
            write_state(ref, state, identity)
        except StateFileError as exc:
            # The coordinator leaves the play: nobody acts any more (roles/rollout/vars/main.yml).
            raise AnsibleActionFail(to_text(exc)) from None
        result['changed'] = False
        # Only the file's reference and the small view: this result goes to every
        # host of the play and into every AWX job event of a coordinator task.
        result['ansible_facts'] = {FACT: ref, VIEW: engine.view(state)}
        if Display().verbosity < 3:
            # The view (settings, plan) is not something to read after every
            # coordinator task either: like gather_facts' facts, -v and -vv do
            # not print it (the progress callback and the report say what
            # happened); -vvv does, with the path of the state file, for debugging.
            result['_ansible_verbose_override'] = True
        result['act'] = state['act'].get('phase', '')
        if state['messages']:
            result['msg'] = engine.redact(' | '.join(state['messages']))
        if state['halt']:
            result['halt'] = engine.redact(state['halt'])
        return result

    def _advance(self, state, op, task_vars, now):
        """One coordinator call on the private copy `state` (changed in place)."""
        args = self._task.args
        if op == 'record':
            engine.record(state, self._results(state, task_vars), now)
            if state['act'].get('phase') == 'pause':
                # canary_pause seconds after a step: waited here, on the
                # controller, where nothing else is going on meanwhile.
                self._notify(state, task_vars)
                time.sleep(float(state['act']['seconds']))
                engine.record(state, {}, time.time())
        elif op == 'batch':
            engine.begin_batch(state, int(args.get('index', 0)), now)
        elif op == 'rollback':
            engine.begin_rollback(state, now)
        elif op == 'rollback_group':
            engine.begin_rollback_group(state, int(args.get('index', 0)), now)
        elif op == 'cleanup':
            engine.cleanup(state, now)
        elif op == 'finish_survey':
            engine.begin_finish(state, now)
        else:
            engine.finish(state, now)
            _remove_download(state['settings'])
            # Sent before the report is written, so that the report holds its delivery too.
            self._notify(state, task_vars)
            return self._write_report(state)
        return {}

    # -- notifications: sent from here, at the engine's transitions (no task of their own)

    def _notify(self, state, task_vars):
        """Send the webhook events the state has reached (engine notify). Bounded by
        canary_notify_timeout per event; never fails the rollout."""
        conf = state['settings'].get('notify') or {}
        if not conf.get('enabled') or state['check_mode'] or not notify_due(state):
            return
        try:
            secrets = self._notify_secrets(state, task_vars)
            url = secrets.get('canary_notify_url') or ''
            headers = secrets.get('canary_notify_headers') or {}
            directory = _report_dir(state)
            report = {'report': os.path.join(directory, 'report.json'),
                      'report_run': os.path.join(directory, RUNS, _run_name(state), 'report.json')}

            def send(event, summary):
                return deliver(url, notify_body(event, summary, conf['format']), headers,
                               timeout=conf['timeout'], retries=conf['retries'])
            notify(state, time.time(), send, report)
        except Exception as exc:  # pylint: disable=broad-except
            # Never into the rollout; the message names no URL or header (only the error's kind).
            state['notes'].append('notifications: not sent (%s)' % type(exc).__name__)

    def _notify_secrets(self, state, task_vars):
        """canary_notify_url and canary_notify_headers, looked up as at the start."""
        hostvars = task_vars['hostvars']
        apps = state['app_hosts']
        reference = hostvars[apps[0]] if apps else {}
        raw = {}
        for name in NOTIFY_SECRETS:
            if apps and name in reference:
                raw[name] = reference[name]
            elif name in task_vars:
                raw[name] = task_vars[name]
        return _plain(self._templar.template(raw))

    # -- start: settings and participants

    def _start(self, task_vars, now):
        args = self._task.args
        groups = task_vars.get('groups', {})
        app_group = args.get('app_group') or 'app'
        balancer_group = args.get('balancer_group') or 'balancers'
        app_hosts = list(groups.get(app_group) or [])
        balancers = list(groups.get(balancer_group) or [])
        hostvars = task_vars['hostvars']
        # Group-wide settings may be set for the app hosts only (not `all`):
        # the first app host's view, extra vars included, wins.
        reference = hostvars[app_hosts[0]] if app_hosts else {}
        raw = {}
        for name in SETTING_NAMES:
            if app_hosts and name in reference:
                raw[name] = reference[name]
            elif name in task_vars:
                raw[name] = task_vars[name]
        raw = self._templar.template(raw)
        raw = _plain(raw)
        settings, errors = engine.check_settings(raw, artifact_exists=lambda p: os.path.isfile(os.path.expanduser(p)))
        if settings['artifact'] and settings['artifact_url'] and not settings['artifact_remote'] and not errors:
            # Downloaded once, here; from then on it is a controller path.
            errors += _fetch_artifact(settings)
        if settings['artifact'] and not settings['artifact_remote'] and not is_url(settings['artifact']):
            settings['artifact'] = os.path.abspath(os.path.expanduser(settings['artifact']))
            if not errors and settings['release_kind'] == 'tarball':
                # A corrupt, unsafe or mismatching artifact is refused here,
                # before the lock and before any host is touched.
                errors += ['canary_artifact=%s: %s' % (engine.redact(settings.get('artifact_source', settings['artifact'])),
                                                       problem)
                           for problem in check_artifact(settings['artifact'], settings['checksum'] or None)]
        if settings['release_kind'] == 'container' and not errors:
            errors += _pin_image(settings)
        identities = {}
        for host in app_hosts:
            hv = hostvars[host]
            address = hv.get('ansible_host') or host
            port = settings['port'] or 8080
            identities[host] = _plain(self._templar.template({
                'server': hv.get('canary_server') or host,
                'zone': hv.get('canary_zone') or '',
                'health_url': hv.get('canary_health_url') or 'http://%s:%s/healthz' % (address, port),
                'sample_url': hv.get('canary_sample_url') or 'http://%s:%s/' % (address, port),
                'prometheus_instance': hv.get('canary_prometheus_instance') or '',
            }))
        probe = (reference.get('canary_probe_from') if app_hosts else None) or task_vars.get('canary_probe_from') \
            or (balancers[0] if balancers else 'localhost')
        probe = to_text(self._templar.template(probe))
        errors += engine.check_hosts(app_hosts, balancers, identities, probe, list(groups.get('all') or []),
                                     settings['limit'])
        # In the app group's order, as the plan and the report list hosts.
        settings['limit'] = [h for h in app_hosts if h in settings['limit']]
        # One owner per run (two launches of the same job are two owners);
        # the lock also says where the run lives (controller, machine, boot,
        # pid and its start time), so that a re-run on the same controller can
        # prove a killed holder gone, and nothing else can pass for it. The
        # rollback playbook takes the same identity (rollout_lock state=identity).
        owner, lock_info = run_identity(os.getppid(), os.environ.get('USER'))
        owner = args.get('owner') or owner
        lock_info.update(version=settings.get('version'), action='rollout')
        state = engine.new_state(settings, errors, app_hosts, balancers, identities, probe, now,
                                 check_mode=bool(self._play_context.check_mode), owner=owner, lock_info=lock_info)
        # Who runs it, for the report: AWX's job variables (awx_job_id, awx_user_name, ...), else this controller's user.
        state['origin'] = _plain(run_origin(task_vars, dict(os.environ), lock_info))
        return state

    # -- record: what the actors of the pending act registered

    def _results(self, state, task_vars):
        act = state['act']
        live = set(task_vars.get('ansible_play_hosts') or [])
        hostvars = task_vars['hostvars']

        def gather(role, register):
            found = {}
            for host in act.get(role, []):
                value = hostvars[host].get(register) if host in live else None
                found[host] = _plain(value) if isinstance(value, dict) else None
            return found

        if act.get('phase') == 'analysis':
            found = dict((key, {role: gather(role, register)}) for key, (role, register) in ANALYSIS_REGISTERS.items())
            # canary_custom_metrics, templated by the record task after the user's analysis tasks.
            found['custom'] = _plain(self._task.args.get('metrics') or [])
            # What failed in those tasks ('' when nothing did): the step is then not judged without them.
            found['custom_failed'] = str(self._task.args.get('metrics_failed') or '')
            return found
        results = dict((role, gather(role, register)) for role, register in REGISTERS.items() if role in act)
        for result in (results.get('lock') or {}).values():
            if result and result.get('failed') and isinstance(result.get('lock'), dict):
                result['holder_gone'] = holder_gone(result['lock'])
        return results

    # -- finish: the report files

    def _write_report(self, state):
        doc = engine.report(state, iso)
        out = self._write_files(state, {'report.json': json.dumps(doc, indent=2, sort_keys=True) + '\n',
                                        'report.md': engine.report_markdown(doc), 'report.html': report_html(doc)})
        directory = _report_dir(state)
        # The whole document only when report.json could not be written (nothing else has it then).
        out.update(report=doc if 'report_error' in out else dict((k, doc.get(k)) for k in REPORT_SUMMARY),
                   report_html=os.path.join(directory, 'report.html'))
        out['summary'] = engine.summary_lines(doc, os.path.join(directory, 'report.md'))
        if 'report_error' not in out:
            out['summary'].append("this run's copy: %s" % out['report_run_dir'])
        judged = [step['judge'] for step in doc['steps'] if step.get('judge')]
        out['verdict'] = judged[0].get('verdict', '') if judged else ''
        out['score'] = judged[0].get('score') if judged else None
        return out

    @staticmethod
    def _write_files(state, texts):
        """The report files in canary_report_dir, and the same in this run's own directory under runs/.

        The top-level files are the latest run's (what users and docs read);
        runs sharing the directory each keep their own copy under runs/.
        """
        directory = _report_dir(state)
        run_dir = os.path.join(directory, RUNS, _run_name(state))
        out = {'report_path': os.path.join(directory, 'report.json'), 'report_run_dir': run_dir}
        try:
            os.makedirs(run_dir, exist_ok=True)
            # The run's own copy first: it stays even if the top level cannot be replaced.
            for target in (run_dir, directory):
                for name, text in texts.items():
                    _write_whole(target, name, text)
            _prune_runs(os.path.join(directory, RUNS))
        except OSError as exc:
            # The decision still stands and the lock is still released.
            out['report_error'] = 'could not write the report in %s: %s' % (directory, exc)
        return out


def _prune_runs(runs):
    """Remove all but the newest KEEP_RUNS run directories (their names sort by start):
    only real directories named like a run, never through a link."""
    names = sorted(n for n in os.listdir(runs) if RUN_NAME_RE.match(n)
                   and stat.S_ISDIR(os.lstat(os.path.join(runs, n)).st_mode))
    for name in names[:-KEEP_RUNS]:
        shutil.rmtree(os.path.join(runs, name), ignore_errors=True)


def _write_whole(directory, name, text):
    """directory/name written whole: a fresh temporary file, then a rename over name.

    mkstemp creates its file with O_EXCL under a random name, so a symlink
    planted in the directory (a fixed '.report.json.tmp' -> elsewhere) is
    never followed; the rename replaces a link at `name` itself, not its target.
    """
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % name, suffix='.tmp', dir=directory)
    try:
        # mkstemp's 0600 would hide the report from the people it is for.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _report_dir(state):
    # Also called on a damaged state (the short report of an internal error).
    settings = state.get('settings') if isinstance(state, dict) else None
    value = settings.get('report_dir') if isinstance(settings, dict) else None
    if not (isinstance(value, str) and value):
        value = engine.DEFAULTS['canary_report_dir']
    return os.path.abspath(os.path.expanduser(value))


def _run_name(state):
    """runs/ subdirectory of one run: <started, UTC>-<version>-<the run's id>, sorting by start.

    The version is user text: only [A-Za-z0-9._+-] of it, at most 40
    characters, so the name is one path component. The id is the run's
    (the lock's), random when the state lost it, so two runs never share it.
    """
    state = state if isinstance(state, dict) else {}
    try:
        stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(state['started']))
    except (KeyError, TypeError, ValueError, OverflowError, OSError):  # a damaged state: now will do
        stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    settings = state.get('settings') if isinstance(state.get('settings'), dict) else {}
    version = re.sub(r'[^A-Za-z0-9._+-]', '_', to_text(settings.get('version') or 'unknown'))[:40]
    lock_info = state.get('lock_info') if isinstance(state.get('lock_info'), dict) else {}
    run = lock_info.get('run')
    run = run if isinstance(run, str) and re.match(r'[0-9a-f]{8}\Z', run) else uuid.uuid4().hex[:8]
    return '%s-%s-%s' % (stamp, version, run)


def _plain(value):
    """Ansible's tagged / lazy containers as plain JSON types."""
    return json.loads(json.dumps(value, default=to_text))
