"""A stub of st2's API, the key-value part only: what an action's datastore calls
reach when they run outside the test process (``ActionDatastoreService`` ->
st2client -> ``<auth.api_url>/v1/keys/<name>``).

Routes, as st2api serves them (st2api/controllers/v1/keyvalue.py):
``GET /v1/keys/<name>?scope=&decrypt=`` (404 when missing),
``PUT /v1/keys/<name>`` with the KeyValuePair JSON, ``DELETE
/v1/keys/<name>?scope=`` (204, 404 when missing). Requests need the
``X-Auth-Token`` header (401 otherwise). Values are kept as sent (st2client
sends strings); ``ttl`` and ``secret`` are recorded, keys never expire.
"""

import threading

from synthralos_tests.http_server import Reply, StubHTTPServer

__all__ = ["St2ApiServer"]

KEY = r"/v1/keys/(?P<name>[^/?]+)"


class St2ApiServer(StubHTTPServer):
    def __init__(self, token="test-token", **kwargs):
        self.token = token
        self.keys = {}  # name -> the stored KeyValuePair JSON
        self._state = threading.RLock()
        super(St2ApiServer, self).__init__(**kwargs)

    @property
    def api_url(self):
        """What st2's ``auth.api_url`` is set to (st2 appends ``/v1``)."""
        return self.url

    def setup_routes(self):
        self.add_route("GET", KEY, self._get)
        self.add_route("PUT", KEY, self._put)
        self.add_route("DELETE", KEY, self._delete)

    def _unauthorized(self, request):
        if request.header("x-auth-token") != self.token:
            return Reply(401, {"faultstring": "Unauthorized - One of Token or API key required."})
        return None

    def _get(self, request):
        denied = self._unauthorized(request)
        if denied:
            return denied
        with self._state:
            item = self.keys.get(request.params["name"])
        if item is None:
            return Reply(404, {"faultstring": 'The key "%s" does not exist in the StackStorm datastore.'
                               % request.params["name"]})
        return Reply(200, item)

    def _put(self, request):
        denied = self._unauthorized(request)
        if denied:
            return denied
        body = dict(request.json or {})
        body["name"] = request.params["name"]
        body.setdefault("scope", "st2kv.system")
        with self._state:
            self.keys[body["name"]] = body
        return Reply(200, body)

    def _delete(self, request):
        denied = self._unauthorized(request)
        if denied:
            return denied
        with self._state:
            found = self.keys.pop(request.params["name"], None)
        return Reply(204) if found is not None else Reply(404, {"faultstring": "not found"})
