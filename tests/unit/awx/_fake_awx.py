# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for the part of AWX's REST API (/api/v2/) that awx/configure.yml's
awx.awx modules use, on loopback: objects in memory, list views filtered by
their query, PATCH, DELETE, associations (credentials, success_nodes, ...),
survey specs, workflow approval templates made through a node's
create_approval_template, and settings/all. It keeps what it is given, as
AWX does, and logs every request that is not a GET, so a test can see what a
second run of configure.yml still writes."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TYPES = {'organizations': 'organization', 'inventories': 'inventory', 'credentials': 'credential',
         'projects': 'project', 'job_templates': 'job_template', 'workflow_job_templates': 'workflow_job_template',
         'workflow_job_template_nodes': 'workflow_job_template_node',
         'workflow_approval_templates': 'workflow_approval_template', 'execution_environments': 'execution_environment',
         'labels': 'label', 'instance_groups': 'instance_group', 'notification_templates': 'notification_template'}
# What AWX's unified_job_templates list shows.
UNIFIED = ('projects', 'job_templates', 'workflow_job_templates', 'workflow_approval_templates')
RELATED = ('survey_spec', 'credentials', 'labels', 'instance_groups', 'success_nodes', 'failure_nodes',
           'always_nodes', 'workflow_nodes', 'notification_templates_started', 'notification_templates_success',
           'notification_templates_error', 'notification_templates_approvals', 'create_approval_template', 'update')
PREFIX = '/api/v2/'


class FakeAWX(object):

    def __init__(self):
        self.objects = dict((collection, {}) for collection in TYPES)
        self.links = {}
        self.surveys = {}
        self.settings = {'AWX_ISOLATION_SHOW_PATHS': []}
        self.writes = []
        self.next_id = 1
        self.lock = threading.Lock()
        org = self.add('organizations', {'name': 'Default'})
        self.add('inventories', {'name': 'production', 'organization': org['id']})
        self.add('credentials', {'name': 'fleet', 'organization': org['id']})

    def add(self, collection, data):
        number, self.next_id = self.next_id, self.next_id + 1
        url = '%s%s/%d/' % (PREFIX, collection, number)
        item = dict(data, id=number, type=TYPES[collection], url=url,
                    related=dict((r, url + r + '/') for r in RELATED), summary_fields={})
        if collection == 'projects':
            # No update job runs here: nothing in summary_fields.current_update to wait for.
            item.setdefault('scm_revision', '')
        self._related_ujt(item)
        self.objects[collection][number] = item
        return item

    def _related_ujt(self, item):
        if item['type'] == 'workflow_job_template_node' and item.get('unified_job_template'):
            target = self.find(item['unified_job_template'])
            if target:
                item['related']['unified_job_template'] = target['url']

    def find(self, number):
        for collection in self.objects.values():
            if number in collection:
                return collection[number]
        return None

    def handle(self, method, path, query, body):
        """(status, json) of one request."""
        if not path.startswith(PREFIX):
            return 404, {'detail': 'not found'}
        parts = [p for p in path[len(PREFIX):].split('/') if p]
        if method != 'GET':
            self.writes.append((method, '/'.join(parts), body))
        if parts == ['settings', 'all']:
            if method == 'PATCH':
                self.settings.update(body)
            return 200, dict(self.settings)
        collection = parts[0]
        if collection == 'unified_job_templates' and len(parts) == 1:
            items = [i for c in UNIFIED for i in self.objects[c].values()]
            return 200, self._list(items, query)
        if collection not in self.objects:
            return 404, {'detail': 'no such endpoint %s' % collection}
        if len(parts) == 1:
            if method == 'POST':
                return 201, self.add(collection, body)
            return 200, self._list(list(self.objects[collection].values()), query)
        item = self.objects[collection].get(int(parts[1]))
        if item is None:
            return 404, {'detail': 'not found'}
        if len(parts) == 2:
            if method == 'PATCH':
                if collection == 'workflow_approval_templates':
                    # AWX's approval template has these fields only; it ignores the others.
                    body = dict((k, v) for k, v in body.items() if k in ('name', 'description', 'timeout'))
                item.update(body)
                self._related_ujt(item)
            elif method == 'DELETE':
                del self.objects[collection][item['id']]
                return 204, {}
            return 200, item
        relation = parts[2]
        key = (collection, item['id'], relation)
        if relation == 'survey_spec':
            if method == 'POST':
                self.surveys[key] = body
            return 200, self.surveys.get(key, {})
        if relation == 'create_approval_template':
            approval = self.add('workflow_approval_templates', dict(
                (k, body[k]) for k in ('name', 'description', 'timeout') if k in body))
            item['unified_job_template'] = approval['id']
            self._related_ujt(item)
            return 201, approval
        ids = self.links.setdefault(key, [])
        if method == 'POST':
            if body.get('disassociate'):
                ids.remove(int(body['id']))
            elif int(body['id']) not in ids:
                ids.append(int(body['id']))
            return 204, {}
        return 200, self._list([self.find(i) for i in ids], {})

    @staticmethod
    def _list(items, query):
        wanted = dict((k, v) for k, v in query.items() if k not in ('page_size', 'page', 'order_by'))
        either = dict((k[4:], v) for k, v in wanted.items() if k.startswith('or__'))
        plain = dict((k, v) for k, v in wanted.items() if not k.startswith('or__'))
        found = [i for i in items if all(str(i.get(k)) == v for k, v in plain.items())
                 and (not either or any(str(i.get(k)) == v for k, v in either.items()))]
        return {'count': len(found), 'next': None, 'previous': None, 'results': found}


def serve(fake):
    """(server, base URL) of a loopback HTTP server answering for fake; server.shutdown() stops it."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method):
            parts = urlsplit(self.path)
            length = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(length) if length else b''
            body = json.loads(raw) if raw.strip() else {}
            with fake.lock:
                status, data = fake.handle(method, parts.path, dict(parse_qsl(parts.query)), body)
            text = json.dumps(data).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def do_GET(self):  # noqa: N802
            self._answer('GET')

        def do_POST(self):  # noqa: N802
            self._answer('POST')

        def do_PATCH(self):  # noqa: N802
            self._answer('PATCH')

        def do_DELETE(self):  # noqa: N802
            self._answer('DELETE')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, 'http://127.0.0.1:%d' % server.server_address[1]
