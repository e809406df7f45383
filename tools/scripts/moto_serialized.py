"""moto's server with DynamoDB's write atomicity.

moto applies a conditional write as "check, then write" with no lock, and its server handles
requests on several threads: two concurrent conditional writes to one item can both pass their
condition (our 200-round claim test caught two renew workers both winning a lease). Real
DynamoDB serializes writes to an item, so a condition holds at the moment of the write.

This launcher runs the same moto application, but lets one request at a time touch moto's
backends: every conditional write and transaction becomes atomic, as in DynamoDB. Connections are
still accepted concurrently. Usage: python moto_serialized.py -H 127.0.0.1 -p PORT
"""

import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Consume the response inside the lock: moto does its work while it is produced.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
