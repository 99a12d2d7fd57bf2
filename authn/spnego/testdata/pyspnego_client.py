"""Real-client cross-check for winrmd's Negotiate acceptor and sealing codec.

Runs pyspnego (the client pywinrm and pypsrp use) as an NTLM or SPNEGO
initiator and pypsrp's WinRMEncryption for the MS-WSMV multipart framing.
It talks to the Go test over stdin/stdout, one line per message:

  client -> test   TOKEN <b64>                  a Negotiate token
  test -> client   TOKEN <b64> | FINAL <b64|->  the server's answer
  client -> test   SEALED <b64 content-type> <b64 body>
  test -> client   REPLY <b64 content-type> <b64 body>
  client -> test   DONE | FAIL <reason>

usage: pyspnego_client.py PROTOCOL USER PASSWORD SIZE...
"""

import base64
import sys

import spnego
from pypsrp.encryption import WinRMEncryption


def send(*words):
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def b64(b):
    return base64.b64encode(b).decode()


def recv():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("test closed the pipe")
    return line.split()


def main():
    protocol, user, password = sys.argv[1:4]
    sizes = [int(s) for s in sys.argv[4:]]
    ctx = spnego.client(user, password, hostname="winrmd.test", service="HTTP", protocol=protocol)

    out = ctx.step()
    while True:
        send("TOKEN", b64(out))
        words = recv()
        token = None if words[1] == "-" else base64.b64decode(words[1])
        if words[0] == "FINAL":
            if token is not None:
                ctx.step(token)
            break
        out = ctx.step(token)
    if not ctx.complete:
        send("FAIL", "client context incomplete")
        return

    enc = WinRMEncryption(ctx, WinRMEncryption.SPNEGO)
    for size in sizes:
        msg = (b"<s:Envelope>" + b"x" * size)[:size]
        content_type, body = enc.wrap_message(msg)
        full_type = '%s;protocol="%s";boundary="Encrypted Boundary"' % (content_type, WinRMEncryption.SPNEGO)
        send("SEALED", b64(full_type.encode()), b64(body))
        words = recv()
        reply_type = base64.b64decode(words[1]).decode()
        if 'protocol="%s"' % WinRMEncryption.SPNEGO not in reply_type:
            send("FAIL", "reply content type")
            return
        plain = enc.unwrap_message(base64.b64decode(words[2]), "Encrypted Boundary")
        if plain != b"reply:" + msg:
            send("FAIL", "reply plaintext")
            return
    send("DONE")


if __name__ == "__main__":
    main()
