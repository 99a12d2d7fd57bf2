#!/usr/bin/env python3
"""pyspnego as a Kerberos initiator against the Go acceptor (kerberos
package tests). Line protocol on stdin/stdout, base64 fields:

    -> TOKEN <b64>            initiator token
    <- TOKEN <b64> | FINAL <b64 or ->
    -> SEALED <hdr> <data>    wrap_winrm of each message size in argv
    <- REPLY <hdr> <data>     the acceptor's wrap of b"reply:" + message
    -> DONE
argv: protocol (kerberos|negotiate) service delegate(0|1) sizes...
The credential cache comes from KRB5CCNAME, the realm from KRB5_CONFIG.
"""
import base64
import sys

import spnego


def out(*words):
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def b64(b):
    return base64.b64encode(b).decode() or "-"


def read():
    return sys.stdin.readline().split()


def main():
    protocol, service, delegate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    sizes = [int(s) for s in sys.argv[4:]]
    req = spnego.ContextReq.default
    if delegate:
        req |= spnego.ContextReq.delegate
    ctx = spnego.client(hostname="localhost", service=service, protocol=protocol, context_req=req)
    tok = ctx.step()
    while True:
        out("TOKEN", base64.b64encode(tok).decode())
        w = read()
        inb = None if w[1] == "-" else base64.b64decode(w[1])
        if w[0] == "FINAL":
            if inb is not None:
                ctx.step(inb)
            break
        tok = ctx.step(inb)
    if not ctx.complete:
        raise SystemExit("context not complete")
    for n in sizes:
        msg = bytes((i * 7 + n) % 251 for i in range(n))
        res = ctx.wrap_winrm(msg)
        out("SEALED", b64(res.header), b64(res.data))
        w = read()
        if w[0] != "REPLY":
            raise SystemExit("unexpected %r" % w[:1])
        got = ctx.unwrap_winrm(base64.b64decode(w[1]), base64.b64decode(w[2]))
        if got != b"reply:" + msg:
            raise SystemExit("reply %d does not match" % n)
    out("DONE")


if __name__ == "__main__":
    main()
