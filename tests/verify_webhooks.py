"""Verifies paycycle's webhook deliveries with the independent `standardwebhooks` package from
PyPI (pinned in tools/requirements.txt): the library a partner would use.

stdin:  {"secrets": ["whsec_..."], "deliveries": [{"id", "timestamp", "signature", "body"}]}
stdout: for each delivery, for each secret, whether that secret verifies it: [[true, false], ...]
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args = json.load(sys.stdin)
hooks = [Webhook(secret) for secret in args["secrets"]]
out = []
for d in args["deliveries"]:
    headers = {"webhook-id": d["id"], "webhook-timestamp": d["timestamp"], "webhook-signature": d["signature"]}
    row = []
    for hook in hooks:
        try:
            hook.verify(d["body"], headers)
            row.append(True)
        except WebhookVerificationError:
            row.append(False)
    out.append(row)
json.dump(out, sys.stdout)
