# -*- coding: utf-8 -*-
"""report.html (plugins/module_utils/_report_html.py): its elements, and a real browser's picture of it.

The reports come from whole runs through the engine (_rollout_recording),
one promoted and one whose canary fails and is rolled back. Headless
Chromium (installed by scripts/ensure-host-packages.sh) renders the page to
a PNG, decoded here with zlib: the picture must have the window's size,
be far from blank, and show the colours of the timeline's batches, the
canary's points and the decision marker.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _rollout_recording import RealisticFleet, record_run  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.grayrelease.canary.plugins.module_utils import _report_html as report_html  # noqa: E402

WINDOW = (1100, 900)


def report(bad_canary=False):
    events, dummy = record_run(RealisticFleet(bad_canary=bad_canary))
    # Through JSON, as report.json is written and read back.
    return json.loads(json.dumps(events[-1][1]['report']))


def test_the_page_is_self_contained_with_a_timeline_of_every_batch_interval_and_the_decision():
    doc = report()
    page = report_html.report_html(doc)
    assert page.startswith('<!DOCTYPE html>') and page.count('<svg') == 1
    # Nothing fetched, nothing run: inline CSS and SVG only.
    assert not re.search(r'<script|<link|src=|@import|url\(', page)
    assert len(re.findall(r'class="batch batch-ok"', page)) == 6
    for phase in ('drain', 'switch', 'health', 'ready'):
        assert len(re.findall(r'class="phase phase-%s"' % phase, page)) == 6
    # Steps 1, 2 and 3 are judged (the last leaves no baseline).
    assert len(re.findall(r'class="phase phase-analysis"', page)) == 3
    for kind in ('errors', 'latency'):
        for group in ('canary', 'baseline'):
            assert len(re.findall(r'class="interval-point %s %s"' % (kind, group), page)) == 3
    assert len(re.findall(r'class="interval-band"', page)) == 6
    assert 'class="traffic-set"' in page and 'class="traffic-measured"' in page
    assert re.search(r'<g id="verdict" class="verdict-marker">.*verdict: pass, score 100</text>', page)
    assert re.search(r'<g id="decision" class="decision-marker">.*>promoted</text></g>', page)
    assert 'id="decision-badge" style="background:#2e8b3a">PROMOTED<' in page


def test_numbers_are_rounded_for_reading_and_text_is_escaped():
    doc = report(bad_canary=True)
    raw = json.dumps(doc)
    # The report's data keeps full precision; the page does not show it.
    assert re.search(r'\d\.\d{10,}', raw)
    page = report_html.report_html(doc)
    shown = re.sub(r'<svg.*?</svg>', '', page, flags=re.S)
    # At most 3 significant digits (0.00167, never 0.0016666666666666668).
    assert not re.search(r'\d\.0*[1-9]\d{3,}', re.sub(r'<[^>]+>', ' ', shown))
    assert re.search(r'<td class="num">(&lt;0\.001|\d\.\d\de-\d+)</td>', page)
    # Free text (reasons, errors) is escaped, never markup.
    doc['reasons'][-1] += ' (p<0.001 <b>bold</b>)'
    assert 'p&lt;0.001 &lt;b&gt;bold&lt;/b&gt;' in report_html.report_html(doc)
    # A report.json without the list (an older one): the list is made from the reason.
    doc['reason'] = 'nothing was changed: app1 (p<0.001 <i>it</i>)'
    del doc['reasons']
    assert 'p&lt;0.001 &lt;i&gt;it&lt;/i&gt;' in report_html.report_html(doc)


def test_a_rolled_back_run_shows_the_failed_batch_the_rollback_and_its_decision():
    page = report_html.report_html(report(bad_canary=True))
    assert len(re.findall(r'class="batch batch-failed"', page)) == 1
    assert len(re.findall(r'class="rollback"', page)) == 1
    assert re.search(r'verdict: fail, score 25</text>', page)
    assert re.search(r'<g id="decision" class="decision-marker">.*>rolled back</text></g>', page)
    assert '>ROLLED BACK<' in page


def test_reports_without_analysis_or_from_other_sources_still_render():
    doc = report()
    doc['steps'][0].pop('intervals')
    doc['steps'][0].pop('traffic_share')
    # What another metric source puts per server (HAProxy request logs).
    doc['steps'][0]['traffic'] = {'app1': {'role': 'canary', 'requests': 91, 'response_ms': {'p50': 7.25311}}}
    page = report_html.report_html(doc)
    assert 'no analysis interval' in page and 'not a canary run' in page
    assert '<td class="num">7.25</td>' in page
    stopped = dict(doc, steps=[], seconds=0.4, decision='failed', reason='bad input, nothing was changed: <x>')
    page = report_html.report_html(stopped)
    assert 'bad input, nothing was changed: &lt;x&gt;' in page and 'class="batch' not in page


# ---------------------------------------------------------------- the browser

def png_pixels(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG, decoded with zlib."""
    with open(path, 'rb') as handle:
        data = handle.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat, header = 8, b'', None
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), 'unexpected PNG format %s' % (header,)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    assert len(raw) == height * (stride + 1), 'truncated image data'
    low, high = int('7f' * stride, 16), int('80' * stride, 16)
    rows, previous = [], bytes(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if kind == 2:
            # Up: bytewise a + b mod 256 on whole rows at once (no carry crosses a byte).
            a, b = int.from_bytes(line, 'big'), int.from_bytes(previous, 'big')
            line = (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride, 'big')
        elif kind:
            line = _unfilter(kind, bytearray(line), previous, channels)
        rows.append(line)
        previous = line
    return width, height, [[tuple(row[i:i + 3]) for i in range(0, stride, channels)] for row in rows]


def _unfilter(kind, line, previous, channels):
    """PNG filters 1 (Sub), 3 (Average), 4 (Paeth): each byte depends on the one to its left."""
    for x in range(len(line)):
        left = line[x - channels] if x >= channels else 0
        if kind == 1:
            line[x] = (line[x] + left) & 0xff
            continue
        up = previous[x]
        if kind == 3:
            line[x] = (line[x] + ((left + up) >> 1)) & 0xff
            continue
        corner = previous[x - channels] if x >= channels else 0
        pa, pb, pc = abs(up - corner), abs(left - corner), abs(left + up - 2 * corner)
        line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xff
    return bytes(line)


def near(pixel, colour, tolerance=8):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.skipif(shutil.which('chromium') is None, reason='chromium is not installed (scripts/ensure-host-packages.sh)')
@pytest.mark.parametrize('bad_canary, decision', [(False, 'promoted'), (True, 'rolled_back')])
def test_headless_chromium_shows_the_timeline(tmp_path, bad_canary, decision):
    page = tmp_path / 'report.html'
    page.write_text(report_html.report_html(report(bad_canary=bad_canary)), encoding='utf-8')
    shot = tmp_path / 'report.png'
    run = subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                          '--user-data-dir=%s' % (tmp_path / 'profile'), '--screenshot=%s' % shot,
                          '--window-size=%d,%d' % WINDOW, page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert shot.stat().st_size > 20000
    width, height, rows = png_pixels(str(shot))
    assert (width, height) == WINDOW
    histogram = collections.Counter(p for row in rows for p in row)
    white = sum(n for p, n in histogram.items() if min(p) > 245)
    assert white < 0.93 * width * height, 'the page is (almost) blank'
    assert len(histogram) > 50
    counts = dict((name, sum(n for p, n in histogram.items() if near(p, rgb(colour)))) for name, colour in (
        ('drain', report_html.PHASE_COLOURS['drain']), ('switch', report_html.PHASE_COLOURS['switch']),
        ('analysis', report_html.PHASE_COLOURS['analysis']), ('canary', report_html.CANARY),
        ('baseline', report_html.BASELINE), ('decision', report_html.DECISION_COLOURS[decision])))
    # Batch rectangles are solid blocks of their phase colour; the analysis is the longest.
    assert counts['drain'] > 200 * (1 if bad_canary else 6) / 6 and counts['switch'] > 200
    assert counts['analysis'] > 2000
    assert counts['canary'] > 150 and counts['baseline'] > 50
    # The badge and the decision marker.
    assert counts['decision'] > 1000
