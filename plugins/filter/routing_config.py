# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: routing_config.yml next to this file.

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.grayrelease.canary.plugins.module_utils._routing import RoutingError, render_haproxy


def routing_config(routing, servers=None, server_options='check', backend_options=None, route_header=None,
                   log_capture=True):
    try:
        return render_haproxy(routing, servers=servers, server_options=server_options,
                              backend_options=backend_options, route_header=route_header, log_capture=log_capture)
    except RoutingError as exc:
        raise AnsibleFilterError('grayrelease.canary.routing_config: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'routing_config': routing_config}
