#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_state
short_description: The coordinator of a canary rollout (controller side)
version_added: 1.0.0
description:
  - Keeps the state of one rollout and makes every decision about it - which
    hosts and balancers act next and with what arguments (the C(act)),
    whether the run halts, what is rolled back in which groups, the final
    decision, and the report.
  - The state lives in one file per run on the controller, in a directory of
    the user's own (mode 0700, the file 0600) in the controller's temporary
    directory (C(TMPDIR), else C(/tmp)), written whole after every call. The
    facts returned are only its small view (C(grayrelease_rollout_view), what
    the play's conditions read) and the file's reference
    (C(grayrelease_rollout_state_file)); the state (about 0.9 MB at 1,000
    hosts) is no fact, so it reaches neither every host of the play nor
    every AWX job event. O(op=start) removes the files of earlier runs
    untouched for a day, except those of a run still going on.
  - Runs entirely on the controller through its action plugin; nothing is
    executed on a managed host. The logic is in the collection's private
    C(module_utils/_engine/), unit-tested without Ansible.
  - Used by the P(grayrelease.canary.rollout#role) role; not meant to be
    called on its own.
options:
  op:
    description:
      - C(start) checks every input and names the participants; C(record)
        takes what the actors of the pending act registered (a host that is
        gone is marked lost) and decides the next act; C(batch) starts plan
        batch O(index); C(rollback) decides what goes back after a halt, in
        groups within C(canary_max_unavailable); C(rollback_group) starts
        rollback group O(index); C(cleanup) restores weights and removes
        releases staged on hosts that were never switched; C(finish_survey)
        asks the app hosts for their final versions; C(finish) decides and
        writes C(report.json), C(report.md) and C(report.html) (with an SVG
        timeline) into C(canary_report_dir).
    type: str
    required: true
    choices: [start, record, batch, rollback, rollback_group, cleanup, finish_survey, finish]
  index:
    description: Batch or rollback group number (from 0) for O(op=batch) and O(op=rollback_group).
    type: int
    default: 0
  app_group:
    description: Inventory group of the app hosts (O(op=start)).
    type: str
    default: app
  balancer_group:
    description: Inventory group of the HAProxy hosts (O(op=start)).
    type: str
    default: balancers
  owner:
    description: Lock owner of this run (O(op=start)).
    type: str
  metrics:
    description:
      - Metrics computed by the user's own tasks (C(canary_custom_metrics)), judged with the
        built-in ones when O(op=record) records the canary analysis. Each is a metric of
        M(grayrelease.canary.canary_judge) (C(name), C(kind), C(baseline), C(canary), options),
        plus C(dry_run) and C(must_have_data).
    type: list
    elements: dict
    version_added: 1.0.0
notes:
  - Settings are the C(canary_*) variables, read as the first app host sees them
    (inventory and extra vars); survey strings such as C("1,25%,100%") or C("2") are accepted.
attributes:
  check_mode:
    support: full
    description: In check mode the plan is made and reported; no act changes anything.
  diff_mode:
    support: none
    description: Nothing to diff.
  platform:
    support: full
    platforms: controller
    description: Runs on the controller only.
author:
  - Grayrelease Canary Maintainers (@grayrelease)
"""

EXAMPLES = r"""
- name: Pre-flight | check the inputs and name the participants
  grayrelease.canary.rollout_state:
    op: start
  when: inventory_hostname == 'localhost'

- name: Batch | begin
  grayrelease.canary.rollout_state:
    op: batch
    index: 0
  when: inventory_hostname == 'localhost'
"""

RETURN = r"""
ansible_facts:
  description:
    - C(grayrelease_rollout_view), the small view of the state the play's tasks read (the next C(act),
      the settings, the plan, whether the run halted).
    - C(grayrelease_rollout_state_file), where the whole state of the run is (C(path), a file on the
      controller) and the run's id (C(run)), which the file's must match. -vvv prints both.
  returned: always
  type: dict
act:
  description: The phase of the next act (empty when nobody acts next).
  returned: always
  type: str
  sample: drain
halt:
  description: Why the run stopped (C(phase), C(reason), C(kind) C(failed) or C(paused)).
  returned: when the run halted
  type: dict
report:
  description:
    - The report's headline (C(decision), C(reason), C(reasons), C(version), C(previous_version), C(run),
      C(artifact), C(backend), C(started), C(finished), C(seconds), C(check_mode)); the whole document is
      report.json (RV(report_path), and this run's own copy in C(report_run_dir)).
    - The whole document when report.json could not be written (C(report_error)).
  returned: with O(op=finish)
  type: dict
report_path:
  description: Path of report.json on the controller.
  returned: with O(op=finish)
  type: str
report_html:
  description: Path of report.html on the controller (beside report.json).
  returned: with O(op=finish)
  type: str
  version_added: 1.0.0
verdict:
  description: The canary's verdict (C(pass), C(marginal), C(fail), C(inconclusive)), or empty when nothing was judged.
  returned: with O(op=finish)
  type: str
score:
  description: The canary's score, or null.
  returned: with O(op=finish)
  type: float
summary:
  description: Decision, reason, final version per host and the report path, one line each.
  returned: with O(op=finish)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            op=dict(type='str', required=True,
                    choices=['start', 'record', 'batch', 'rollback', 'rollback_group', 'cleanup',
                             'finish_survey', 'finish']),
            index=dict(type='int', default=0),
            app_group=dict(type='str', default='app'),
            balancer_group=dict(type='str', default='balancers'),
            owner=dict(type='str'),
            metrics=dict(type='list', elements='dict'),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg='grayrelease.canary.rollout_state runs on the controller through its action plugin')


if __name__ == '__main__':
    main()
