# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reports of an AWX job kept beyond its execution environment: the
rollout role's real finish (roles/rollout/tasks/finish.yml, with
report_keep.yml) run through ansible-runner as AWX runs a job, on a recorded
rollout's last state (the real rollout_state op=finish writes the reports).

It checks what AWX keeps of the job: the set_stats data in the
playbook_on_stats event, read both from the runner and from the event file
under artifacts/<ident>/job_events/ (AWX stores that event's artifact_data
as the job's artifacts and hands it to the workflow's next nodes), and
canary_report_upload's copies: to a host of the inventory (HOST:/DIR), and by
an HTTP PUT to a loopback server, with the URL's credentials and the headers
nowhere in the job's output or artifacts; a copy that fails is named and the
job's outcome stays the rollout's. The rollout on the fleet through
ansible-runner is molecule/rollout/tests/test_awx_runner.py."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'plugins'))

from _decisions_helpers import REPO, VENV_BIN, ansible_env, closed_port  # noqa: E402  pylint: disable=wrong-import-position
from _rollout_recording import RealisticFleet, record_run  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils import _state_file as state_file  # noqa: E402

PYTHON = os.path.join(VENV_BIN, 'python')
FILES = ('report.json', 'report.md', 'report.html')
# AWX drops an event's result above this many bytes (MAX_EVENT_RES_DATA).
AWX_EVENT_LIMIT = 700000
PLAYBOOK = """
- name: The rollout's finish, as the job's last tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The state when every batch is done and the lock is released
      ansible.builtin.set_fact:
        grayrelease_rollout_state_file: "{{ lookup('ansible.builtin.file', 'state.json') | from_json }}"

    - name: The rollout role's finish
      ansible.builtin.include_role:
        name: grayrelease.canary.rollout
        tasks_from: finish.yml
"""
RUNNER = ('import ansible_runner, json, sys\n'
          'r = ansible_runner.run(private_data_dir=sys.argv[1], playbook="finish.yml", quiet=True)\n'
          'print(json.dumps({"status": r.status, "rc": r.rc, "artifact_dir": r.config.artifact_dir,\n'
          '    "events": list(r.events)}))\n')


def awx_job(tmp_path, extravars, apps=6, name='job'):
    """A recorded rollout to its finish state, then the finish as an AWX job (private data dir)."""
    reports = tmp_path / (name + '-reports')
    fleet = RealisticFleet(apps=['app%d' % n for n in range(1, apps + 1)])
    events, dummy = record_run(fleet, report_dir=str(reports))
    finish = [data for kind, data in events if kind == 'state' and data['phase'] == 'finish' and not data['act']][0]
    (tmp_path / 'state').mkdir(mode=0o700, exist_ok=True)
    ref = state_file.new_ref(str(tmp_path / 'state'))
    state_file.write(ref, finish)
    data = tmp_path / name
    (data / 'project').mkdir(parents=True)
    (data / 'project' / 'finish.yml').write_text(PLAYBOOK)
    (data / 'project' / 'state.json').write_text(json.dumps(ref))
    (data / 'inventory').mkdir()
    # "reports": a report host (local here); "gone": a host nothing answers for.
    (data / 'inventory' / 'hosts').write_text(
        'localhost ansible_connection=local ansible_python_interpreter={py}\n'
        'reports ansible_connection=local ansible_python_interpreter={py}\n'
        'gone ansible_host=127.0.0.1 ansible_port={port} ansible_user=nobody ansible_ssh_timeout=3\n'
        .format(py=PYTHON, port=closed_port()))
    (data / 'env').mkdir()
    (data / 'env' / 'extravars').write_text(json.dumps(extravars))
    (data / 'env' / 'envvars').write_text(json.dumps({'ANSIBLE_NOCOLOR': '1'}))
    proc = subprocess.run([PYTHON, '-c', RUNNER, str(data)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env=ansible_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = json.loads(proc.stdout.strip().splitlines()[-1])
    job['reports'] = reports
    job['run_dir'] = reports / 'runs' / os.listdir(str(reports / 'runs'))[0]
    job['stdout'] = open(os.path.join(job['artifact_dir'], 'stdout'), encoding='utf-8').read()
    return job


def artifacts(job):
    """The job's artifacts as AWX reads them: the playbook_on_stats event's artifact_data,
    from the runner and from its event file under artifacts/<ident>/job_events/."""
    stats = [e for e in job['events'] if e['event'] == 'playbook_on_stats']
    assert len(stats) == 1
    folder = os.path.join(job['artifact_dir'], 'job_events')
    on_disk = [json.load(open(os.path.join(folder, n), encoding='utf-8')) for n in sorted(os.listdir(folder))]
    on_disk = [e for e in on_disk if e.get('event') == 'playbook_on_stats']
    assert len(on_disk) == 1 and on_disk[0]['event_data']['artifact_data'] == stats[0]['event_data']['artifact_data']
    return stats[0]['event_data']['artifact_data']


def everything_the_job_kept(job):
    """Every byte of the job's artifacts directory (stdout, events, ...): what AWX would show or store."""
    text = []
    for root, dummy, names in os.walk(job['artifact_dir']):
        for name in names:
            with open(os.path.join(root, name), encoding='utf-8', errors='replace') as handle:
                text.append(handle.read())
    return '\n'.join(text)


class PutServer(object):
    """A loopback folder that takes PUTs (an artifact repository's raw folder): 403 without the headers."""

    def __init__(self, token, user, password):
        self.files, self.seen = {}, []
        wanted = ('Bearer %s' % token, 'Basic %s' % base64.b64encode(('%s:%s' % (user, password)).encode()).decode())
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                owner.seen.append((self.path, dict(self.headers)))
                ok = (self.headers.get('X-Token'), self.headers.get('Authorization')) == wanted
                if ok:
                    owner.files[self.path] = (body, self.headers.get('Content-Type'))
                self.send_response(201 if ok else 403)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_without_an_upload_the_artifacts_say_where_the_reports_are(tmp_path):
    job = awx_job(tmp_path, {})
    assert (job['status'], job['rc']) == ('successful', 0)
    data = artifacts(job)
    assert data['canary_decision'] == 'promoted' and data['canary_verdict'] == 'pass'
    assert float(data['canary_score']) == 100
    assert data['canary_report'] == str(job['reports'] / 'report.json')
    assert data['canary_report_html'] == str(job['reports'] / 'report.html')
    assert data['canary_report_run_dir'] == str(job['run_dir'])
    assert (data['canary_report_copy'], data['canary_report_copy_error']) == ('', '')
    assert data['canary_summary'][0] == 'decision: promoted (v1 -> v2)'
    assert data['canary_summary'][-1] == "this run's copy: %s" % job['run_dir']
    # The include of report_keep.yml is skipped: no copy was tried.
    assert not [e for e in job['events'] if e.get('event_data', {}).get('task', '').startswith('Finish | keep the reports |')]


def test_copy_to_a_host_of_the_inventory(tmp_path):
    kept = tmp_path / 'kept' / 'canary'
    job = awx_job(tmp_path, {'canary_report_upload': 'reports:%s/' % kept})
    assert (job['status'], job['rc']) == ('successful', 0)
    data = artifacts(job)
    run = job['run_dir'].name
    assert data['canary_report_copy'] == 'reports:%s/%s/report.html' % (kept, run)
    assert data['canary_report_copy_error'] == ''
    for name in FILES:
        assert (kept / run / name).read_bytes() == (job['run_dir'] / name).read_bytes()
        assert oct((kept / run / name).stat().st_mode & 0o777) == '0o644'
    assert data['canary_summary'][-1] == 'report kept: reports:%s/%s/report.html' % (kept, run)
    # The copy ran on the report host (delegated), not on the coordinator.
    copy = [e for e in job['events'] if e['event'] == 'runner_on_ok'
            and e['event_data']['task'] == 'Finish | keep the reports | copy them to a host of the inventory']
    assert len(copy) == 1 and copy[0]['event_data']['res']['_ansible_delegated_vars']['ansible_host'] == 'reports'


def test_a_failed_copy_is_named_and_changes_no_outcome(tmp_path):
    job = awx_job(tmp_path, {'canary_report_upload': 'gone:/var/lib/canary-reports'})
    # The rollout was promoted: the job stays successful, the copy's failure is an artifact.
    assert (job['status'], job['rc']) == ('successful', 0)
    data = artifacts(job)
    assert data['canary_decision'] == 'promoted' and data['canary_report_copy'] == ''
    assert data['canary_report_copy_error'].startswith(
        'could not copy the reports to gone:/var/lib/canary-reports/%s: ' % job['run_dir'].name), data
    assert data['canary_summary'][-1] == 'report not kept: ' + data['canary_report_copy_error']
    for bad, why in (('nowhere:/x', 'canary_report_upload: nowhere is not a host of the inventory; nothing was copied'),
                     ('reports', 'canary_report_upload must be HOST:/DIR (a host of the inventory) or an http(s):// '
                                 'URL; nothing was copied')):
        data = artifacts(awx_job(tmp_path, {'canary_report_upload': bad}, name='bad%d' % len(bad)))
        assert (data['canary_report_copy'], data['canary_report_copy_error']) == ('', why)


def test_put_to_a_url_keeps_the_credentials_out_of_the_job(tmp_path):
    token, user, password = 'tok-5ecret-1', 'deployer', 'pw-5ecret-2'
    server = PutServer(token, user, password)
    try:
        url = 'http://%s:%s@127.0.0.1:%d/repository/canary/' % (user, password, server.port)
        job = awx_job(tmp_path, {'canary_report_upload': url, 'canary_report_upload_headers': {'X-Token': 'Bearer ' + token}})
        refused = awx_job(tmp_path, {'canary_report_upload': url, 'canary_report_upload_headers': {'X-Token': 'wrong'}},
                          name='refused')
    finally:
        server.stop()
    assert (job['status'], job['rc']) == ('successful', 0)
    run = job['run_dir'].name
    base = 'http://127.0.0.1:%d/repository/canary/%s' % (server.port, run)
    data = artifacts(job)
    assert (data['canary_report_copy'], data['canary_report_copy_error']) == (base + '/report.html', '')
    types = {'report.json': 'application/json', 'report.md': 'text/markdown; charset=utf-8',
             'report.html': 'text/html; charset=utf-8'}
    for name in FILES:
        body, kind = server.files['/repository/canary/%s/%s' % (run, name)]
        assert body == (job['run_dir'] / name).read_bytes() and kind == types[name]
    # The refused job: named, still successful (the rollout was promoted).
    data = artifacts(refused)
    assert refused['status'] == 'successful' and data['canary_report_copy'] == ''
    assert data['canary_report_copy_error'].startswith(
        'could not PUT the reports to http://127.0.0.1:%d/repository/canary/%s/: report.json, report.md, report.html (403'
        % (server.port, refused['run_dir'].name)), data['canary_report_copy_error']
    for one in (job, refused):
        kept = everything_the_job_kept(one)
        assert 'repository/canary' in kept
        for secret in (token, password, base64.b64encode(('%s:%s' % (user, password)).encode()).decode()):
            assert secret not in kept


def test_the_artifacts_stay_small_on_a_large_fleet(tmp_path):
    """80 app hosts: the summary's line per host is cut to 60 lines in set_stats (report.md has them all)."""
    job = awx_job(tmp_path, {}, apps=80)
    assert job['status'] == 'successful'
    data = artifacts(job)
    summary = data['canary_summary']
    assert len(summary) == 53 and summary[50].startswith('... ') and summary[50].endswith(' more lines in report.md')
    assert summary[-1] == "this run's copy: %s" % job['run_dir'] and summary[-2].startswith('report: ')
    full = [e for e in job['events'] if e['event'] == 'runner_on_ok' and e['event_data']['task'] == 'Finish | summary']
    assert len(full[0]['event_data']['res']['msg']) == 50 + 2 + int(summary[50].split()[1])
    stats = [e for e in job['events'] if e['event'] == 'playbook_on_stats'][0]
    assert len(json.dumps(stats)) < 20000 < AWX_EVENT_LIMIT
    assert max(len(json.dumps(e)) for e in job['events']) < AWX_EVENT_LIMIT


def test_the_rollout_refuses_an_unusable_upload_before_it_starts(tmp_path):
    """The playbook's first play names a canary_report_upload the finish could not use, touching nothing."""
    inventory = tmp_path / 'hosts'
    inventory.write_text('[balancers]\nlb ansible_host=127.0.0.1 ansible_port=%d\n[app]\napp1 ansible_host=127.0.0.1 '
                         'ansible_port=%d\n' % (closed_port(), closed_port()))
    for value, shown in (('nowhere:/srv/reports', 'canary_report_upload=nowhere:...'),
                         ('ftp://user:pw@example.net/x', 'canary_report_upload=ftp:...'),
                         ('user:pw@example.net', 'canary_report_upload=(not shown)')):
        proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', str(inventory),
                               'grayrelease.canary.rollout', '-e', 'canary_version=v2', '-e', 'canary_artifact=x.tar.gz',
                               '-e', 'canary_report_upload=' + value], capture_output=True, text=True, timeout=120,
                              check=False, env=ansible_env(), cwd=str(tmp_path))
        assert proc.returncode == 2, proc.stdout[-3000:]
        assert shown + ': it must be HOST:/DIR with HOST a host of the inventory' in proc.stdout, proc.stdout[-3000:]
        assert 'pw@' not in proc.stdout and 'Canary rollout | who takes part' in proc.stdout
        # Nothing ran after the first play's check: no host was contacted, no lock, no report.
        assert 'TASK [grayrelease.canary.rollout' not in proc.stdout and 'UNREACHABLE' not in proc.stdout
        assert not (tmp_path / 'canary-reports').exists()
