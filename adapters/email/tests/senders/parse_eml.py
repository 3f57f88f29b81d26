"""Parses an RFC 5322 message from stdin with Python's email package (independently of lettre)
and prints it as JSON: headers (decoded), the MIME structure, and every leaf part."""

import base64
import email
import json
import sys
from email import policy

message = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)


def leaf(part):
    payload = part.get_payload(decode=True) or b""
    out = {
        "content_type": part.get_content_type(),
        "params": {key: value for key, value in (part.get_params() or [])[1:]},
        "filename": part.get_filename(),
        "disposition": part.get_content_disposition(),
        "bytes_b64": base64.b64encode(payload).decode(),
    }
    if part.get_content_maintype() == "text":
        out["text"] = part.get_content()
    return out


print(
    json.dumps(
        {
            "headers": [[name, str(value)] for name, value in message.items()],
            "structure": [part.get_content_type() for part in message.walk()],
            "parts": [leaf(part) for part in message.walk() if not part.is_multipart()],
            "defects": [str(defect) for part in message.walk() for defect in part.defects],
        }
    )
)
