# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.md and report.html with text from users and hosts in them (issue 19,
item 11): host names, versions, reasons, hosts' error messages and metric
names are shown as the text they are, never as table cells of their own,
links, images, HTML or formatting.

report.md is rendered by a CommonMark parser (markdown-it-py, with GFM
tables, strikethrough and raw HTML on, as a forge renders it) and read back:
every outside text must come back as exactly its own text, in its own cell.
"""

from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engine import FakeFleet, run  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils._engine import api as engine  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._report_html import report_html  # noqa: E402

MARKDOWN = MarkdownIt('commonmark', {'html': True}).enable('table').enable('strikethrough')
# One of each thing Markdown or HTML would make of text, on several lines.
HOSTILE = ('x | y\n| z | `code` [click](http://evil.example/a) ![i](http://evil.example/i.png) '
           '<img src=x onerror=alert(1)> <script>alert(1)</script> <http://evil.example> &lt;b&gt; '
           '**bold** _em_ ~~gone~~ # h \\| \x1b[31m\x00')
LINE_STARTS = ['- item', '+ item', '1. one', '3) three', '> quote', '# heading', '---', '===', '* star', '[ ] task',
               '[x]: http://evil.example', '    code', '```', '~~~', '<div>', '<!-- c -->', '___', '- - -']


class Cells(HTMLParser):
    """The text of each td / th / li / p / h1-h4, and every tag seen."""

    BLOCKS = ('td', 'th', 'li', 'p', 'h1', 'h2', 'h3', 'h4')

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts, self.tags, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in self.BLOCKS:
            self._open = []

    def handle_endtag(self, tag):
        if tag in self.BLOCKS and self._open is not None:
            self.texts.append(''.join(self._open))
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open.append(data)


def rendered(markdown):
    parser = Cells()
    parser.feed(MARKDOWN.render(markdown))
    return parser


def contexts(text):
    """md_text(text) where report.md puts outside text: a table cell, a list item, a paragraph."""
    return {
        'cell': '| a | b |\n|---|---|\n| %s | end |\n' % engine.md_text(text),
        'list item': '### Notes\n\n- %s\n' % engine.md_text(text, starts_line=True),
        'paragraph': '### Canary judgement\n\n%s\n' % engine.md_text(text, starts_line=True),
    }


def one_line(text):
    """What any outside text is shown as: on one line, control characters as U+FFFD."""
    return re.sub('[\x00-\x08\x0e-\x1f\x7f-\x9f]', '\ufffd', ' '.join(str(text).split()))


@pytest.mark.parametrize('text', [HOSTILE] + LINE_STARTS, ids=repr)
def test_outside_text_renders_as_itself_in_every_place_report_md_puts_it(text):
    for where, markdown in contexts(text).items():
        got = rendered(markdown)
        assert one_line(text) in got.texts, (where, markdown, got.texts)
        assert set(got.tags) <= {'table', 'thead', 'tbody', 'tr', 'th', 'td', 'ul', 'li', 'h3', 'p'}, (where, got.tags)
        if where == 'cell':
            assert got.texts[-1] == 'end'  # nothing spilled into a cell of its own


# Text made of what Markdown reads as syntax, and a little else.
SYNTAX = st.text(alphabet=list('|\\`*_[]()<>!&#;~-+=.:/ \n\t\r0123456789aZé\x00\x1b\x85\u00a0'), max_size=40)


@settings(max_examples=400, deadline=None)
@given(SYNTAX)
def test_any_text_round_trips_through_md_text(text):
    for where, markdown in contexts(text).items():
        got = rendered(markdown)
        expected = one_line(text)
        if not expected:
            continue  # an empty cell or item: nothing to find
        assert expected in got.texts, (where, repr(markdown), got.texts)


def test_md_text_leaves_plain_names_and_numbers_as_they_are():
    for text in ('app-1.example.com', 'fe_demoapp', 'error_rate', 'v2.1.0+build.7', 'p<0.001 < 0.005', '1.2.3',
                 'median 2.5x >= 2x', 'tolerance 50%, critical 2x'):
        assert engine.md_text(text) == text


def hostile_report():
    """A promoted run's report whose every outside text is HOSTILE (plus what it was)."""
    doc = json.loads(json.dumps(engine.report(run(FakeFleet()), str)))
    host = 'app1 ' + HOSTILE
    doc['backend'] += HOSTILE
    doc['version'] += HOSTILE
    doc['previous_version'] += HOSTILE
    doc['reason'] = 'reason ' + HOSTILE
    doc['hosts'] = dict(doc['hosts'], **{host: 'v2 ' + HOSTILE})
    doc['rolled_back'] = doc['repaired'] = doc['maintenance'] = doc['done_before'] = [host]
    doc['lost'] = {host: 'unreachable ' + HOSTILE}
    doc['lost_may_hold'] = []
    doc['plan_steps'][0][0].append(host)
    doc['notes'] = ['note ' + HOSTILE] + LINE_STARTS
    doc['rollback_errors'] = ['rollback ' + HOSTILE]
    step = doc['steps'][0]
    step['errors'] = ['error ' + HOSTILE]
    step['batches'][0]['hosts'].append(host)
    verdict = step['judge']
    name, metric = sorted(verdict['metrics'].items())[0]
    verdict['metrics'][name + HOSTILE] = dict(metric, rule='rule ' + HOSTILE, effect_text='effect ' + HOSTILE,
                                              p_text='<0.001 ' + HOSTILE, classification='pass ' + HOSTILE)
    verdict['reason'] = 'judged ' + HOSTILE
    step['traffic'] = {'app1' + HOSTILE: {
        'role': 'canary ' + HOSTILE, 'requests': 3, 'errors_5xx': 0, 'response_ms': {'p50': 1, 'p95': 2, 'max': 3},
        'total_ms': {'p50': 1}, 'response_ms_samples': [1, HOSTILE]}}
    return doc, host


def test_report_md_shows_every_outside_text_as_itself_in_its_own_cell():
    doc, host = hostile_report()
    markdown = engine.report_markdown(doc)
    got = rendered(markdown)
    # Only what report.md is made of: no link, image, HTML or formatting from the text.
    assert set(got.tags) <= {'h1', 'h2', 'h3', 'h4', 'p', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'ul', 'ol',
                             'li', 'strong'}, got.tags
    assert got.tags.count('strong') == markdown.count('| **')  # the decision and FAILED results only
    # The reason is a list of its '; '-separated parts (HOSTILE's '&gt; ' has one), each its own item.
    assert [one_line(t) for t in ('reason ' + HOSTILE).split('; ')] == [t for t in got.texts if t.startswith(
        one_line('reason ' + HOSTILE)[:20]) or t == one_line(HOSTILE.split('; ')[1])]
    for text in ('error ' + HOSTILE, 'rollback ' + HOSTILE, 'note ' + HOSTILE,
                 one_line(host), 'v2 ' + HOSTILE, 'rule ' + HOSTILE, 'effect ' + HOSTILE, '<0.001 ' + HOSTILE,
                 'pass ' + HOSTILE, 'canary ' + HOSTILE, 'decided by score: judged ' + HOSTILE):
        assert one_line(text) in got.texts, text
    notes = [one_line(t) for t in LINE_STARTS]
    assert [t for t in got.texts if t in notes] == notes
    # The hosts table: each row two cells, the host's and its version's.
    hosts_table = markdown.split('## Hosts', 1)[1]
    cells = rendered(hosts_table).texts
    assert len(cells) == 2 * (1 + len(doc['hosts']))
    assert (one_line(host), one_line('v2 ' + HOSTILE)) in list(zip(cells[::2], cells[1::2]))


def test_the_summary_keeps_one_line_per_fact():
    doc, host = hostile_report()
    lines = engine.summary_lines(doc, '/r/report.md')
    # The reason is a short list: its first part on the reason line, the others one line each.
    parts = [one_line(t) for t in ('reason ' + HOSTILE).split('; ')]
    assert len(parts) == 2 and len(lines) == 3 + len(doc['hosts']) + len(parts) - 1
    assert all('\n' not in line and '\x1b' not in line for line in lines)
    assert lines[1:3] == ['reason: ' + parts[0], '  - ' + parts[1]]


class Page(HTMLParser):
    """Every tag and attribute name of a page, and its text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.text = set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, dummy in attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_escapes_everything_it_embeds():
    doc, host = hostile_report()
    for step in doc['steps']:
        for interval in step.get('intervals') or []:
            interval['interval'] = HOSTILE
        for batch in step['batches']:
            batch['batch'] = HOSTILE
    page = Page()
    page.feed(report_html(doc))
    # The page's own elements and attributes only: nothing the text opened, no script, link or handler.
    assert page.tags <= {'html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'span', 'table', 'tr', 'th',
                         'td', 'b', 'ul', 'li', 'svg', 'line', 'text', 'rect', 'circle', 'polyline', 'g'}, page.tags
    assert not [a for a in page.attributes if a.startswith('on') or a in ('href', 'src', 'xlink:href')]
    # The text is all there, as text.
    text = ''.join(page.text)
    for shown in ('reason ' + HOSTILE).split('; ') + [host, 'v2 ' + HOSTILE, 'error ' + HOSTILE, 'note ' + HOSTILE]:
        assert shown in text, shown
