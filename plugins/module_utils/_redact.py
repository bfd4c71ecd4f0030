# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Credentials in URLs (user:password@) are never printed: artifact URLs,
health and sample URLs may carry them, and module results, messages and
reports all pass through here first.

Private to grayrelease.canary. Stdlib only.
"""

from __future__ import annotations

import re

# user:password@ in a URL.
CREDENTIALS_RE = re.compile(r'(?<=://)[^/@\s]+@')


def redact_url(url):
    """The text with every URL's credentials replaced by ***@."""
    return CREDENTIALS_RE.sub('***@', url)


def redact(value):
    """The value with every URL's credentials replaced by ***@, keys included."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return dict((redact(k), redact(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
