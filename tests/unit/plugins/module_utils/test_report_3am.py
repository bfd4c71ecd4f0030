# -*- coding: utf-8 -*-
"""The report for the person who reads it at 3 am (issue 23 item 7): who ran
the run (and the AWX job), the artifact and the run's settings on the page;
p50 and p95; rollback bars with their phases; the verdict label never under a
bar; the reason as a short list, once, in words before statistics.

The reports come from whole runs through the engine (_rollout_recording).
The browser's picture of the labels is in
test_headless_chromium_draws_every_label_clear_of_the_bars at the end."""
from __future__ import annotations

import collections
from html.parser import HTMLParser
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _rollout_recording import RealisticFleet, record_run  # noqa: E402  pylint: disable=wrong-import-position
from test_engine import FakeFleet, run  # noqa: E402  pylint: disable=wrong-import-position
from test_report_html import near, png_pixels, rgb  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils import _progress as progress  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils import _report_html as report_html  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.report import run_origin  # noqa: E402

AWX_VARS = {'awx_job_id': 4711, 'awx_user_name': 'alice', 'awx_job_template_name': 'grayrelease canary rollout',
            'awx_workflow_job_id': 4710, 'awx_job_launch_type': 'workflow', 'tower_job_id': 4711,
            'canary_version': 'v2'}
LOCK = {'controller': 'ee-7f9c', 'run': '1a2b3c4d', 'controller_pid': 12}
SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'


def recorded(bad_canary=False):
    events, dummy = record_run(RealisticFleet(bad_canary=bad_canary))
    return json.loads(json.dumps(events[-1][1]['report']))


def with_run(doc, origin=None, **artifact):
    doc['run'] = origin or run_origin(AWX_VARS, {'AWX_HOST': 'https://awx.example.com', 'USER': 'runner'}, LOCK)
    doc['artifact'] = progress.artifact_of(dict(
        {'artifact': '/tmp/job/demoapp-v2.tar.gz', 'artifact_source': 'https://repo.example/demoapp-v2.tar.gz',
         'checksum': SHA, 'release_kind': 'tarball'}, **artifact))
    return doc


def svg_rects(svg):
    """(class, x0, y0, x1, y1) of every rect of the timeline."""
    out = []
    for match in re.finditer(r'<rect ([^>]*)>', svg):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
        x, y, w, h = (float(attrs[k]) for k in ('x', 'y', 'width', 'height'))
        out.append((attrs.get('class', ''), x, y, x + w, y + h))
    return out


# ---------------------------------------------------------------- who, what, with which settings

def test_an_awx_job_is_named_with_its_user_job_template_workflow_and_page():
    origin = run_origin(AWX_VARS, {'AWX_HOST': 'https://awx.example.com/', 'USER': 'runner'}, LOCK)
    assert origin == {'awx_job_id': 4711, 'awx_job_template': 'grayrelease canary rollout',
                      'awx_workflow_job_id': 4710, 'awx_launch_type': 'workflow', 'user': 'alice',
                      'awx_job_url': 'https://awx.example.com/#/jobs/playbook/4711/output',
                      'controller': 'ee-7f9c', 'run': '1a2b3c4d'}
    assert progress.origin_text(origin) == 'alice (AWX job 4711, template "grayrelease canary rollout", ' \
                                           'workflow job 4710)'
    # The older tower_* names, and the job id from the environment AWX sets.
    assert run_origin({'tower_job_id': 9, 'tower_user_name': 'bob'}, {}, {})['awx_job_id'] == 9
    assert run_origin({}, {'JOB_ID': '12', 'USER': 'awx'}, {})['awx_job_id'] == '12'
    # No AWX: the controller's user, host and the run's id.
    plain = run_origin({}, {'USER': 'ops'}, LOCK)
    assert plain == {'user': 'ops', 'controller': 'ee-7f9c', 'run': '1a2b3c4d'}
    assert progress.origin_text(plain) == 'ops on ee-7f9c, run 1a2b3c4d'
    # An AWX_HOST that is not a plain URL makes no link.
    assert 'awx_job_url' not in run_origin(AWX_VARS, {'AWX_HOST': 'javascript:alert(1)'}, {})


def test_the_page_and_report_md_name_who_ran_it_the_artifact_and_the_settings():
    doc = with_run(recorded())
    page = report_html.report_html(doc)
    assert '<td><b>run by</b></td><td>alice (AWX job 4711, template &quot;grayrelease canary rollout&quot;, ' \
           'workflow job 4710) <a class="awx-job" href="https://awx.example.com/#/jobs/playbook/4711/output">' in page
    assert ('<td><b>artifact</b></td><td>https://repo.example/demoapp-v2.tar.gz (sha256:%s, given), read by the '
            'controller</td>' % SHA) in page
    settings = page.split('<h2>Settings</h2>', 1)[1].split('</table>', 1)[0]
    for row in ('<td><b>steps</b></td><td>1, 25%, 50%, 100%</td>',
                '<td><b>out of rotation at most</b></td><td>25% (1 host at once)</td>',
                '<td><b>canary traffic</b></td><td>10%</td>',
                '<td><b>analysis</b></td><td>3 x 10.0 s per judged step</td>',
                '<td><b>thresholds</b></td><td>confidence 0.995, pass_score 95, marginal_score 75; critical: '
                'median 2x, error rate +5 points</td>',
                '<td><b>auto rollback</b></td><td>yes</td>'):
        assert row in settings, row
    markdown = engine.report_markdown(doc)
    assert '| run by | alice (AWX job 4711, template "grayrelease canary rollout", workflow job 4710) |' in markdown
    assert '| artifact | https://repo.example/demoapp-v2.tar.gz (sha256:%s, given), read by the controller |' \
        % SHA in markdown
    assert '| out of rotation at most | 25% (1 host at once) |' in markdown and '## Settings' in markdown


def test_a_container_release_shows_its_digest_and_no_checksum_is_said_so():
    doc = with_run(recorded(), artifact='', artifact_source='', checksum='', release_kind='container',
                   release={'kind': 'container', 'image': 'registry.example/demoapp:v2',
                            'digest': 'sha256:' + 'ab' * 32})
    assert progress.artifact_text(doc['artifact']) == (
        'registry.example/demoapp:v2 [container] (image sha256:%s), read by the controller' % ('ab' * 32))
    assert progress.artifact_text(progress.artifact_of({'artifact': '/srv/a.tar.gz', 'artifact_remote': True})) == \
        '/srv/a.tar.gz (no checksum given), read by every app host'


def test_an_awx_link_is_only_ever_a_plain_http_url():
    doc = with_run(recorded(), origin={'user': 'x', 'awx_job_id': 1,
                                       'awx_job_url': 'javascript:alert(1)//#/jobs/playbook/1/output'})
    page = report_html.report_html(doc)
    assert 'href=' not in page and 'AWX job 1' in page


def test_the_finish_writes_who_ran_it_into_report_json(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'action'))
    from test_rollout_state_action import call  # pylint: disable=import-outside-toplevel
    state = run(FakeFleet(), canary_report_dir=str(tmp_path))
    state['origin'] = run_origin(AWX_VARS, {}, LOCK)
    state['decision'] = None
    result = call(state, op='finish')
    written = json.loads((tmp_path / 'report.json').read_text())
    assert written['run'] == result['report']['run'] == dict(run_origin(AWX_VARS, {}, LOCK))
    assert written['artifact']['source'] and written['settings']['steps'] == [1, '25%', '50%', '100%']
    assert 'alice (AWX job 4711' in (tmp_path / 'report.html').read_text()


# ---------------------------------------------------------------- p50 and p95

def test_intervals_show_p50_and_p95_on_both_sides():
    doc = recorded()
    svg = report_html.timeline_svg(doc)
    for kind in ('latency', 'latency-p95'):
        for group in ('canary', 'baseline'):
            assert len(re.findall(r'class="interval-point %s %s"' % (kind, group), svg)) == 3, (kind, group)
    assert len(re.findall(r'<polyline class="series latency-p95 (canary|baseline)"[^>]*stroke-dasharray', svg)) == 2
    assert 'latency per interval: p50 (solid), p95 (dashed)' in svg
    probe = doc['steps'][0]['intervals'][0]['probe']
    line = progress.interval_line(1, 3, probe)
    assert 'p50 %s, p95 %s | baseline' % (progress.fmt_ms(probe['canary']['p50_ms']),
                                          progress.fmt_ms(probe['canary']['p95_ms'])) in line
    assert line.endswith('p95 %s' % progress.fmt_ms(probe['baseline']['p95_ms']))


# ---------------------------------------------------------------- rollback bars

def test_a_rollback_group_is_a_bar_of_its_phases_when_the_engine_timed_them():
    doc = recorded(bad_canary=True)
    record = doc['rollback'][0]
    start = record['offset']
    record['timings'] = {'drain': 0.8, 'switch': 1.4, 'health': 0.8, 'ready': 0.6}
    record['phase_offsets'] = {'drain': start, 'switch': start + 0.8, 'health': start + 2.2, 'ready': start + 3.0}
    svg = report_html.timeline_svg(doc)
    rects = svg_rects(svg)
    phases = [r for r in rects if 'rollback-phase' in r[0]]
    assert [r[0].split()[-1] for r in phases] == ['phase-drain', 'phase-switch', 'phase-health', 'phase-ready']
    # One after the other, inside the group's outline, on the group's row.
    assert all(a[3] <= b[1] + 1.01 for a, b in zip(phases, phases[1:]))
    outline = [r for r in rects if r[0] == 'rollback'][0]
    assert all(outline[1] - 0.01 <= r[1] and r[3] <= outline[3] + 1.01 and r[2] == outline[2] for r in phases)
    # Without timings (an older report.json): the plain bar.
    del record['timings'], record['phase_offsets']
    assert 'rollback-phase' not in report_html.timeline_svg(doc) and 'class="rollback"' in report_html.timeline_svg(doc)


def test_the_report_keeps_a_rollback_groups_phase_timings():
    events, dummy = record_run(RealisticFleet(bad_canary=True))
    state = [data for kind, data in events if kind == 'state' and data['rollback'].get('records')][-1]
    record = state['rollback']['records'][0]
    record['timings'] = {'drain': {'started': record['started'], 'seconds': 0.8},
                         'switch': {'started': record['started'] + 0.8, 'seconds': 1.4}}
    out = engine.report(state, str)['rollback'][0]
    assert out['timings'] == {'drain': 0.8, 'switch': 1.4}
    assert out['phase_offsets'] == {'drain': round(record['started'] - state['started'], 2),
                                    'switch': round(record['started'] + 0.8 - state['started'], 2)}


# ---------------------------------------------------------------- the labels

@pytest.mark.parametrize('bad_canary', [False, True])
def test_no_bar_is_drawn_under_a_verdict_or_decision_label(bad_canary):
    doc = recorded(bad_canary=bad_canary)
    svg = report_html.timeline_svg(doc)
    boxes = report_html.label_boxes(doc)
    assert [b[0] for b in boxes].count('decision') == 1 and 'verdict' in [b[0] for b in boxes]
    bars = [r for r in svg_rects(svg) if (r[0].split() or [''])[0] in ('phase', 'batch', 'rollback', 'interval-band')]
    assert bars
    for kind, text, x0, x1, top, bottom, dummy, dummy2 in boxes:
        assert 0 <= x0 < x1 <= report_html.WIDTH, (text, x0, x1)
        for rect in bars:
            clear = rect[3] <= x0 or rect[1] >= x1 or rect[4] <= top or rect[2] >= bottom
            assert clear, (text, rect)
        assert '>%s</text></g>' % text in svg
    # Nor does one label sit on another.
    for a in boxes:
        for b in boxes:
            if a is not b and a[4] == b[4]:
                assert a[3] <= b[2] or b[3] <= a[2], (a, b)


def test_labels_close_together_take_rows_of_their_own():
    doc = recorded()
    for step in doc['steps']:
        if step.get('judge'):
            # Every verdict at almost the same moment, and the run ending then too.
            step['judge']['seconds_to_verdict'] = 40 - float(step['offset']) + step['step'] * 0.5
    doc['seconds'] = 42
    boxes = report_html.label_boxes(doc)
    assert len(set(b[4] for b in boxes)) == report_html.LABEL_ROWS
    assert all(b[5] <= report_html.LABEL_TOP + report_html.LABEL_ROWS * report_html.LABEL_ROW for b in boxes)


# ---------------------------------------------------------------- the reason

def test_the_reason_is_a_short_list_in_words_before_statistics_printed_once():
    doc = recorded(bad_canary=True)
    assert doc['reasons'] == [
        'the canary failed its analysis (step 1, batch 1): verdict fail, score 25',
        '5xx responses through the balancer higher on the canary: 33.3% vs 0.0% on the baseline, past the critical '
        'limit (p<0.001; n 180 canary, 1620 baseline)',
        'failed probe requests higher on the canary: 38.3% vs 0.0% on the baseline, past the critical limit '
        '(p<0.001; n 60 canary, 300 baseline)']
    for item in doc['reasons'][1:]:
        # Words first: the statistics only in the closing brackets.
        words, statistics = item.rsplit(' (', 1)
        assert not re.search(r'p[<=]|\bn \d', words) and statistics.startswith('p')
    page = report_html.report_html(doc)
    why = page.index('<ul class="why" id="why">')
    assert why < page.index('<table>') < page.index('<h2>Timeline</h2>')
    for item in doc['reasons']:
        assert page.count(report_html._e(item)) == 1, item
    # The raw reason (the judge's statistics) is not said again, nor its step error.
    assert 'judged fail' not in page and '<h2>Errors</h2>' not in page
    markdown = engine.report_markdown(doc)
    assert markdown.index('## Why') < markdown.index('| decision |')
    assert markdown.count('past the critical limit') == 2 and '### Errors' not in markdown


def test_other_reasons_are_their_parts_bounded():
    reason = 'nothing was changed: ' + '; '.join('app%d is on v0 (expected v1; or v2)' % n for n in range(1, 9))
    items = progress.reason_items(reason)
    assert len(items) == progress.REASON_ITEMS
    assert items[0] == 'nothing was changed: app1 is on v0 (expected v1; or v2)'
    assert items[1] == 'app2 is on v0 (expected v1; or v2)'
    assert items[-1] == 'and 3 more (the whole reason is in report.json)'
    assert progress.reason_items('step 2, batch 3: drain failed on lb1: timeout') == [
        'step 2, batch 3: drain failed on lb1: timeout']
    assert progress.reason_items('') == []


def test_the_progress_view_says_who_what_and_the_settings_once_after_the_plan():
    events, dummy = record_run(RealisticFleet())
    for kind, data in events:
        if kind == 'state':
            data['origin'] = run_origin(AWX_VARS, {}, LOCK)
    view = progress.ProgressView()
    lines = [line for kind, data in events if kind == 'state' for line in view.update(data)]
    assert lines.count('run by alice (AWX job 4711, template "grayrelease canary rollout", workflow job 4710)') == 1
    artifact = [line for line in lines if line.startswith('artifact: ')]
    assert artifact == ['artifact: /tmp/v2.tar.gz (no checksum given), read by the controller']
    settings = [line for line in lines if line.startswith('settings: ')]
    assert settings == ['settings: steps 1, 25%, 50%, 100%; out of rotation at most 25% (1 host at once); '
                        'canary traffic 10%; analysis 3 x 10.0 s per judged step; thresholds confidence 0.995; '
                        'critical: median 2x, error rate +5 points; on marginal / inconclusive rollback / rollback']
    plan_end = max(i for i, line in enumerate(lines) if line.startswith('3 looks over'))
    assert lines.index(settings[0]) == plan_end + 3


# ---------------------------------------------------------------- in a browser

@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium is not installed (scripts/ensure-host-packages.sh)')
def test_headless_chromium_draws_every_label_clear_of_the_bars(tmp_path):
    """The timeline alone, as an SVG file, so that its pixels are the SVG's coordinates."""
    doc = recorded(bad_canary=True)
    svg = report_html.timeline_svg(doc)
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    page = tmp_path / 'timeline.svg'
    page.write_text(svg, encoding='utf-8')
    shot = tmp_path / 'timeline.png'
    run_ = subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                           '--user-data-dir=%s' % (tmp_path / 'profile'), '--screenshot=%s' % shot,
                           '--window-size=%d,%d' % (width, height), page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert run_.returncode == 0 and shot.exists(), run_.stderr[-2000:]
    dummy, dummy2, rows = png_pixels(str(shot))
    phase_colours = [rgb(c) for c in report_html.PHASE_COLOURS.values()]
    for kind, text, x0, x1, top, bottom, dummy3, colour in report_html.label_boxes(doc):
        box = [rows[y][x] for y in range(int(top), int(bottom)) for x in range(int(x0), int(x1))]
        inked = collections.Counter(near(p, rgb(colour), 40) for p in box)
        # The label's own colour is there (its text was drawn) and no bar's colour is.
        assert inked[True] > 3 * len(text), (text, inked)
        assert not [p for p in box if any(near(p, c, 6) for c in phase_colours)], text


# ---------------------------------------------------------------- issue 23 item 7, second part
#
# The settings under user routing, the AWX job from the environment, p50 and
# p95 of both sides per judged step, rollback groups timed by the engine, the
# reason in the terminal's summary, and the page's order.

def num(value):
    """A number as report.md writes it."""
    return '%.4g' % value if isinstance(value, float) else str(value)


ROUTING = {'key': {'cookie': 'uid'}, 'opt_in': [{'name': 'staff', 'header': {'X-Canary': '1'}}],
           'steps': [{'group': 'staff'}, {'users': '5%'}, '50%', '100%']}


def test_with_user_routing_the_settings_name_its_steps_not_a_traffic_percent():
    routing = progress.routing_of({'backend': 'shop', 'routing': dict(ROUTING)})
    assert routing == {'key': 'cookie uid', 'keyless': 'assign', 'canary_backend': 'shop_canary',
                       'steps': [{'groups': ['staff'], 'percent': 0.0}, {'groups': ['staff'], 'percent': 5.0},
                                 {'groups': ['staff'], 'percent': 50.0}, {'groups': ['staff'], 'percent': 100.0}]}
    text = 'by user (cookie uid, keyless assign): 1. staff; 2. staff + 5% of users; 3. staff + 50% of users; ' \
        '4. staff + 100% of users'
    # From the engine's settings (the user's canary_routing) and from report.json's (its summary): the same row.
    for settings in ({'routing': dict(ROUTING), 'backend': 'shop', 'traffic_percent': 10},
                     {'routing': routing, 'traffic_percent': 10}):
        assert dict(progress.settings_items(settings))['canary traffic'] == text
    assert dict(progress.settings_items({'traffic_percent': 10}))['canary traffic'] == '10%'
    assert progress.routing_of({'routing': {}}) is None and progress.routing_of({}) is None


def test_report_json_keeps_the_routing_summary_and_report_md_and_the_page_show_it():
    doc = recorded()
    assert 'routing' in doc['settings'] and doc['settings']['routing'] is None
    doc['settings']['routing'] = progress.routing_of({'backend': 'demoapp', 'routing': dict(ROUTING)})
    markdown = engine.report_markdown(doc)
    assert '| canary traffic | by user (cookie uid, keyless assign): 1. staff; 2. staff + 5% of users; ' in markdown
    assert '<td><b>canary traffic</b></td><td>by user (cookie uid, keyless assign): 1. staff; ' \
        in report_html.report_html(doc)


def test_the_awx_job_id_comes_from_the_environment_too_and_the_lock_names_the_user():
    assert run_origin({}, {'AWX_JOB_ID': '77', 'USER': 'runner'}, {})['awx_job_id'] == '77'
    assert run_origin({}, {'TOWER_JOB_ID': '78'}, {})['awx_job_id'] == '78'
    # The job's extra vars win over the environment.
    assert run_origin({'awx_job_id': 5}, {'AWX_JOB_ID': '77', 'JOB_ID': '76'}, {})['awx_job_id'] == 5
    assert progress.origin_text(run_origin({}, {'AWX_JOB_ID': '77', 'USER': 'runner'}, LOCK)) == \
        'runner (AWX job 77)'
    # A state without the origin (an older run's): the user from the lock's owner, the run from its identity.
    events, dummy = record_run(RealisticFleet())
    state = [data for kind, data in events if kind == 'state'][-1]
    state.pop('origin', None)
    state['lock_owner'], state['lock_info'] = 'ops@ctl-1 pid 42 run 1a2b3c4d', dict(LOCK)
    assert engine.report(state, str)['run'] == {'user': 'ops', 'controller': 'ee-7f9c', 'run': '1a2b3c4d'}


def test_each_judged_step_has_p50_and_p95_of_both_sides_over_its_analysis():
    doc = recorded()
    judged = [s for s in doc['steps'] if s.get('judge')]
    assert [s['step'] for s in judged] == [1, 2, 3]
    for step in judged:
        probe = step['latency']['probe_latency_ms']
        assert probe['source'] == 'probe'
        for side in ('canary', 'baseline'):
            item = probe[side]
            assert item['count'] >= 20 and 0 < item['p50_ms'] <= item['p95_ms']
        # p50 is the judge's median of the same samples.
        metric = step['judge']['metrics']['probe_latency_ms']
        assert probe['canary']['p50_ms'] == round(metric['canary'], 2)
        assert probe['baseline']['p50_ms'] == round(metric['baseline'], 2)
    # Nearest rank, the median as the judge takes it; other latency metrics (the log's, Prometheus's) too.
    summary = progress.latency_summary([
        {'name': 'probe_latency_ms', 'kind': 'samples', 'source': 'probe', 'canary': list(range(1, 21)),
         'baseline': [5.0] * 20},
        {'name': 'traffic_latency_ms', 'kind': 'samples', 'source': 'haproxy_log', 'canary': [], 'baseline': [3, 4]},
        {'name': 'http_5xx_ratio', 'kind': 'ratio', 'canary': {'errors': 0, 'total': 9}},
        {'name': 'queue_depth', 'kind': 'samples', 'canary': [1], 'baseline': [2]}])
    assert summary == {
        'probe_latency_ms': {'source': 'probe', 'canary': {'count': 20, 'p50_ms': 10.5, 'p95_ms': 19.0},
                             'baseline': {'count': 20, 'p50_ms': 5.0, 'p95_ms': 5.0}},
        'traffic_latency_ms': {'source': 'haproxy_log', 'canary': {'count': 0, 'p50_ms': None, 'p95_ms': None},
                               'baseline': {'count': 2, 'p50_ms': 3.5, 'p95_ms': 4.0}}}
    assert [r['label'] for r in progress.latency_items(summary)] == ['probes of the sample URL',
                                                                     'real requests (HAProxy log, Tr)']


def test_report_md_the_page_and_the_progress_view_show_p50_and_p95_per_judged_step():
    doc = recorded()
    markdown = engine.report_markdown(doc)
    page = report_html.report_html(doc)
    for step in (1, 2, 3):
        probe = doc['steps'][step - 1]['latency']['probe_latency_ms']
        row = '| probes of the sample URL | %s ms / %s ms | %s ms / %s ms | %d / %d |' % (
            num(probe['canary']['p50_ms']), num(probe['canary']['p95_ms']),
            num(probe['baseline']['p50_ms']), num(probe['baseline']['p95_ms']),
            probe['canary']['count'], probe['baseline']['count'])
        judgement = markdown.split('### Canary judgement (step %d)' % step, 1)[1].split('\n### ', 1)[0]
        assert '#### Latency over the analysis (p50 / p95)' in judgement and row in judgement, row
        # On the page: after the step's judgement, its own table.
        heading = '<h2 id="latency-step-%d">Latency over the analysis (step %d): p50 and p95</h2>' % (step, step)
        assert page.index('<h2>Canary judgement (step %d)' % step) < page.index(heading)
        table = page.split(heading, 1)[1].split('</table>', 1)[0]
        assert '<td>probes of the sample URL</td><td class="num">%s</td><td class="num">%s</td>' % (
            progress.fmt_ms(probe['canary']['p50_ms']), progress.fmt_ms(probe['canary']['p95_ms'])) in table
    first = doc['steps'][0]['latency']['probe_latency_ms']
    assert '<td><b>canary latency, probes of the sample URL</b></td><td>p50 %s, p95 %s (baseline p50 %s, p95 %s)' % (
        progress.fmt_ms(first['canary']['p50_ms']), progress.fmt_ms(first['canary']['p95_ms']),
        progress.fmt_ms(first['baseline']['p50_ms']), progress.fmt_ms(first['baseline']['p95_ms'])) in page
    events, dummy = record_run(RealisticFleet())
    view = progress.ProgressView()
    lines = [line for kind, data in events if kind == 'state' for line in view.update(data)]
    latency = [line for line in lines if 'latency (probes of the sample URL)' in line]
    assert [line.split('latency')[0] for line in latency] == ['', 'step 2 ', 'step 3 ']
    assert lines.index(latency[0]) == lines.index('verdict: pass, score 100 (score 100 reaches pass_score 95)') + 1
    assert re.match(r'latency \(probes of the sample URL\): canary p50 \d+\.\d ms, p95 \d+\.\d ms \| '
                    r'baseline p50 \d+\.\d ms, p95 \d+\.\d ms\Z', latency[0])


def test_the_engine_times_each_rollback_group_by_phase_and_the_page_draws_them():
    doc = recorded(bad_canary=True)
    record = doc['rollback'][0]
    # Timed by the engine as its acts came back (no timings put in by hand).
    assert list(record['timings']) == ['drain', 'switch', 'health', 'ready']
    assert all(record['timings'][p] > 0 for p in record['timings'])
    offsets = [record['phase_offsets'][p] for p in ('drain', 'switch', 'health', 'ready')]
    assert offsets[0] == record['offset'] and offsets == sorted(offsets)
    for before, after in zip(('drain', 'switch', 'health'), ('switch', 'health', 'ready')):
        assert abs(record['phase_offsets'][before] + record['timings'][before] - record['phase_offsets'][after]) < 0.02
    svg = report_html.timeline_svg(doc)
    phases = [r for r in svg_rects(svg) if 'rollback-phase' in r[0]]
    assert [r[0].split()[-1] for r in phases] == ['phase-drain', 'phase-switch', 'phase-health', 'phase-ready']
    markdown = engine.report_markdown(doc)
    assert '## Rollback' in markdown and '| 1 | app1 | %s | %s | %s | %s | %s |' % (
        record['started'], num(record['timings']['drain']), num(record['timings']['switch']),
        num(record['timings']['health']), num(record['timings']['ready'])) in markdown
    page = report_html.report_html(doc)
    rollback = page.split('<h2 id="rollback">Rollback</h2>', 1)[1].split('</table>', 1)[0]
    assert '<td>app1</td>' in rollback and progress.fmt_seconds(record['timings']['switch']) in rollback


def test_the_page_reads_in_order_why_who_timeline_settings_batches_rollback_judgement_latency_hosts():
    doc = with_run(recorded(bad_canary=True))
    page = report_html.report_html(doc)
    marks = ['<ul class="why" id="why">', '<td><b>run by</b></td>', '<td><b>artifact</b></td>',
             '<td><b>canary latency, probes of the sample URL</b></td>', '<h2>Timeline</h2>', '<g id="verdict"',
             '<h2>Settings</h2>', '<h2>Batches</h2>', '<h2 id="rollback">Rollback</h2>',
             '<h2>Canary judgement (step 1)', '<h2 id="latency-step-1">', '<h2>Hosts</h2>']
    found = [page.find(m) for m in marks]
    assert -1 not in found and found == sorted(found), dict(zip(marks, found))
    assert page.index('<h2>Timeline</h2>') < page.index('<g id="decision"') < page.index('<h2>Settings</h2>')
    # The verdict that stopped the run is explained once, in the list: the summary row points there.
    assert '<td><b>canary verdict</b></td><td>fail, score 25 (the reasons above)</td>' in page
    assert page.count('past the critical limit') == 2 and 'critical threshold reached' not in page.partition(
        '<h2>Timeline</h2>')[0]


def test_the_summary_lines_give_the_reason_as_the_same_short_list_once():
    doc = recorded(bad_canary=True)
    lines = engine.summary_lines(doc, '/r/report.md')
    assert lines[1] == 'reason: ' + doc['reasons'][0]
    assert lines[2:4] == ['  - ' + item for item in doc['reasons'][1:]]
    for item in doc['reasons']:
        assert len([line for line in lines if item in line]) == 1, item
    # A promoted run has no reason line.
    assert not [line for line in engine.summary_lines(recorded(), '/r/report.md') if line.startswith('reason')]
    markdown = engine.report_markdown(doc)
    for item in doc['reasons']:
        assert markdown.count(engine.md_text(item, starts_line=True)) == 1, item


def _chromium(tmp_path, page, *args):
    run_ = subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                           '--user-data-dir=%s' % (tmp_path / 'profile')] + list(args) + [page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert run_.returncode == 0, run_.stderr[-2000:]
    return run_.stdout


class _Dom(HTMLParser):
    """The page as the browser built it: every element's tag, id and class, and every text, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.items = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.items.append(('<%s>' % tag, attrs.get('id') or '', attrs.get('class') or ''))

    def handle_data(self, data):
        if data.strip():
            self.items.append(('text', ' '.join(data.split()), ''))


@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium is not installed (scripts/ensure-host-packages.sh)')
def test_headless_chromium_draws_the_engines_rollback_phases_and_reads_the_page_in_order(tmp_path):
    """The rollback group's phase bars (timed by the engine) in their colours on the timeline; the whole page as
    Chromium parsed it (--dump-dom): the reason list first and once, who ran it, the artifact, the latency, the
    settings, the rollback and latency tables in that order; its picture: the reason's red first line above the
    summary table."""
    doc = with_run(recorded(bad_canary=True))
    svg = report_html.timeline_svg(doc)
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    (tmp_path / 'timeline.svg').write_text(svg, encoding='utf-8')
    _chromium(tmp_path, tmp_path / 'timeline.svg', '--screenshot=%s' % (tmp_path / 'timeline.png'),
              '--window-size=%d,%d' % (width, height))
    dummy, dummy2, rows = png_pixels(str(tmp_path / 'timeline.png'))
    phases = [r for r in svg_rects(svg) if 'rollback-phase' in r[0]]
    assert len(phases) == 4
    for kind, x0, y0, x1, y1 in phases:
        colour = rgb(report_html.PHASE_COLOURS[kind.split('phase-')[-1]])
        inside = [rows[y][x] for y in range(int(y0) + 3, int(y1) - 2) for x in range(int(x0) + 1, int(x1) - 1)]
        # Drawn at 0.85 opacity over the light background: its colour, a little lighter.
        assert inside and sum(near(p, colour, 40) for p in inside) > 0.8 * len(inside), (kind, len(inside))

    page = tmp_path / 'report.html'
    page.write_text(report_html.report_html(doc), encoding='utf-8')
    parser = _Dom()
    parser.feed(_chromium(tmp_path, page, '--dump-dom'))
    items = parser.items
    texts = [text for tag, text, dummy in items if tag == 'text']
    why = items.index(('<ul>', 'why', 'why'))
    lis = [n for n, item in enumerate(items) if item[0] == '<li>' and n > why][:3]
    assert [items[n + 1][1] for n in lis] == doc['reasons']
    for item in doc['reasons']:
        assert texts.count(item) == 1, item
    order = ['the canary failed its analysis (step 1, batch 1): verdict fail, score 25', 'run by', 'artifact',
             'canary latency, probes of the sample URL', 'Timeline', 'Settings', 'Batches', 'Rollback',
             'Canary judgement (step 1): fail, score 25', 'Latency over the analysis (step 1): p50 and p95', 'Hosts']
    at = [texts.index(t) for t in order]
    assert at == sorted(at), dict(zip(order, at))
    assert texts[texts.index('run by') + 1].startswith('alice (AWX job 4711, template "grayrelease canary rollout"')
    assert texts[texts.index('artifact') + 1] == 'https://repo.example/demoapp-v2.tar.gz (sha256:%s, given), read ' \
                                                 'by the controller' % SHA
    assert texts[texts.index('canary traffic') + 1] == '10%'
    assert texts[texts.index('thresholds') + 1].startswith('confidence 0.995, pass_score 95')
    latency = texts[texts.index('Latency over the analysis (step 1): p50 and p95') + 1:]
    assert latency[:8] == ['source', 'canary p50', 'canary p95', 'baseline p50', 'baseline p95', 'n canary',
                           'n baseline', 'probes of the sample URL']
    assert all(t.endswith(' ms') for t in latency[8:12]) and latency[12:14] == ['60', '300']

    _chromium(tmp_path, page, '--screenshot=%s' % (tmp_path / 'report.png'), '--window-size=1100,700')
    dummy, dummy2, rows = png_pixels(str(tmp_path / 'report.png'))
    red, table = rgb('#c0302a'), rgb('#cccccc')

    def first(match):
        return next(y for y, row in enumerate(rows) if sum(match(p) for p in row) > 50)

    # The reason's first item (bold red) under the heading, before the summary table's first border.
    assert first(lambda p: near(p, red, 30)) < first(lambda p: near(p, table, 4))


def test_a_routed_runs_report_names_the_user_routing_and_times_its_rollback():
    from test_engine_routing import RoutedFleet, routed_run  # pylint: disable=import-outside-toplevel
    fleet = RoutedFleet()
    fleet.bad_canary = True
    state = routed_run(fleet)
    doc = json.loads(json.dumps(engine.report(state, str)))
    routing = doc['settings']['routing']
    assert routing['key'] and [s['percent'] for s in routing['steps']] == sorted(s['percent'] for s in routing['steps'])
    row = dict(progress.settings_items(doc['settings']))['canary traffic']
    assert row.startswith('by user (%s' % routing['key']) and '%' in row
    assert '| canary traffic | %s |' % engine.md_text(row) in engine.report_markdown(doc)
    # The routed rollback's acts are timed too.
    assert doc['rollback'] and all(r.get('timings') for r in doc['rollback'])
