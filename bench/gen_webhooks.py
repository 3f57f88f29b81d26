#!/usr/bin/env python3
"""Pre-signs N lead deliveries for the webhook benchmark (wrk cannot compute HMACs).

usage: gen_webhooks.py <secret whsec_…> <count> <out.tsv>
Each line: webhook-id TAB webhook-timestamp TAB v1,<signature> TAB body. Timestamps are now, so
run the benchmark within intake.replay_window_secs (5 minutes) of generating them.
"""
import base64, hashlib, hmac, json, sys, time, uuid

secret, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = base64.b64decode(secret.removeprefix("whsec_"))
ts = str(int(time.time()))
with open(out, "w") as f:
    for n in range(count):
        msg_id = f"bench_{uuid.uuid4().hex}"
        body = json.dumps({
            "Vorname": "Lead", "Nachname": f"Nummer {n}", "E-Mail": f"lead{n}.{msg_id[-8:]}@firma-{n % 997}.de",
            "Telefon": f"+49 152 {20000000 + n}", "Firma": f"Firma {n % 997} GmbH", "Sprache": "de",
        }, ensure_ascii=False)
        sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
        f.write(f"{msg_id}\t{ts}\tv1,{sig}\t{body}\n")
