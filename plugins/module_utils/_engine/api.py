# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout engine: one `rollout` state object and every decision about it.

Private to grayrelease.canary. Pure Python (no Ansible imports, clock passed
in), so every decision is unit-tested without a fleet.

How it drives a run. The rollout play has three kinds of participants: the
coordinator (localhost), which runs only this code; the balancers; and the
app hosts (plus the probe host, usually the first balancer). The state holds
an `act`: which participants do what next (`apps`, `balancers`, `probe`,
`lock`: host lists, plus the arguments). Each actor task in the play runs
only on the hosts its list names; the coordinator then calls `record()` with
what every named host returned (or None when the host is gone), and the
engine decides the next `act`. A host that does not answer is marked lost
and is never asked again; the run halts. Nobody acts without a fresh act from
a live coordinator, so app hosts can never roll on alone.

The state is a plain dict (JSON-serialisable, it lives in a fact).

Where things are (each module imports only the ones above it):

    settings    the canary_* inputs checked, DEFAULTS, the participants checked
    state       the state object, the act, results per host, halting, capacity
    steps       the plan's geometry: the canary and baseline of a step, the looks
    analysis    what a judged step samples and the judgement of it
    preflight   lock, survey, releases, held servers, plan, repair
    batches     drain -> switch -> health -> ready, the canary weights, hand-over
    rollback    the touched hosts back in groups, weights restored, unstaging
    notify      the webhook events a state has reached, each sent once (canary_notify_url)
    report      report.json, its Markdown, the summary
    finish      final versions, unlock, the decision
    dispatch    record() -> the phase's handler; advance(); view()
    contract    the play's side: phase -> actor -> module, arguments, register

The names below (this module, _engine/api.py) are what the action plugin
(rollout_state), the progress callback and the tests use. The package's
__init__.py stays empty, as ansible-test's empty-init sanity test wants of a
module_utils package on ansible-core 2.16 and 2.17.
"""

from __future__ import annotations

from ansible_collections.grayrelease.canary.plugins.module_utils._redact import redact
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.settings import (
    DEFAULTS,
    EngineError,
    check_hosts,
    check_settings,
    coerce_steps,
    judge_options,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.state import lock_ttl, new_state
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.steps import canary_hosts
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.batches import begin_batch
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.rollback import (
    NOT_RESTARTED_DEADLINE,
    begin_rollback,
    begin_rollback_group,
    cleanup,
    cleanup_due,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.report import (
    fallback_report,
    md_text,
    report,
    report_markdown,
    summary_lines,
)
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.finish import begin_finish, finish
from ansible_collections.grayrelease.canary.plugins.module_utils._engine.dispatch import (
    HANDLERS,
    advance,
    record,
    view,
)

# What the action plugin, the progress callback and the tests import from here.
__all__ = [
    'advance',
    'begin_batch',
    'begin_finish',
    'begin_rollback',
    'begin_rollback_group',
    'canary_hosts',
    'check_hosts',
    'check_settings',
    'cleanup',
    'cleanup_due',
    'coerce_steps',
    'DEFAULTS',
    'EngineError',
    'fallback_report',
    'finish',
    'HANDLERS',
    'judge_options',
    'lock_ttl',
    'md_text',
    'new_state',
    'NOT_RESTARTED_DEADLINE',
    'record',
    'redact',
    'report',
    'report_markdown',
    'summary_lines',
    'view',
]
