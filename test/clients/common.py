"""Shared plumbing for the scenario scripts driven by the Go e2e tests.

Protocol: one JSON object on stdin, {"conn": {...}, "spec": {...}}; one JSON
object on stdout, the result. The scripts only drive the client library and
report what happened; every assertion lives in the Go tests.

conn: scheme (http|https), host, port, auth (basic|ntlm|negotiate),
      encryption (always|never|auto), user, password, operation_timeout,
      read_timeout, cbt (bool)
spec: op (run|concurrent|signal|long|open_shell|run_in_shell|delete_shell),
      command, args, env, cwd, stdin (base64), digest (bool), count,
      shell_id, wait_for (base64), signal (ctrl_c|terminate), keep_shell
"""

import base64
import hashlib
import json
import sys
import threading
import time
import traceback


def b64(data):
    return base64.b64encode(data or b"").decode("ascii")


def unb64(s):
    return base64.b64decode(s) if s else b""


def output(result, stdout, stderr, digest):
    """Fill result with the command's output (or its digest for big outputs)."""
    if digest:
        result["stdout_sha256"] = hashlib.sha256(stdout).hexdigest()
        result["stdout_len"] = len(stdout)
        result["stderr"] = b64(stderr[:65536])
    else:
        result["stdout"] = b64(stdout)
        result["stderr"] = b64(stderr)


def fill_command(spec, i=None):
    cmd = spec.get("command", "")
    if i is not None:
        cmd = cmd.replace("{i}", str(i))
    return cmd


def main(ops, classify):
    """Read the request, run spec.op from ops, print the result."""
    req = json.load(sys.stdin)
    conn, spec = req["conn"], req["spec"]
    started = time.monotonic()
    op = ops.get(spec.get("op"))
    if op is None:
        result = {"ok": False, "error_type": "UsageError", "error": "unknown op %r" % spec.get("op")}
    else:
        try:
            result = op(conn, spec)
            result.setdefault("ok", True)
        except Exception as exc:  # reported, judged by the Go side
            result = {"ok": False}
            result.update(classify(exc))
            result.setdefault("error_type", type(exc).__name__)
            result.setdefault("error", str(exc)[:4000])
            result["traceback"] = traceback.format_exc()[-4000:]
    result["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def concurrently(n, fn):
    """Run fn(i) for i in range(n) on n threads; return results in order."""
    results = [None] * n
    errors = {}

    def worker(i):
        try:
            results[i] = fn(i)
        except Exception as exc:
            errors[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
