# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sample-size planner's request rate, read from a real HAProxy (show stat's `rate`)."""
from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _haproxy_fixture import running_lab  # noqa: E402

from ansible_collections.grayrelease.canary.plugins.module_utils._haproxy import RuntimeAPI, gather_info  # noqa: E402
from ansible_collections.grayrelease.canary.plugins.module_utils._power import plan  # noqa: E402

pytestmark = [pytest.mark.haproxy]

lab = pytest.fixture(running_lab)


def test_haproxy_rate_is_the_request_rate_the_planner_reads(lab):
    api = RuntimeAPI(lab.user)
    deadline = time.monotonic() + 0.8
    sent = 0
    # A burst well inside HAProxy's one-second rate period, bounded in count and time.
    while sent < 40 and time.monotonic() < deadline:
        lab.get('/')
        sent += 1
    servers = gather_info(api, 'web')['web']
    rate = sum(info['rate'] for info in servers.values())
    assert all(isinstance(info['rate'], int) for info in servers.values())
    assert sent >= 10 and 0 < rate <= sent
    result = plan(rate, 10, 10, 3)
    assert result['request_rate'] == rate and result['canary_requests'] == int(rate * 30 * 0.1)
