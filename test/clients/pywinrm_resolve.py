"""pywinrm, unmodified, reaching a host name the test resolves itself.

The security tests (test/security_test.go) need a real client that believes
it talks to a named server ("relay.attacker.example", this host's own name)
while everything stays on loopback. Only name resolution is replaced, as a
poisoned DNS or LLMNR answer would do; pywinrm, requests_ntlm and pyspnego
run as shipped.

stdin:  {"url", "user", "password", "transport", "command", "resolve": {name: ip}}
stdout: {"ok", "stdout", "stderr", "exit", "error"}
"""

import json
import socket
import sys

req = json.load(sys.stdin)
resolve = req.get("resolve") or {}
_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    return _getaddrinfo(resolve.get(host, host), *args, **kwargs)


socket.getaddrinfo = getaddrinfo

import winrm  # noqa: E402 (after the resolver override)

out = {"ok": False}
try:
    s = winrm.Session(req["url"], auth=(req["user"], req["password"]), transport=req["transport"],
                      server_cert_validation="ignore", operation_timeout_sec=10, read_timeout_sec=20)
    r = s.run_cmd(req["command"])
    out.update(ok=True, stdout=r.std_out.decode("utf-8", "replace"),
               stderr=r.std_err.decode("utf-8", "replace"), exit=r.status_code)
except Exception as e:  # the Go test decides what a failure means
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
