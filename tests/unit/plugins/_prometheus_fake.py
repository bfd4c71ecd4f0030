"""A fake Prometheus HTTP API on loopback, for the unit tests of _prometheus and prometheus_query."""
import contextlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers like Prometheus: a range query gives one point per step, an
    instant query the value of `time`, bad PromQL a 400 with a JSON error."""

    seen = []

    def log_message(self, *args):  # pylint: disable=arguments-differ
        return

    def do_GET(self):  # pylint: disable=invalid-name
        path, _sep, raw = self.path.partition("?")
        params = dict((k, v[0]) for k, v in urllib.parse.parse_qs(raw).items())
        self.seen.append((path, params))
        if "bad" in params["query"]:
            self.answer(400, {"status": "error", "errorType": "bad_data", "error": "unexpected identifier"})
        elif path == "/api/v1/query_range":
            start, end, step = float(params["start"]), float(params["end"]), float(params["step"].rstrip("s"))
            points = [[start + i * step, str(i)] for i in range(int((end - start) / step) + 1)]
            self.answer(200, {"status": "success", "data": {"resultType": "matrix",
                                                            "result": [{"metric": {}, "values": points}]}})
        else:
            self.answer(200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [float(params["time"]), params["time"]]}]}})

    def answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def fake_prometheus_url():
    """The base URL of a fake Prometheus, for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakePrometheus.seen = []
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
