# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html: the rollout report as one self-contained page with an SVG timeline.

Private to grayrelease.canary. Pure Python: report_html(doc) takes the
report.json document (plugins/module_utils/_engine.py report()) and returns
the page. Inline CSS and SVG only (no script, no external asset), so it opens
anywhere: from an AWX job's artifacts, a mail, a CI artifact store.

The timeline shares one time axis (seconds since the run started) between
the batches (one row each, split into their phases), the canary's traffic
share (set by the weights, measured by HAProxy), canary vs baseline error
rate and latency per analysis interval, the verdict and the decision.
"""

from __future__ import annotations

import re
from html import escape

from ansible_collections.grayrelease.canary.plugins.module_utils._progress import (
    PHASES,
    artifact_text,
    fmt_ms,
    fmt_number,
    fmt_percent,
    fmt_rate,
    fmt_seconds,
    latency_items,
    origin_text,
    readable,
    reason_items,
    settings_items,
)

PHASE_COLOURS = {'before_drain': '#d8c070', 'drain': '#f0a030', 'switch': '#4a7bd0', 'health': '#3fb0a0',
                 'ready': '#6cbf4a', 'after_ready': '#a0d080', 'analysis': '#9b6fd0', 'restore': '#b0b0b0'}
# Phases a run has only when the user set their hook: in the legend and the table only then.
HOOK_PHASES = ('before_drain', 'after_ready')
DECISION_COLOURS = {'promoted': '#2e8b3a', 'rolled_back': '#c07000', 'paused': '#4a7bd0', 'failed': '#c0302a'}
CANARY, BASELINE = '#d04040', '#3060c0'
WIDTH, LEFT, RIGHT = 1000, 150, 30
ROW, GAP = 20, 6
# The lane above the batches where the verdict and decision labels go, one row each at most
# LABEL_ROWS deep: no bar is ever drawn there, so no bar hides a label.
LABEL_TOP, LABEL_ROW, LABEL_ROWS = 24, 15, 3
CHAR_WIDTH = 6.6  # 11px sans-serif, wide enough for bold text
ROLLBACK_PHASES = ('drain', 'switch', 'health', 'ready')

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:bold}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#c0302a;font-weight:bold}.muted{color:#777}
svg{background:#fcfcfc;border:1px solid #ddd}
svg text{font-size:11px;fill:#333}svg .title{font-size:12px;font-weight:bold}
svg .label{paint-order:stroke;stroke:#fcfcfc;stroke-width:3px}
ul.why{margin:6px 0 10px;padding-left:22px;font-size:15px}ul.why li{margin:2px 0}
"""


def _e(value):
    return escape('' if value is None else str(value), quote=True)


def _num(value, digits=2):
    return '%.*f' % (digits, value)


class _Scale(object):
    """Seconds since the start -> x pixels."""

    def __init__(self, seconds):
        self.seconds = max(float(seconds or 0), 1.0)
        self.span = WIDTH - LEFT - RIGHT

    def x(self, seconds):
        return LEFT + self.span * min(max(float(seconds), 0.0), self.seconds) / self.seconds


def _batches(doc):
    """(step, batch, start offset) for every batch, in order."""
    rows = []
    for step in doc.get('steps') or []:
        for batch in step.get('batches') or []:
            rows.append((step, batch, float(batch.get('offset') or 0)))
    return rows


def _ticks(seconds):
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if seconds / step <= 10:
            return step
    return 7200


def _axis(scale, top, bottom):
    parts = []
    tick = _ticks(scale.seconds)
    value = 0
    while value <= scale.seconds + 1e-9:
        x = scale.x(value)
        parts.append('<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#e4e4e4"/>' % (_num(x), top, _num(x), bottom))
        parts.append('<text x="%s" y="%d" text-anchor="middle">%d s</text>' % (_num(x), bottom + 14, value))
        value += tick
    return parts


def _phases_in(doc):
    """The batch phases to show: every one but a hook's, which only when a batch ran it."""
    ran = set(p for dummy, batch, dummy2 in _batches(doc) for p in (batch.get('timings') or {}))
    return [p for p in PHASES if p not in HOOK_PHASES or p in ran]


def _batch_rows(doc, scale, top):
    parts, y = [], top
    parts.append('<text class="title" x="8" y="%d">batches</text>' % (y - 6))
    for step, batch, start in _batches(doc):
        label = 'step %s, batch %s: %s' % (step['step'], batch['batch'], ', '.join(batch['hosts']))
        parts.append('<text x="8" y="%d">%s</text>' % (y + 14, _e(_short(label, 24))))
        cursor = start
        for phase in PHASES:
            seconds = (batch.get('timings') or {}).get(phase)
            if seconds is None:
                continue
            x0, x1 = scale.x(cursor), scale.x(cursor + float(seconds))
            parts.append('<rect class="phase phase-%s" x="%s" y="%d" width="%s" height="%d" fill="%s">'
                         '<title>%s: %s %s</title></rect>' % (
                             phase, _num(x0), y, _num(max(x1 - x0, 1.0)), ROW, PHASE_COLOURS[phase], _e(label), phase,
                             fmt_seconds(seconds)))
            cursor += float(seconds)
        end = start + float(batch.get('seconds') or (cursor - start))
        failed = batch.get('outcome') == 'failed'
        parts.append('<rect class="batch batch-%s" data-batch="%s" x="%s" y="%d" width="%s" height="%d" fill="none" '
                     'stroke="%s" stroke-width="%s"><title>%s: %s, %s</title></rect>' % (
                         _e(batch.get('outcome')), _e(batch['batch']), _num(scale.x(start)), y,
                         _num(max(scale.x(end) - scale.x(start), 1.0)), ROW, '#c0302a' if failed else '#555',
                         2 if failed else 0.6, _e(label), _e(batch.get('outcome')), fmt_seconds(batch.get('seconds'))))
        y += ROW + GAP
    records = doc.get('rollback') or []
    for number, record in enumerate(records):
        start = float(record.get('offset') or 0)
        end = float(records[number + 1].get('offset') or 0) if number + 1 < len(records) else float(doc['seconds'])
        label = 'rollback %s: %s' % (record.get('group'), ', '.join(record.get('hosts') or []))
        parts.append('<text x="8" y="%d">%s</text>' % (y + 14, _e(_short(label, 24))))
        timings = record.get('timings') if isinstance(record.get('timings'), dict) else {}
        offsets = record.get('phase_offsets') if isinstance(record.get('phase_offsets'), dict) else {}
        cursor = start
        for phase in ROLLBACK_PHASES:
            seconds = timings.get(phase)
            if not isinstance(seconds, (int, float)):
                continue
            at = float(offsets.get(phase, cursor))
            x0, x1 = scale.x(at), scale.x(at + float(seconds))
            parts.append('<rect class="phase rollback-phase phase-%s" x="%s" y="%d" width="%s" height="%d" fill="%s" '
                         'fill-opacity="0.85"><title>%s: %s %s</title></rect>' % (
                             phase, _num(x0), y, _num(max(x1 - x0, 1.0)), ROW, PHASE_COLOURS[phase], _e(label), phase,
                             fmt_seconds(seconds)))
            cursor = at + float(seconds)
        if timings:
            end = max(end, cursor)
        parts.append('<rect class="rollback" x="%s" y="%d" width="%s" height="%d" fill="%s" stroke="#c0302a" '
                     'stroke-width="2"><title>%s</title></rect>' % (
                         _num(scale.x(start)), y, _num(max(scale.x(end) - scale.x(start), 2)), ROW,
                         'none' if timings else '#e8a0a0', _e(label)))
        y += ROW + GAP
    return parts, y


def _short(text, limit):
    return text if len(text) <= limit else text[:limit - 1] + '\u2026'


def _canary_step(doc):
    for step in doc.get('steps') or []:
        if step.get('canary'):
            return step
    return None


def _traffic_lane(step, scale, top, height=50):
    """The canary's share: set (a band over the canary step) and measured (a mark at the analysis end)."""
    traffic = (step or {}).get('traffic_share') or {}
    set_share, measured = traffic.get('set_percent'), traffic.get('measured_percent')
    parts = ['<text class="title" x="8" y="%d">canary traffic share</text>' % (top + 12)]
    if set_share is None:
        parts.append('<text x="%d" y="%d" class="muted">not a canary run</text>' % (LEFT + 4, top + 30))
        return parts, top + 40
    top += 18
    top_share = max(20.0, 2 * set_share, (measured or 0) * 1.3)
    top_share = min(100.0, top_share)

    def y(share):
        return top + height - height * min(share, top_share) / top_share

    start = float(step.get('offset') or 0)
    end = start + float(step.get('seconds') or 0)
    parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (LEFT, top + height, WIDTH - RIGHT,
                                                                            top + height))
    parts.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (LEFT - 6, top + 12, fmt_percent(top_share)))
    parts.append('<line class="traffic-set" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="3">'
                 '<title>set by the weights: %s</title></line>' % (
                     _num(scale.x(start)), _num(y(set_share)), _num(scale.x(end)), _num(y(set_share)), CANARY,
                     fmt_percent(set_share)))
    parts.append('<text x="%s" y="%s">set %s</text>' % (_num(scale.x(start) + 4), _num(y(set_share) - 5),
                                                        fmt_percent(set_share)))
    if measured is not None:
        intervals = step.get('intervals') or []
        at = float(intervals[-1].get('end')) if intervals and intervals[-1].get('end') is not None else end
        parts.append('<circle class="traffic-measured" cx="%s" cy="%s" r="5" fill="#222"><title>measured by '
                     'HAProxy: %s (%s of %s requests)</title></circle>' % (
                         _num(scale.x(at)), _num(y(measured)), fmt_percent(measured),
                         _e(traffic.get('canary_requests')), _e(traffic.get('requests'))))
        parts.append('<text x="%s" y="%s">measured %s</text>' % (_num(scale.x(at) + 8), _num(y(measured) + 4),
                                                                 fmt_percent(measured)))
    return parts, top + height


def _series(intervals, source, field):
    """(end offset, canary value, baseline value) per interval that has the field."""
    points = []
    for interval in intervals:
        data = interval.get(source) if isinstance(interval.get(source), dict) else {}
        canary, baseline = data.get('canary') or {}, data.get('baseline') or {}
        if interval.get('end') is None or (canary.get(field) is None and baseline.get(field) is None):
            continue
        points.append((float(interval['end']), interval.get('interval'), canary.get(field), baseline.get(field)))
    return points


def _chart(points, bands, scale, top, title, kind, fmt, floor, height=80, more=()):
    """One chart of canary vs baseline per interval; `more`: further (points, kind) series drawn dashed (p95)."""
    parts = ['<text class="title" x="8" y="%d">%s</text>' % (top + 12, _e(title))]
    if not points:
        parts.append('<text x="%d" y="%d" class="muted">no analysis interval</text>' % (LEFT + 4, top + 30))
        return parts, top + 40
    # The plot starts below its title, so the title never overlaps the scale.
    top += 18
    series = [(points, kind, False)] + [(p, k, True) for p, k in more if p]
    high = max([floor] + [v for pts, dummy, dummy2 in series for p in pts for v in p[2:] if v is not None]) * 1.15

    def y(value):
        return top + height - height * value / high

    for start, end, number in bands:
        # Each analysis interval as a shaded band, its point at the band's end.
        parts.append('<rect class="interval-band" x="%s" y="%d" width="%s" height="%d" fill="%s"/>' % (
            _num(scale.x(start)), top, _num(max(scale.x(end) - scale.x(start), 1.0)), height,
            '#efeaf7' if number % 2 else '#f6f2fb'))
    parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (LEFT, top + height, WIDTH - RIGHT,
                                                                            top + height))
    parts.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (LEFT - 6, top + 10, _e(fmt(high))))
    parts.append('<text x="%d" y="%d" text-anchor="end">0</text>' % (LEFT - 6, top + height))
    for pts, series_kind, dashed in series:
        name = series_kind.split('-', 1)[1] if '-' in series_kind else ''
        for index, (group, colour) in enumerate((('canary', CANARY), ('baseline', BASELINE))):
            values = [(scale.x(p[0]), p[1], p[2 + index]) for p in pts if p[2 + index] is not None]
            if len(values) > 1:
                parts.append('<polyline class="series %s %s" fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>'
                             % (series_kind, group, colour, ' stroke-dasharray="5,3"' if dashed else '',
                                ' '.join('%s,%s' % (_num(x), _num(y(v))) for x, dummy, v in values)))
            for x, number, value in values:
                # Canary hollow and larger, baseline filled: both show where they coincide.
                style = 'r="%s" fill="none" stroke="%s" stroke-width="2"' % ('4' if dashed else '5.5', colour) \
                    if group == 'canary' else 'r="%s" fill="%s"' % ('2.5' if dashed else '3.5', colour)
                parts.append('<circle class="interval-point %s %s" data-interval="%s" cx="%s" cy="%s" %s>'
                             '<title>interval %s, %s%s: %s</title></circle>' % (
                                 series_kind, group, _e(number), _num(x), _num(y(value)), style, _e(number), group,
                                 ' ' + name if name else '', _e(fmt(value))))
            if not dashed:
                parts.append('<text x="%d" y="%d" fill="%s" style="fill:%s">%s</text>' % (
                    WIDTH - RIGHT - 140 + 70 * index, top - 6, colour, colour, group))
    return parts, top + height


def _place(rows, x0, x1):
    """The first label row whose labels do not overlap [x0, x1] (taken), or the last row."""
    for number, taken in enumerate(rows):
        if all(x1 + 6 < a or x0 > b + 6 for a, b in taken):
            taken.append((x0, x1))
            return number
    rows[-1].append((x0, x1))
    return len(rows) - 1


def _label_box(x, text, anchor):
    width = CHAR_WIDTH * len(text)
    x0 = x - width if anchor == 'end' else x
    # Kept inside the plot: moved, never cut.
    x0 = min(max(x0, 4.0), WIDTH - 4 - width)
    return x0, x0 + width


def label_boxes(doc):
    """(kind, text, x0, x1, y_top, y_bottom) of every verdict and decision label, as timeline_svg draws them."""
    scale = _Scale(doc.get('seconds'))
    rows = [[] for dummy in range(LABEL_ROWS)]
    boxes = []
    marks = []
    for step in doc.get('steps') or []:
        verdict = step.get('judge') or {}
        if verdict.get('seconds_to_verdict') is None:
            continue
        at = float(step.get('offset') or 0) + float(verdict['seconds_to_verdict'])
        text = 'verdict: %s, score %s' % (verdict.get('verdict'), fmt_number(verdict.get('score')))
        if len([s for s in doc.get('steps') or [] if (s.get('judge') or {}).get('seconds_to_verdict') is not None]) > 1:
            text = 'step %s %s' % (step.get('step'), text)
        marks.append(('verdict', text, scale.x(at), '#2e8b3a' if verdict.get('verdict') == 'pass' else '#c0302a'))
    decision = str(doc.get('decision')).replace('_', ' ')
    marks.append(('decision', decision, scale.x(doc.get('seconds') or 0), DECISION_COLOURS.get(doc.get('decision'), '#555')))
    # The decision first: it always gets the top row.
    for kind, text, x, colour in [marks[-1]] + marks[:-1]:
        anchor = 'end' if x > LEFT + 0.7 * scale.span else 'start'
        x0, x1 = _label_box(x + (-4 if anchor == 'end' else 4), text, anchor)
        row = _place(rows, x0, x1)
        top = LABEL_TOP + row * LABEL_ROW
        boxes.append((kind, text, x0, x1, top, top + LABEL_ROW - 2, x, colour))
    return boxes


def _decision_marks(doc, bottom):
    """The verdicts' and the decision's lines across the timeline, their labels in the label lane above the bars."""
    parts = []
    for kind, text, x0, x1, top, dummy, x, colour in label_boxes(doc):
        weight = ';font-weight:bold' if kind == 'decision' else ''
        parts.append('<g id="%s" class="%s-marker"><line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" '
                     'stroke-width="%s"%s/><text class="label" x="%s" y="%d" fill="%s" style="fill:%s%s">%s</text></g>'
                     % (kind, kind, _num(x), top + LABEL_ROW - 2, _num(x), bottom, colour,
                        3 if kind == 'decision' else 2, '' if kind == 'decision' else ' stroke-dasharray="6,3"',
                        _num(x0), top + LABEL_ROW - 4, colour, colour, weight, _e(text)))
    return parts


def timeline_svg(doc):
    """The SVG timeline of one report."""
    scale = _Scale(doc.get('seconds'))
    top = LABEL_TOP + LABEL_ROWS * LABEL_ROW + 16
    rows, y = _batch_rows(doc, scale, top)
    step = _canary_step(doc)
    traffic, y = _traffic_lane(step, scale, y + 14)
    intervals = (step or {}).get('intervals') or []
    bands = [(float(i['start']), float(i['end']), n) for n, i in enumerate(intervals, 1)
             if i.get('start') is not None and i.get('end') is not None]
    errors, y = _chart(_series(intervals, 'probe', 'error_rate'), bands, scale, y + 20, 'error rate per interval',
                       'errors', fmt_rate, 0.01)
    latency, y = _chart(_series(intervals, 'probe', 'p50_ms'), bands, scale, y + 20,
                        'latency per interval: p50 (solid), p95 (dashed)', 'latency', fmt_ms, 1.0,
                        more=[(_series(intervals, 'probe', 'p95_ms'), 'latency-p95')])
    bottom = y + 6
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="%d" height="%d" viewBox="0 0 %d %d" '
             'role="img" aria-label="rollout timeline">' % (WIDTH, bottom + 24, WIDTH, bottom + 24)]
    parts += _axis(scale, top - 10, bottom)
    parts.append('<text class="title" x="8" y="%d">verdict, decision</text>' % (LABEL_TOP + LABEL_ROW - 4))
    legend_x = LEFT
    for phase in _phases_in(doc):
        parts.append('<rect x="%d" y="6" width="10" height="10" fill="%s"/><text x="%d" y="15">%s</text>' % (
            legend_x, PHASE_COLOURS[phase], legend_x + 14, phase))
        legend_x += 80
    parts += rows + traffic + errors + latency + _decision_marks(doc, bottom)
    parts.append('</svg>')
    return '\n'.join(parts)


def _table(headers, rows, numeric=()):
    out = ['<table>']
    if headers:
        out.append('<tr>%s</tr>' % ''.join('<th>%s</th>' % _e(h) for h in headers))
    for row in rows:
        out.append('<tr>%s</tr>' % ''.join('<td%s>%s</td>' % (' class="num"' if i in numeric else '', cell)
                                           for i, cell in enumerate(row)))
    out.append('</table>')
    return '\n'.join(out)


def _interval_table(step):
    intervals = step.get('intervals') or []
    sources = []
    for interval in intervals:
        for key, value in sorted(interval.items()):
            if isinstance(value, dict) and isinstance(value.get('canary'), dict) and key not in sources:
                sources.append(key)
    headers, rows = ['interval', 'seconds'], []
    fields = []
    for source in sources:
        names = []
        for interval in intervals:
            for group in ('canary', 'baseline'):
                for name in sorted(((interval.get(source) or {}).get(group) or {})):
                    if name not in names:
                        names.append(name)
        for name in names:
            for group in ('canary', 'baseline'):
                fields.append((source, group, name))
                headers.append('%s %s %s' % (source, group, name.replace('_', ' ')))
    for interval in intervals:
        row = [_e(interval.get('interval')), _e('%s-%s' % (fmt_number(interval.get('start')),
                                                           fmt_number(interval.get('end'))))]
        for source, group, name in fields:
            value = ((interval.get(source) or {}).get(group) or {}).get(name)
            row.append(_e(fmt_rate(value) if name.endswith('rate') and value is not None else fmt_number(value)))
        rows.append(row)
    return _table(headers, rows, numeric=range(1, len(headers)))


def _flat_table(rows_by_name, first):
    """A table of name -> {field: number, or {sub: number}}: what other metric sources recorded per server."""
    fields, rows = [], []
    for name, data in sorted(rows_by_name.items()):
        flat = {}
        for key, value in sorted(data.items()):
            if isinstance(value, dict):
                flat.update(('%s %s' % (key, sub), v) for sub, v in sorted(value.items())
                            if not isinstance(v, (dict, list)))
            elif not isinstance(value, list):
                flat[key] = value
        fields += [f for f in flat if f not in fields]
        rows.append((name, flat))
    return _table([first] + [f.replace('_', ' ') for f in fields],
                  [[_e(name)] + [_e(fmt_number(flat.get(f))) for f in fields] for name, flat in rows],
                  numeric=range(1, len(fields) + 1))


_URL_RE = re.compile(r'https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/#?=&%+-]*)?\Z')


def _origin_html(origin):
    """Who ran it; the AWX job as a link when its address is a plain http(s) URL, else as text."""
    text = _e(origin_text(origin))
    url = origin.get('awx_job_url') if isinstance(origin, dict) else None
    if isinstance(url, str) and _URL_RE.match(url):
        text += ' <a class="awx-job" href="%s">%s</a>' % (_e(url), _e(url))
    return text


def report_html(doc):
    """The whole page for one report.json document."""
    decision = str(doc.get('decision'))
    colour = DECISION_COLOURS.get(decision, '#555')
    title = 'Canary rollout of %s: %s' % (doc.get('backend'), decision.replace('_', ' '))
    body = ['<h1>%s <span class="badge" id="decision-badge" style="background:%s">%s</span></h1>' % (
        _e('Canary rollout of %s' % doc.get('backend')), colour, _e(decision.replace('_', ' ').upper()))]
    if doc.get('reason'):
        # Why, once, at the top: a short list in words, the statistics after the words.
        items = doc.get('reasons') or reason_items(doc['reason'], doc.get('steps'))
        body.append('<ul class="why" id="why">%s</ul>' % ''.join(
            '<li%s>%s</li>' % (' class="failed"' if n == 0 and doc.get('decision') != 'paused' else '', _e(readable(i)))
            for n, i in enumerate(items)))
    times = '%s / %s (%s)' % (_e(doc.get('started')), _e(doc.get('finished')), fmt_seconds(doc.get('seconds')))
    summary = [('version', '%s &rarr; %s' % (_e(doc.get('previous_version')), _e(doc.get('version')))),
               ('started / finished (UTC)', times)]
    if doc.get('run'):
        summary.append(('run by', _origin_html(doc['run'])))
    if doc.get('artifact'):
        summary.append(('artifact', _e(artifact_text(doc['artifact']))))
    step = _canary_step(doc)
    if step:
        verdict = step.get('judge') or {}
        if verdict:
            # A verdict that stopped the run is explained once, in the list at the top.
            why = 'the reasons above' if doc.get('reason') and step.get('outcome') == 'failed' \
                else _e(readable(verdict.get('reason')))
            summary.append(('canary verdict', '%s, score %s (%s)' % (
                _e(verdict.get('verdict')), _e(fmt_number(verdict.get('score'))), why)))
        for row in latency_items(step.get('latency')):
            summary.append(('canary latency, %s' % _e(row['label']), 'p50 %s, p95 %s (baseline p50 %s, p95 %s)' % (
                fmt_ms(row['canary'].get('p50_ms')), fmt_ms(row['canary'].get('p95_ms')),
                fmt_ms(row['baseline'].get('p50_ms')), fmt_ms(row['baseline'].get('p95_ms')))))
        traffic = step.get('traffic_share') or {}
        if traffic:
            summary.append(('canary traffic share', 'set %s, measured %s' % (
                fmt_percent(traffic.get('set_percent')), fmt_percent(traffic.get('measured_percent')))))
    summary += [('rolled back', _e(', '.join(doc.get('rolled_back') or []) or 'nothing')),
                ('repaired before start', _e(', '.join(doc.get('repaired') or []) or 'nothing'))]
    if doc.get('lost'):
        summary.append(('lost', _e('; '.join(doc.get('lost_may_hold') or []) or ', '.join(doc['lost']))))
    body.append(_table([], [('<b>%s</b>' % _e(k), v) for k, v in summary]))
    body += ['<h2>Timeline</h2>', timeline_svg(doc)]
    if doc.get('settings'):
        limits = ((step or {}).get('judge') or {}).get('thresholds')
        body += ['<h2>Settings</h2>', _table([], [('<b>%s</b>' % _e(k), _e(v)) for k, v in settings_items(
            doc['settings'], doc.get('capacity'), limits)])]
    batch_rows = []
    phases = _phases_in(doc)
    for s, batch, dummy in _batches(doc):
        timings = batch.get('timings') or {}
        batch_rows.append([_e(s['step']), _e(batch['batch']), _e(', '.join(batch['hosts'])),
                           'yes' if s.get('canary') else '',
                           '<span class="failed">failed</span>' if batch.get('outcome') == 'failed'
                           else _e(batch.get('outcome')), fmt_seconds(batch.get('seconds'))]
                          + [fmt_seconds(timings.get(p)) if timings.get(p) is not None else '-' for p in phases])
    body += ['<h2>Batches</h2>', _table(['step', 'batch', 'hosts', 'canary', 'outcome', 'seconds'] + phases,
                                        batch_rows, numeric=range(5, 6 + len(phases)))]
    records = [r for r in doc.get('rollback') or [] if isinstance(r, dict)]
    if records:
        rows = []
        for record in records:
            timings = record.get('timings') if isinstance(record.get('timings'), dict) else {}
            rows.append([_e(record.get('group')), _e(', '.join(record.get('hosts') or []) or 'nothing'),
                         _e(record.get('started'))]
                        + [fmt_seconds(timings[p]) if isinstance(timings.get(p), (int, float)) else '-'
                           for p in ROLLBACK_PHASES]
                        + [_e('; '.join(readable(e) for e in record.get('errors') or []) or '-')])
        body += ['<h2 id="rollback">Rollback</h2>', _table(['group', 'hosts', 'started (UTC)'] + list(ROLLBACK_PHASES)
                                                           + ['problems'], rows, numeric=range(3, 7))]
    for s in doc.get('steps') or []:
        verdict = s.get('judge') or {}
        if s.get('intervals'):
            body += ['<h2>Analysis intervals (step %s)</h2>' % _e(s['step']), _interval_table(s)]
        servers = s.get('traffic') if isinstance(s.get('traffic'), dict) else {}
        servers = dict((k, v) for k, v in servers.items() if isinstance(v, dict))
        if servers:
            body += ['<h2>Requests per server during the analysis (step %s)</h2>' % _e(s['step']),
                     _flat_table(servers, 'server')]
        if verdict.get('metrics'):
            body.append('<h2>Canary judgement (step %s): %s, score %s</h2>' % (
                _e(s['step']), _e(verdict.get('verdict')), _e(fmt_number(verdict.get('score')))))
            rows = []
            for name, metric in sorted(verdict['metrics'].items()):
                rows.append([_e(name), ('<span class="failed">%s</span>' if metric.get('failed') else '%s')
                             % _e(metric.get('classification')),
                             _e(metric.get('p_text') or fmt_number(metric.get('p_value'))),
                             _e(fmt_number(metric.get('baseline'))), _e(fmt_number(metric.get('canary'))),
                             _e(readable(metric.get('effect_text', '-'))),
                             _e('%s / %s' % (metric.get('baseline_count', '-'), metric.get('canary_count', '-'))),
                             _e(readable(metric.get('reason', '')))])
            body.append(_table(['metric', 'classification', 'p-value', 'baseline', 'canary', 'effect',
                                'samples (b/c)', 'reason'], rows, numeric=(2, 3, 4)))
        latency = latency_items(s.get('latency'))
        if latency:
            body.append('<h2 id="latency-step-%s">Latency over the analysis (step %s): p50 and p95</h2>' % (
                _e(s['step']), _e(s['step'])))
            body.append(_table(['source', 'canary p50', 'canary p95', 'baseline p50', 'baseline p95', 'n canary',
                                'n baseline'],
                               [[_e(r['label']), fmt_ms(r['canary'].get('p50_ms')), fmt_ms(r['canary'].get('p95_ms')),
                                 fmt_ms(r['baseline'].get('p50_ms')), fmt_ms(r['baseline'].get('p95_ms')),
                                 _e(fmt_number(r['canary'].get('count'))), _e(fmt_number(r['baseline'].get('count')))]
                                for r in latency], numeric=range(1, 7)))
    reason = doc.get('reason') or ''
    # The error the reason already says is not said again.
    errors = [e for s in doc.get('steps') or [] for e in s.get('errors') or [] if not (e and reason.endswith(e))]
    for heading, items in (('Errors', errors), ('Rollback errors', doc.get('rollback_errors') or []),
                           ('Notes', doc.get('notes') or [])):
        if items:
            body += ['<h2>%s</h2>' % heading, '<ul>%s</ul>' % ''.join('<li>%s</li>' % _e(readable(i)) for i in items)]
    hosts = sorted((doc.get('hosts') or {}).items())
    body += ['<h2>Hosts</h2>', _table(['host', 'version'], [(_e(h), _e(v)) for h, v in hosts])]
    return '\n'.join(['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
                      '<title>%s</title>' % _e(title), '<style>%s</style></head><body>' % CSS] + body
                     + ['</body></html>']) + '\n'
