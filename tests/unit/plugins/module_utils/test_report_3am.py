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

from ansible_collections.grayrelease.canary.plugins.module_utils import _engine as engine  # noqa: E402
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
