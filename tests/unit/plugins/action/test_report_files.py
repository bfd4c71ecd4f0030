# -*- coding: utf-8 -*-
"""The coordinator's report files (issue 19, item 11): written through a fresh
temporary file, so a symlink planted in the report directory is never
followed; every run keeps its own copy under runs/ beside the latest at the
top of canary_report_dir, so runs sharing the directory lose no report; the
short report of an internal error does the same and escapes the error."""
from __future__ import annotations

import copy
import json
import os
import stat
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils'))

from test_engine import FakeFleet, run  # noqa: E402  pylint: disable=wrong-import-position
from test_rollout_state_action import call  # noqa: E402  pylint: disable=wrong-import-position

from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.action import rollout_state  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine  # noqa: E402

NAMES = ('report.json', 'report.md', 'report.html')


def finished(reports, version='v2', started=None, run_id='aaaa0001'):
    state = copy.deepcopy(run(FakeFleet(), canary_report_dir=str(reports)))
    state['settings']['version'] = version
    state['lock_info']['run'] = run_id
    if started is not None:
        state['started'] = started
    return state


def only_files(directory):
    return sorted(os.listdir(directory))


def test_symlinks_planted_in_the_report_directory_are_never_followed(tmp_path):
    reports = tmp_path / 'reports'
    reports.mkdir()
    victims = {}
    for name in NAMES:
        # The old fixed temporary names, and the report names themselves, pointing outside.
        for planted in ('.%s.tmp' % name, name):
            victim = tmp_path / ('victim-' + planted.strip('.'))
            victim.write_text('precious\n')
            os.symlink(str(victim), str(reports / planted))
            victims[victim] = planted
    result = call(finished(reports), op='finish')
    for victim in victims:
        assert victim.read_text() == 'precious\n', victims[victim]
    for name in NAMES:
        assert not (reports / name).is_symlink() and (reports / name).is_file()
    assert json.loads((reports / 'report.json').read_text())['decision'] == 'promoted'
    assert result['report_path'] == str(reports / 'report.json')
    # What was planted under the old temporary names is left as it was; nothing of ours is left over.
    assert [n for n in only_files(reports) if n.endswith('.tmp')] == sorted('.%s.tmp' % n for n in NAMES)
    assert all(os.path.islink(str(reports / ('.%s.tmp' % n))) for n in NAMES)


def test_the_report_files_are_readable_as_before_not_private_to_the_owner(tmp_path):
    previous = os.umask(0o022)
    try:
        call(finished(tmp_path), op='finish')
    finally:
        os.umask(previous)
    for name in NAMES:
        assert stat.S_IMODE(os.stat(str(tmp_path / name)).st_mode) == 0o644


def test_runs_sharing_the_directory_each_keep_their_report_and_the_latest_is_at_the_top(tmp_path):
    first = call(finished(tmp_path, version='v2', started=1_800_000_000.0, run_id='aaaa0001'), op='finish')
    second = call(finished(tmp_path, version='v3', started=1_800_003_600.0, run_id='bbbb0002'), op='finish')
    # The public contract: the latest run's report at the top of canary_report_dir.
    assert json.loads((tmp_path / 'report.json').read_text())['version'] == 'v3'
    runs = tmp_path / 'runs'
    assert only_files(runs) == ['20270115T080000Z-v2-aaaa0001', '20270115T090000Z-v3-bbbb0002']
    for result, version in ((first, 'v2'), (second, 'v3')):
        directory = result['report_run_dir']
        assert os.path.dirname(directory) == str(runs)
        assert only_files(directory) == sorted(NAMES)
        assert json.loads(open(os.path.join(directory, 'report.json'), encoding='utf-8').read())['version'] == version
        assert result['summary'][-1] == "this run's copy: %s" % directory
    assert (runs / only_files(runs)[1] / 'report.md').read_text() == (tmp_path / 'report.md').read_text()


def test_only_the_newest_runs_are_kept_and_nothing_else_is_touched(tmp_path, monkeypatch):
    monkeypatch.setattr(rollout_state, 'KEEP_RUNS', 2)
    runs = tmp_path / 'runs'
    runs.mkdir()
    # Not a run's directory: left alone, as is a link named like one (never followed).
    (runs / 'notes.txt').write_text('mine')
    victim = tmp_path / 'elsewhere'
    victim.mkdir()
    (victim / 'keep.txt').write_text('keep')
    os.symlink(str(victim), str(runs / '20000101T000000Z-v0-linklink'))
    for hour, version in enumerate(('v2', 'v3', 'v4')):
        call(finished(tmp_path, version=version, started=1_800_000_000.0 + 3600 * hour, run_id='aaaa000%d' % hour),
             op='finish')
    assert only_files(runs) == ['20000101T000000Z-v0-linklink', '20270115T090000Z-v3-aaaa0001',
                                '20270115T100000Z-v4-aaaa0002', 'notes.txt']
    assert (victim / 'keep.txt').read_text() == 'keep'


def test_a_version_makes_one_path_component_of_the_run_directory(tmp_path):
    result = call(finished(tmp_path, version='../../x/y z', run_id='cccc0003'), op='finish')
    name = os.path.basename(result['report_run_dir'])
    assert name.endswith('-.._.._x_y_z-cccc0003')
    assert os.path.dirname(result['report_run_dir']) == str(tmp_path / 'runs')
    assert only_files(tmp_path / 'runs') == [name]


def test_the_short_report_of_an_internal_error_is_kept_per_run_too_and_escaped(monkeypatch, tmp_path):
    state = finished(tmp_path)
    state['decision'] = None

    def broken(state, iso):
        raise KeyError('<img src=x onerror=alert(1)> | [link](http://evil.example)')

    monkeypatch.setattr(engine, 'report', broken)
    with pytest.raises(AnsibleActionFail) as failure:
        call(state, op='finish')
    assert 'a short report is in %s' % (tmp_path / 'report.json') in str(failure.value)
    (run_dir,) = [tmp_path / 'runs' / name for name in only_files(tmp_path / 'runs')]
    for name in NAMES:
        assert (run_dir / name).read_text() == (tmp_path / name).read_text()
    markdown = (tmp_path / 'report.md').read_text()
    assert '<img' not in markdown and '[link]' not in markdown
    assert '&lt;img src=x onerror=alert(1)> \\| \\[link\\](http://evil.example)' in markdown
    assert '<img' not in (tmp_path / 'report.html').read_text()


def test_a_report_directory_that_cannot_be_written_is_named_not_raised(tmp_path):
    blocker = tmp_path / 'reports'
    blocker.write_text('a file where the directory should be\n')
    result = call(finished(blocker), op='finish')
    assert result['report_error'].startswith('could not write the report in %s: ' % blocker)
    assert not any("this run's copy" in line for line in result['summary'])
