"""A real SMTP server for the crm-email tests: Python 3.11's smtpd on 127.0.0.1.

Usage: python3 smtp_server.py OUT_DIR. Prints the port it listens on, then serves until it is
killed. Every accepted message is written to OUT_DIR/NNN.eml (atomically), its envelope to
OUT_DIR/NNN.env (MAIL FROM, then one RCPT TO per line). The recipient's local part picks a
behaviour:

- rejected@...  550 to RCPT TO (the envelope is refused)
- busy@...      451 after the message (transient)
- slow@...      no reply after the message for a minute (the client times out)
- noid@...      250 without a queue id
- anything else 250 "Ok: queued as TESTQNNN"
"""

import os
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import asyncore  # noqa: E402
import smtpd  # noqa: E402

OUT_DIR = sys.argv[1]


def local_part(address):
    return address.strip().strip("<>").split("@")[0].lower()


class Channel(smtpd.SMTPChannel):
    def smtp_RCPT(self, arg):
        if arg and local_part(arg.split(":", 1)[-1].split()[0]) == "rejected":
            self.push("550 5.1.1 <rejected>: Recipient address rejected: User unknown")
            return
        super().smtp_RCPT(arg)


class Server(smtpd.SMTPServer):
    channel_class = Channel
    count = 0

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        local = local_part(rcpttos[0]) if rcpttos else ""
        if local == "busy":
            return "451 4.3.0 Temporary lookup failure, try again later"
        if local == "slow":
            time.sleep(60)
        Server.count += 1
        base = os.path.join(OUT_DIR, "%03d" % Server.count)
        with open(base + ".env", "w") as envelope:
            envelope.write("\n".join([mailfrom] + list(rcpttos)) + "\n")
        # smtpd joins the received lines with a bare LF; restore the CRLF of the wire form
        # (a conforming client never sends a bare LF).
        with open(base + ".eml.tmp", "wb") as message:
            message.write(data.replace(b"\n", b"\r\n"))
        os.replace(base + ".eml.tmp", base + ".eml")
        if local == "noid":
            return "250 OK"
        return "250 2.0.0 Ok: queued as TESTQ%03d" % Server.count


server = Server(("127.0.0.1", 0), None, decode_data=False)
print(server.socket.getsockname()[1], flush=True)
asyncore.loop()
