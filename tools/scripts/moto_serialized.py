"""moto's server with DynamoDB's write atomicity.

moto applies a conditional write as "check, then write" with no lock, and its server handles
requests on several threads: two concurrent conditional writes to one item can both pass their
condition (our 200-round claim test caught two renew workers both winning a lease). Real
DynamoDB serializes writes to an item, so a condition holds at the moment of the write.

This launcher runs the same moto application, but lets one request at a time touch moto's
backends: every conditional write and transaction becomes atomic, as in DynamoDB. Connections are
still accepted concurrently. Usage: python moto_serialized.py -H 127.0.0.1 -p PORT

It also makes moto's TransactWriteItems copy each table once per transaction instead of once per
item (moto snapshots the whole table for rollback before applying anything; the snapshots of one
table taken in that loop are identical, so one is enough). Behaviour is unchanged; a renew test
with 200 subscriptions went from minutes to seconds.
"""

import argparse
import copy
import signal
import sys
import threading
import types

import moto.dynamodb.models as dynamodb_models

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def _snapshot_each_table_once() -> None:
    original = dynamodb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        copies = {}

        def deepcopy_once(obj, memo=None):
            # Only tables are snapshotted once; anything else is copied as before. Called only
            # while the global request lock is held: nothing else runs moto code meanwhile.
            if not isinstance(obj, dynamodb_models.Table):
                return copy.deepcopy(obj, memo)
            key = id(obj)
            if key not in copies:
                copies[key] = (obj, copy.deepcopy(obj))  # keeps obj alive, so its id stays unique
            return copies[key][1]

        real_copy_module = dynamodb_models.copy
        dynamodb_models.copy = types.SimpleNamespace(deepcopy=deepcopy_once, copy=copy.copy)
        try:
            return original(self, transact_items)
        finally:
            dynamodb_models.copy = real_copy_module

    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))

    _snapshot_each_table_once()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Consume the response inside the lock: moto does its work while it is produced.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
