"""moto's server with DynamoDB's write atomicity.

moto applies a conditional write as "check, then write" with no lock, and its server handles
requests on several threads: two concurrent conditional writes to one item can both pass their
condition (our 200-round claim test caught two renew workers both winning a lease). Real
DynamoDB serializes writes to an item, so a condition holds at the moment of the write.

This launcher runs the same moto application, but lets one request at a time touch moto's
backends: every conditional write and transaction becomes atomic, as in DynamoDB. Connections are
still accepted concurrently. Usage: python moto_serialized.py -H 127.0.0.1 -p PORT

It also gives moto's TransactWriteItems an undo log instead of a whole-table snapshot (see
_undo_log_transactions): same outcome, but a transaction costs O(its items), not O(table).
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


def _undo_log_transactions() -> None:
    """TransactWriteItems with an undo log instead of whole-table snapshots.

    moto deep-copies every table a transaction names before applying it, so that it can put the
    copy back on failure: O(table size) per transaction (seconds per renewal with thousands of
    subscriptions), and the restored table is a different object than the one stream readers
    hold. Here moto's own transaction code runs unchanged, but the "snapshot" is the live table,
    and the item images moto reads before each write (it reads every target item to check its
    condition) are kept; on failure exactly those items are put back and the table's stream is
    cut back to where it was. Same outcome, O(items in the transaction).
    """
    original = dynamodb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        before = {}  # (table, hash, range) -> (table, hash, range, deep copy of the item or None)
        stream_lengths = {
            name: len(table.stream_shard.items)
            for name, table in self.tables.items()
            if table.stream_shard is not None
        }

        def get_item(table_name, keys, projection_expressions=None):
            table = self.get_table(table_name)
            hash_key, range_key = self.get_keys_value(table, keys)
            item = table.get_item(hash_key, range_key, projection_expressions)
            slot = (table_name, str(hash_key), str(range_key))
            if slot not in before:
                before[slot] = (table, hash_key, range_key, copy.deepcopy(item))
            return item

        def undo():
            for table, hash_key, range_key, item in before.values():
                if range_key is not None:
                    if item is None:
                        table.items.get(hash_key, {}).pop(range_key, None)
                    else:
                        table.items[hash_key][range_key] = item
                elif item is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
            for name, length in stream_lengths.items():
                shard = self.tables[name].stream_shard
                if shard is not None:
                    del shard.items[length:]

        # Called only while the global request lock is held: nothing else runs moto code meanwhile.
        real_copy_module = dynamodb_models.copy
        dynamodb_models.copy = types.SimpleNamespace(
            deepcopy=lambda obj, memo=None: obj if isinstance(obj, dynamodb_models.Table) else copy.deepcopy(obj, memo),
            copy=copy.copy,
        )
        self.get_item = get_item
        try:
            return original(self, transact_items)
        except BaseException:
            undo()
            raise
        finally:
            del self.get_item
            dynamodb_models.copy = real_copy_module

    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))

    _undo_log_transactions()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Consume the response inside the lock: moto does its work while it is produced.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
