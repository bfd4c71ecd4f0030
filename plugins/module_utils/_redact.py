# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Credentials in URLs are never printed: artifact URLs, health, sample and
Prometheus URLs may carry them, and module results, messages and reports all
pass through here first.

Two kinds of credentials are recognised in any text:

- the userinfo of a URL (``user:password@``, or a bare token ``token@``),
  which ends at the LAST ``@`` before the host: an unencoded ``@`` in a
  password is common, and the host is what follows the last one (as
  urllib.parse reads it);
- the values of query (or fragment) parameters whose names look secret:
  ``token``, ``access_token``, ``api_key``, ``password``, ``secret``,
  ``sig``, ``X-Amz-Signature``... (see ``is_secret_name``).

Private to grayrelease.canary. Stdlib only.
"""

from __future__ import annotations

import re

MASK = '***'

# The authority of a URL ends at the first / ? # or blank; its userinfo is
# everything up to the last @ inside it (the greedy run backtracks to it).
USERINFO_RE = re.compile(r'(?<=://)[^/?#\s]*@')
# name=value after ? & ; or #. A value ends at & # or a blank, and at a
# quote or angle bracket, which end a URL quoted in a message (repr, HTML).
PARAM_RE = re.compile(r'(?<=[?&;#])([^=&;#?\s\'"<>]+)=([^&#\s\'"<>]*)')

# Words of a parameter name (split at punctuation and camelCase) that make
# it secret, and endings of run-together names (accesstoken, clientsecret).
SECRET_WORDS = frozenset((
    'apikey', 'auth', 'authorization', 'credential', 'credentials', 'jwt', 'key', 'otp', 'pass', 'passphrase',
    'passwd', 'pwd', 'session', 'sessionid', 'sid', 'sig', 'signature',
))
SECRET_ENDINGS = ('token', 'secret', 'password')
_CAMEL_RE = re.compile(r'(?<=[a-z0-9])(?=[A-Z])')
_WORD_SPLIT_RE = re.compile(r'[^a-z0-9]+')


def is_secret_name(name):
    """Whether a query parameter's name says its value is a credential."""
    words = _WORD_SPLIT_RE.split(_CAMEL_RE.sub('_', name).lower())
    return any(word in SECRET_WORDS or word.endswith(SECRET_ENDINGS) for word in words)


def _mask_param(match):
    if not is_secret_name(match.group(1)):
        return match.group(0)
    return '%s=%s' % (match.group(1), MASK)


def redact_url(text):
    """The text with every URL's userinfo replaced by ***@ and every secret-looking
    parameter's value by ***. Redacting redacted text changes nothing."""
    return PARAM_RE.sub(_mask_param, USERINFO_RE.sub(MASK + '@', text))


def redact(value):
    """The value with every URL's credentials redacted (see redact_url), dict keys included."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return dict((redact(k), redact(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def url_secrets(value):
    """The credential parts of every URL in value (strings, nested lists and dict
    values), as they are written: what a module adds to AnsibleModule.no_log_values
    so that Ansible masks them wherever it prints its arguments (the invocation).

    Each part is taken with its delimiters (``user:password@``,
    ``token=value``): a short password alone would mask every occurrence of
    its letters in the output.
    """
    found = set()
    if isinstance(value, str):
        found.update(match.group(0) for match in USERINFO_RE.finditer(value) if match.group(0) != MASK + '@')
        found.update(match.group(0) for match in PARAM_RE.finditer(value)
                     if match.group(2) not in ('', MASK) and is_secret_name(match.group(1)))
    elif isinstance(value, dict):
        for item in value.values():
            found.update(url_secrets(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.update(url_secrets(item))
    return found


def by_url(results, url):
    """What a module returned for `url` in `results` (keyed by URL): modules
    key their results by the redacted URL, callers hold the real one."""
    found = results.get(url)
    return found if found is not None else results.get(redact_url(url))
