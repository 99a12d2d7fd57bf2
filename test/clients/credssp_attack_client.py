#!/usr/bin/env python3
"""CredSSP negatives: pyspnego's real CredSSP initiator (the one
requests-credssp uses), with one thing changed per mode, driven over one
HTTPS connection by hand. JSON in, JSON out (see common.py); the Go test
judges.

conn: host, port, user, password (the inner NTLM logon)
spec: op = mode, one of
  control          nothing changed (must succeed: the harness itself works)
  wrong_password   TSCredentials carry another password
  mismatched_user  TSCredentials carry another user (spec.env.user/password, valid)
  tampered_pubkey  pubKeyAuth computed over another TLS key (a relay)
  version_change   the pubKeyAuth TSRequest claims version 2 after 6
  truncated        the first TSRequest loses its last 5 bytes
  command          the SOAP body sent on every leg (spec.command)
"""

import base64
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests  # noqa: E402
import spnego  # noqa: E402
import spnego._credssp as cs  # noqa: E402
from spnego._credssp_structures import TSCredentials, TSPasswordCreds  # noqa: E402

import common  # noqa: E402

TOKEN = re.compile(r"CredSSP ([^,\s]*)$", re.I)


def attack(conn, spec):
    mode = spec["op"]
    env = spec.get("env") or {}
    body = (spec.get("command") or "").encode()
    ctx = spnego.client(conn["user"], conn["password"], hostname=conn["host"], protocol="credssp")
    if mode == "wrong_password":
        ctx._ts_credential = TSCredentials(credentials=TSPasswordCreds("", conn["user"], env["password"]))
    elif mode == "mismatched_user":
        ctx._ts_credential = TSCredentials(credentials=TSPasswordCreds("", env["user"], env["password"]))
    elif mode == "tampered_pubkey":
        real = cs.get_certificate_public_key

        def other_key(cert):
            key = bytearray(real(cert))
            key[-5] ^= 0xFF  # another key: what a relay's own certificate would give
            return bytes(key)

        cs.get_certificate_public_key = other_key
    elif mode in ("version_change", "truncated"):
        pack = cs.TSRequest.pack

        def patched(self):
            if mode == "version_change" and self.pub_key_auth:
                self.version = 2
            data = pack(self)
            if mode == "truncated" and self.nego_tokens and not self.pub_key_auth:
                data = data[:-5]
            return data

        cs.TSRequest.pack = patched
    elif mode != "control":
        raise ValueError("unknown mode %r" % mode)

    s = requests.Session()
    url = "https://%s:%d/wsman" % (conn["host"], conn["port"])
    headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
    in_token = None
    legs = 0
    while True:
        out = ctx.step(in_token)
        if out is None:
            break
        legs += 1
        h = dict(headers, Authorization="CredSSP " + base64.b64encode(out).decode())
        r = s.post(url, data=body, headers=h, verify=False, timeout=30)
        if r.status_code != 401:
            return {"ok": r.status_code == 200, "http_status": r.status_code, "error": r.text[:2000], "timeouts": legs}
        m = TOKEN.search(r.headers.get("WWW-Authenticate", ""))
        if not m or not m.group(1):
            return {"ok": False, "http_status": 401, "error": "401 without a CredSSP token after %d legs" % legs}
        in_token = base64.b64decode(m.group(1))
        if ctx.complete:
            break
    return {"ok": False, "http_status": 401, "error": "conversation ended after %d legs" % legs}


def classify(exc):
    return {"error": str(exc)[:2000]}


if __name__ == "__main__":
    import urllib3

    urllib3.disable_warnings()
    common.main({m: attack for m in ("control", "wrong_password", "mismatched_user", "tampered_pubkey", "version_change", "truncated")}, classify)
