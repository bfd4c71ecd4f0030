# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: canary_weights.yml next to this file.

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._weights import (
    WeightsError,
    canary_weights as _canary_weights,
)


def canary_weights(initial, canary, percent=10):
    try:
        return _canary_weights(initial, canary, percent)
    except WeightsError as exc:
        raise AnsibleFilterError('grayrelease.canary.canary_weights: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'canary_weights': canary_weights}
