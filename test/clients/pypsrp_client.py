#!/usr/bin/env python3
"""pypsrp WinRS scenarios (pypsrp.shell.WinRS / Process), JSON in and out: see common.py."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pypsrp.exceptions import (  # noqa: E402
    AuthenticationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.shell import Process, SignalCode, WinRS  # noqa: E402
from pypsrp.wsman import WSMan, SelectorSet  # noqa: E402

import common  # noqa: E402

TIMED_OUT = 2150858793


def wsman(conn):
    op_timeout = int(conn.get("operation_timeout") or 20)
    kwargs = {}
    if conn["auth"] in ("negotiate", "ntlm", "kerberos"):
        kwargs["negotiate_send_cbt"] = bool(conn.get("cbt", True))
    password = conn["password"]
    if conn.get("ccache_dir"):
        # Kerberos from the user's credential cache (KRB5CCNAME), no password.
        password = None
        if conn.get("delegate"):
            kwargs["negotiate_delegate"] = True
    if conn["auth"] == "certificate":
        kwargs["certificate_pem"] = conn["cert_pem"]
        kwargs["certificate_key_pem"] = conn["key_pem"]
    return WSMan(
        conn["host"],
        port=conn["port"],
        username=conn["user"],
        password=password,
        ssl=conn["scheme"] == "https",
        auth=conn["auth"],
        cert_validation=False,
        encryption=conn.get("encryption") or "auto",
        operation_timeout=op_timeout,
        read_timeout=int(conn.get("read_timeout") or op_timeout + 10),
        **kwargs,
    )


def classify(exc):
    if isinstance(exc, WSManFaultError):
        return {"error_type": "WSManFaultError", "http_status": 500, "wsman_code": exc.code or 0, "error": exc.reason or str(exc)}
    if isinstance(exc, AuthenticationError):
        return {"error_type": "AuthenticationError", "http_status": 401}
    if isinstance(exc, WinRMTransportError):
        return {"error_type": "WinRMTransportError", "http_status": exc.code, "error": str(exc)[:2000]}
    if isinstance(exc, WinRMError):
        return {"error_type": type(exc).__name__}
    return {}


def shell(w, spec):
    return WinRS(w, environment=spec.get("env") or None, working_directory=spec.get("cwd") or None)


def attach(w, shell_id):
    """A WinRS object for an existing shell id."""
    s = WinRS(w, id=shell_id)
    s._selector_set = SelectorSet()
    s._selector_set.add_option("ShellId", shell_id)
    s.opened = True
    return s


def split(spec, command=None):
    """pypsrp sends one Arguments element per argument."""
    return command or common.fill_command(spec), spec.get("args") or None


def run_in(s, spec, command=None):
    exe, args = split(spec, command)
    p = Process(s, exe, args)
    stdin = common.unb64(spec.get("stdin"))
    if stdin or spec.get("stdin_end"):
        p.begin_invoke()
        step = 32768
        for off in range(0, len(stdin), step):
            p.send(stdin[off : off + step], end=off + step >= len(stdin))
        if not stdin:
            p.send(b"", end=True)
        p.end_invoke()
    else:
        p.invoke()
    p.signal(SignalCode.TERMINATE)
    return p.stdout, p.stderr, p.rc


def op_run(conn, spec):
    with wsman(conn) as w:
        with shell(w, spec) as s:
            out, err, rc = run_in(s, spec)
            sid = s.id
    res = {"exit_code": rc, "shell_id": sid}
    common.output(res, out, err, spec.get("digest"))
    return res


def op_concurrent(conn, spec):
    def one(i):
        with wsman(conn) as w:
            with shell(w, spec) as s:
                out, err, rc = run_in(s, spec, common.fill_command(spec, i))
        r = {"ok": True, "exit_code": rc}
        common.output(r, out, err, spec.get("digest"))
        return r

    results, errors = common.concurrently(int(spec.get("count") or 1), one)
    for i, exc in errors.items():
        r = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)[:2000]}
        r.update(classify(exc))
        results[i] = r
    return {"results": results}


def poll_until(p, marker, deadline):
    while time.monotonic() < deadline:
        p.poll_invoke()
        if p.state == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done":
            return True
        if marker and marker in p.stdout:
            return False
    raise TimeoutError("marker %r not seen; stdout so far %r" % (marker, p.stdout[-200:]))


def op_signal(conn, spec):
    keep = bool(spec.get("keep_shell"))
    w = wsman(conn)
    s = shell(w, spec)
    s.open()
    try:
        exe, args = split(spec)
        p = Process(s, exe, args)
        p.begin_invoke()
        deadline = time.monotonic() + 60
        if poll_until(p, common.unb64(spec.get("wait_for")), deadline):
            raise RuntimeError("command finished before the signal")
        t0 = time.monotonic()
        res = {"shell_id": s.id, "command_id": p.id}
        if spec["signal"] == "ctrl_c":
            p.signal(SignalCode.CTRL_C)
            poll_until(p, None, deadline)
            res["exit_code"] = p.rc
            p.signal(SignalCode.TERMINATE)
        else:
            p.signal(SignalCode.TERMINATE)
        res["signal_to_done_ms"] = int((time.monotonic() - t0) * 1000)
        common.output(res, p.stdout, p.stderr, False)
        return res
    finally:
        if not keep:
            s.close()
        w.close()


def op_long(conn, spec):
    with wsman(conn) as w:
        with shell(w, spec) as s:
            exe, args = split(spec)
            p = Process(s, exe, args)
            p.begin_invoke()
            timeouts, out, err, rc = 0, b"", b"", None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    state, rc, buf = s.receive("stdout stderr", p.id)
                except WSManFaultError as exc:
                    if exc.code == TIMED_OUT:
                        timeouts += 1
                        continue
                    raise
                out += buf.get("stdout", b"")
                err += buf.get("stderr", b"")
                if state.endswith("/Done"):
                    break
            else:
                raise TimeoutError("command not done")
            p.signal(SignalCode.TERMINATE)
    res = {"exit_code": rc, "timeouts": timeouts}
    common.output(res, out, err, False)
    return res


def op_open_shell(conn, spec):
    w = wsman(conn)
    s = shell(w, spec)
    s.open()
    sid = s.id
    w.close()
    return {"shell_id": sid}


def op_run_in_shell(conn, spec):
    with wsman(conn) as w:
        out, err, rc = run_in(attach(w, spec["shell_id"]), spec)
    res = {"exit_code": rc, "shell_id": spec["shell_id"]}
    common.output(res, out, err, spec.get("digest"))
    return res


def op_delete_shell(conn, spec):
    with wsman(conn) as w:
        attach(w, spec["shell_id"]).close()
    return {"shell_id": spec["shell_id"]}


OPS = {
    "run": op_run,
    "concurrent": op_concurrent,
    "signal": op_signal,
    "long": op_long,
    "open_shell": op_open_shell,
    "run_in_shell": op_run_in_shell,
    "delete_shell": op_delete_shell,
}

if __name__ == "__main__":
    common.main(OPS, classify)
