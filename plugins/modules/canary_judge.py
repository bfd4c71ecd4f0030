#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: canary_judge
short_description: Judge canary metrics against the baseline (Kayenta style)
version_added: 1.0.0
description:
  - Compares metrics of the canary hosts with the same metrics of the baseline (stable) hosts
    and returns a verdict of V(pass), V(marginal), V(fail) or V(inconclusive).
  - Pure computation, no I/O. It never changes anything, so RV(changed) is always V(false)
    and check mode gives the same result as a normal run.
  - Each metric is classified with O(metrics[].direction), O(metrics[].tolerance) and, with
    alpha = 1 - O(confidence), a statistical test of the difference.
  - O(metrics[].kind=samples) compares two lists of numbers (for example latencies) with a
    two-sided Mann-Whitney U test, normal approximation with tie correction and continuity
    correction (the same p-value as C(scipy.stats.mannwhitneyu(canary, baseline,
    alternative='two-sided', method='asymptotic', use_continuity=True)); p = 1 when all values
    are equal). It is V(high) when p < alpha and median(canary) > median(baseline) * (1 + tolerance),
    V(low) when p < alpha and median(canary) < median(baseline) * (1 - tolerance), else V(pass).
    Medians are the mean of the middle two values for an even count.
  - O(metrics[].kind=ratio) compares error rates (errors / total) with a two-sided pooled
    two-proportion z-test (p = 1 when the pooled variance is 0, that is both rates are 0 or
    both are 1). It is V(high) when p < alpha and rate(canary) > rate(baseline) * (1 + tolerance)
    + max_absolute, V(low) when p < alpha and rate(canary) < rate(baseline) * (1 - tolerance)
    - max_absolute, else V(pass).
  - Critical thresholds (Kayenta's critical increase) catch big regressions that one metric among
    several would not outweigh in the score. When p < alpha and the effect reaches the metric's
    critical threshold in its bad direction, the metric is V(high) (or V(low)) whatever its tolerance,
    and the verdict is V(fail) whatever the score, even when another metric has no data. The effect
    is median(canary) / median(baseline) for V(samples), compared with O(metrics[].critical_ratio)
    (V(increase) breaches at ratio >= critical_ratio, V(decrease) at ratio <= 1 / critical_ratio), and
    rate(canary) - rate(baseline) for V(ratio), compared with O(metrics[].critical_difference).
  - A metric fails when its classification is its bad direction (V(high) for V(increase), V(low)
    for V(decrease), either for V(either)). A metric with fewer than O(metrics[].min_samples)
    values (ratio kind, requests) on either side is V(nodata) and neither passes nor fails.
  - RV(score) = 100 * (weight of passing metrics with data) / (weight of all metrics with data),
    V(null) when no metric has data.
  - RV(verdict) is V(fail) when a metric reached its critical threshold; else V(inconclusive) when no
    metric has data or a critical metric has no data, else
    V(fail) when a critical metric fails or the score is below O(marginal_score), else
    V(marginal) when the score is below O(pass_score), else V(pass).
  - The task does not fail on a V(fail) verdict; the caller decides what to do with it.
author:
  - grayrelease.canary maintainers (@grayrelease)
requirements:
  - Python standard library only.
attributes:
  check_mode:
    support: full
    description: Pure computation; check mode runs the same judgement.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
options:
  metrics:
    description:
      - The metrics to judge. Metric names must be unique.
      - A bad metric (unknown key, kind or direction, missing sides, negative counts, errors
        above total, non-numeric samples) fails the task with a message naming the bad value.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Unique name of the metric, the key in RV(metrics).
        type: str
        required: true
      kind:
        description:
          - V(samples) for lists of numbers, V(ratio) for error counts.
        type: str
        required: true
        choices: [samples, ratio]
      baseline:
        description:
          - The baseline's data. For V(samples) a list of numbers, for V(ratio) a dict with
            C(errors) and C(total) (non-negative, errors <= total).
        type: raw
        required: true
      canary:
        description:
          - The canary's data, the same shape as O(metrics[].baseline).
        type: raw
        required: true
      direction:
        description:
          - V(increase) means a higher canary value is bad (latency, errors),
            V(decrease) that a lower one is bad (throughput), V(either) that any significant
            change beyond the tolerance is bad.
        type: str
        choices: [increase, decrease, either]
        default: increase
      tolerance:
        description:
          - Allowed relative change of the canary's median (samples) or rate (ratio) before it
            may count as worse, for example V(0.25) for 25%.
        type: float
        default: 0.25
      max_absolute:
        description:
          - Ratio kind only. Extra absolute error rate that is always tolerated on top of
            O(metrics[].tolerance), for example V(0.01) for one percentage point.
          - Defaults to V(0.01) for ratio metrics. Setting it on a V(samples) metric is an error.
        type: float
      critical:
        description:
          - A failing critical metric fails the verdict whatever the score; a critical metric
            without data makes the verdict V(inconclusive).
        type: bool
        default: false
      weight:
        description: Weight of the metric in the score, > 0.
        type: float
        default: 1
      min_samples:
        description:
          - Fewer values (ratio kind, fewer requests in C(total)) than this on either side make
            the metric V(nodata).
        type: int
        default: 20
      critical_ratio:
        description:
          - Samples kind only. Median ratio canary / baseline that fails the verdict outright when
            significant (for V(decrease), the inverse). V(0) switches the check off for this metric.
          - Defaults to O(critical_ratio). Setting it on a V(ratio) metric is an error.
        type: float
        version_added: 1.0.0
      critical_difference:
        description:
          - Ratio kind only. Error-rate difference canary - baseline (a fraction, V(0.05) for five
            percentage points) that fails the verdict outright when significant. V(0) switches the
            check off for this metric.
          - Defaults to O(critical_difference). Setting it on a V(samples) metric is an error.
        type: float
        version_added: 1.0.0
  confidence:
    description:
      - Confidence of the statistical tests; a difference is significant when p < 1 - confidence.
    type: float
    default: 0.98
  pass_score:
    description: Lowest score for a V(pass) verdict (0-100).
    type: float
    default: 95
  marginal_score:
    description: Lowest score for a V(marginal) verdict (0-100); below it the verdict is V(fail).
    type: float
    default: 75
  critical_ratio:
    description:
      - The O(metrics[].critical_ratio) of every V(samples) metric that does not set its own.
        V(2) fails a canary whose median latency is twice the baseline's. V(0) switches it off,
        else it must be above 1.
    type: float
    default: 2
    version_added: 1.0.0
  critical_difference:
    description:
      - The O(metrics[].critical_difference) of every V(ratio) metric that does not set its own.
        V(0.05) fails a canary whose error rate is five points above the baseline's. V(0) switches
        it off, else at most 1.
    type: float
    default: 0.05
    version_added: 1.0.0
notes:
  - Besides the type checks of the options, the module rejects duplicate metric names, negative
    counts, errors above total and non-finite samples, with a message naming the metric and value.
seealso:
  - module: grayrelease.canary.health_check
  - module: grayrelease.canary.haproxy_info
'''

EXAMPLES = r'''
- name: Judge latency samples and the 5xx rate of the canary against the stable hosts
  grayrelease.canary.canary_judge:
    metrics:
      - name: latency_ms
        kind: samples
        baseline: "{{ stable_latencies }}"
        canary: "{{ canary_latencies }}"
        direction: increase
        tolerance: 0.25
      - name: http_5xx
        kind: ratio
        baseline: {errors: "{{ stable_5xx }}", total: "{{ stable_requests }}"}
        canary: {errors: "{{ canary_5xx }}", total: "{{ canary_requests }}"}
        critical: true
        max_absolute: 0.01
    confidence: 0.98
  register: judgement

- name: Stop the rollout unless the canary passed
  ansible.builtin.assert:
    that: judgement.verdict == 'pass'
    fail_msg: "canary {{ judgement.verdict }} (score {{ judgement.score }}): {{ judgement.reason }}"

- name: Throughput must not drop, a smaller sample is enough
  grayrelease.canary.canary_judge:
    metrics:
      - name: rps
        kind: samples
        baseline: [510, 498, 505, 490, 515, 502]
        canary: [350, 340, 362, 355, 349, 351]
        direction: decrease
        min_samples: 5

- name: A canary twice as slow fails outright; errors may rise by 2 points before they do
  grayrelease.canary.canary_judge:
    metrics:
      - name: latency_ms
        kind: samples
        baseline: "{{ stable_latencies }}"
        canary: "{{ canary_latencies }}"
      - name: http_5xx
        kind: ratio
        baseline: {errors: "{{ stable_5xx }}", total: "{{ stable_requests }}"}
        canary: {errors: "{{ canary_5xx }}", total: "{{ canary_requests }}"}
        critical_difference: 0.02
    critical_ratio: 2
'''

RETURN = r'''
verdict:
  description: V(pass), V(marginal), V(fail) or V(inconclusive).
  returned: always
  type: str
  sample: pass
score:
  description:
    - 100 * weight of passing metrics with data / weight of all metrics with data.
    - V(null) when no metric has data.
  returned: always
  type: float
  sample: 100.0
reason:
  description: One line explaining the verdict.
  returned: always
  type: str
  sample: "critical metric(s) failed: http_5xx"
decided_by:
  description:
    - Which rule decided the verdict, V(critical_threshold), V(nodata), V(critical_nodata),
      V(critical_metric) or V(score).
  returned: always
  type: str
  sample: critical_threshold
  version_added: 1.0.0
critical_breached:
  description: Names of the metrics that reached their critical threshold, in input order.
  returned: always
  type: list
  elements: str
  sample: [latency_ms]
  version_added: 1.0.0
thresholds:
  description: The verdict's settings, C(confidence), C(alpha), C(pass_score), C(marginal_score),
    and the global C(critical_ratio) and C(critical_difference).
  returned: always
  type: dict
  sample: {confidence: 0.98, alpha: 0.02, pass_score: 95, marginal_score: 75, critical_ratio: 2.0,
           critical_difference: 0.05}
  version_added: 1.0.0
failed_metrics:
  description: Names of the metrics that failed, in input order.
  returned: always
  type: list
  elements: str
  sample: [http_5xx]
metrics:
  description: Per metric name, the classification and the figures behind it.
  returned: always
  type: dict
  contains:
    classification:
      description: V(pass), V(high), V(low) or V(nodata).
      type: str
      sample: high
    failed:
      description: Whether the classification is the metric's bad direction.
      type: bool
      sample: true
    p_value:
      description: Two-sided p-value of the test; V(null) for V(nodata).
      type: float
      sample: 0.00012
    baseline:
      description: Baseline median (samples) or error rate (ratio); V(null) without data.
      type: float
      sample: 0.002
    canary:
      description: Canary median (samples) or error rate (ratio); V(null) without data.
      type: float
      sample: 0.031
    reason:
      description: One line explaining the classification.
      type: str
      sample: "http_5xx: FAILED (high, direction increase): significant increase p<0.001 < 0.02 and ..."
    rule:
      description:
        - 'The rule that decided the classification, for example V(critical: median 13.1x >= 2x and
          p<0.001 < 0.02), V(significant increase p=0.002 < 0.02 and +38% > tolerance +25%),
          V(no significant difference: p=0.41 >= 0.02) or V(nodata: 12 canary values < min_samples 20).'
      type: str
      sample: "significant increase p=0.002 < 0.02 and +38% > tolerance +25%"
      version_added: 1.0.0
    p_text:
      description: RV(metrics.p_value) rounded for reading (3 significant digits, V(<0.001), V(-) without data).
      type: str
      sample: "0.002"
      version_added: 1.0.0
    effect:
      description:
        - Effect size. V(samples) the median ratio canary / baseline (V(null) when the baseline median
          is 0), V(ratio) the rate difference canary - baseline. V(null) without data.
      type: float
      sample: 1.38
      version_added: 1.0.0
    effect_text:
      description: The effect for reading, for example V(median 1.38x (+38%)) or V(rate +2.6 points (3.1% vs 0.5%)).
      type: str
      sample: "median 1.38x (+38%)"
      version_added: 1.0.0
    thresholds:
      description:
        - What the metric was held to, C(alpha), C(tolerance), C(min_samples), C(allowed_low) and
          C(allowed_high) (the median or rate band outside which a significant change counts; V(null)
          without data), C(max_absolute) (ratio kind) and its C(critical_ratio) or C(critical_difference).
      type: dict
      sample: {alpha: 0.02, tolerance: 0.25, min_samples: 20, critical_ratio: 2.0, allowed_low: 9.375,
               allowed_high: 15.625}
      version_added: 1.0.0
    critical_breach:
      description: Whether the metric reached its critical threshold (and so failed the verdict).
      type: bool
      sample: false
      version_added: 1.0.0
    kind:
      description: The metric's kind.
      type: str
      sample: ratio
    direction:
      description: The metric's direction.
      type: str
      sample: increase
    critical:
      description: Whether the metric is critical.
      type: bool
      sample: true
    weight:
      description: The metric's weight.
      type: float
      sample: 1
    baseline_count:
      description: Number of baseline values (samples) or requests (ratio).
      type: float
      sample: 1200
    canary_count:
      description: Number of canary values (samples) or requests (ratio).
      type: float
      sample: 130
  sample:
    latency_ms:
      classification: pass
      failed: false
      p_value: 0.41
      baseline: 12.5
      canary: 12.9
      reason: "latency_ms: pass: canary median 12.9 vs baseline 12.5 (allowed 9.375..15.625), p=0.41 >= alpha 0.02"
changed:
  description: Always V(false); the module changes nothing.
  returned: always
  type: bool
  sample: false
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.grayrelease.canary.plugins.module_utils._judge import JudgeError, judge


def main():
    module = AnsibleModule(
        argument_spec=dict(
            # baseline/canary are raw because their shape depends on kind;
            # _judge validates them and the cross-key rules.
            metrics=dict(type='list', elements='dict', required=True, options=dict(
                name=dict(type='str', required=True),
                kind=dict(type='str', required=True, choices=['samples', 'ratio']),
                baseline=dict(type='raw', required=True),
                canary=dict(type='raw', required=True),
                direction=dict(type='str', default='increase', choices=['increase', 'decrease', 'either']),
                tolerance=dict(type='float', default=0.25),
                # No default here: _judge applies 0.01 to ratio metrics and
                # rejects an explicit value on samples metrics.
                max_absolute=dict(type='float'),
                critical=dict(type='bool', default=False),
                weight=dict(type='float', default=1),
                min_samples=dict(type='int', default=20),
                # No default: the global option below applies, and _judge
                # rejects each one on the other kind.
                critical_ratio=dict(type='float'),
                critical_difference=dict(type='float'),
            )),
            confidence=dict(type='float', default=0.98),
            # Not a password: stops the no_log heuristic warning on 'pass'.
            pass_score=dict(type='float', default=95, no_log=False),
            marginal_score=dict(type='float', default=75),
            critical_ratio=dict(type='float', default=2.0),
            critical_difference=dict(type='float', default=0.05),
        ),
        supports_check_mode=True,
    )
    try:
        result = judge(
            module.params['metrics'],
            confidence=module.params['confidence'],
            pass_score=module.params['pass_score'],
            marginal_score=module.params['marginal_score'],
            critical_ratio=module.params['critical_ratio'],
            critical_difference=module.params['critical_difference'],
        )
    except JudgeError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
