"""An st2tests datastore service that pages `list_values` the way st2's API does.

st2tests' `MockDatastoreService` ignores `limit` and `offset` and returns every
key; a live st2 (st2api's key-value controller, sorted by name) returns at most
`limit` keys from `offset`. Code that pages or probes by offset is tested
against this one. It also records each list call, so a test can say how much
a caller read. It serves `DatastoreStore` directly (it has the service's
get/set/delete/list_values), on st2tests' mock action service.
"""

import logging

from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["PagingDatastoreService"]


class PagingDatastoreService(MockDatastoreService):
    def __init__(self, pack_name="synthralos", class_name="PagingDatastore"):
        super(PagingDatastoreService, self).__init__(logging.getLogger(__name__), pack_name, class_name)
        self.list_calls = []  # [(limit, offset, how many keys were returned)]

    def list_values(self, local=True, prefix=None, limit=None, offset=0):
        everything = super(PagingDatastoreService, self).list_values(local=local, prefix=prefix)
        ordered = sorted(everything, key=lambda kvp: kvp.name)
        offset = int(offset or 0)
        page = ordered[offset:offset + int(limit)] if limit else ordered[offset:]
        self.list_calls.append((limit, offset, len(page)))
        return page

    def keys_listed(self):
        return sum(n for _, _, n in self.list_calls)

