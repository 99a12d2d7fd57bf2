#!/usr/bin/env python3
"""pywinrm scenarios (winrm.protocol.Protocol), JSON in and out: see common.py."""

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import xmltodict  # noqa: E402  (a pywinrm dependency)
from winrm.exceptions import (  # noqa: E402
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol  # noqa: E402

import common  # noqa: E402

CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
CODES = {
    "ctrl_c": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c",
    "terminate": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate",
}


def protocol(conn):
    transport = {"basic": "basic", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos", "certificate": "certificate", "credssp": "credssp"}[conn["auth"]]
    op_timeout = int(conn.get("operation_timeout") or 20)
    extra = {}
    if transport == "kerberos":
        # The ticket comes from the user's credential cache (KRB5CCNAME).
        extra["kerberos_delegation"] = bool(conn.get("delegate"))
    if conn.get("cert_pem"):
        extra.update(cert_pem=conn["cert_pem"], cert_key_pem=conn["key_pem"])
    return Protocol(
        endpoint="%s://%s:%d/wsman" % (conn["scheme"], conn["host"], conn["port"]),
        transport=transport,
        username=conn["user"],
        password=conn["password"],
        **extra,
        server_cert_validation="ignore",
        message_encryption=conn.get("encryption") or "auto",
        operation_timeout_sec=op_timeout,
        read_timeout_sec=int(conn.get("read_timeout") or op_timeout + 10),
        send_cbt=bool(conn.get("cbt", True)),
    )


def classify(exc):
    if isinstance(exc, WSManFaultError):
        return {
            "error_type": "WSManFaultError",
            "http_status": exc.code,
            "wsman_code": exc.wsman_fault_code or 0,
            "fault_subcode": exc.fault_subcode or "",
            "error": exc.reason or str(exc),
        }
    if isinstance(exc, InvalidCredentialsError):
        return {"error_type": "InvalidCredentialsError", "http_status": 401}
    if isinstance(exc, WinRMTransportError):
        return {"error_type": "WinRMTransportError", "http_status": exc.code, "error": exc.message[:2000]}
    if isinstance(exc, WinRMError):
        return {"error_type": type(exc).__name__, "http_status": getattr(exc, "code", 0) or 0}
    resp = getattr(exc, "response", None)
    if resp is not None and getattr(resp, "status_code", None):
        return {"http_status": resp.status_code}
    return {}


def send_signal(p, shell_id, command_id, code):
    req = {"env:Envelope": p.build_wsman_header(resource_uri=CMD_URI, action=SIGNAL, shell_id=shell_id, message_id=uuid.uuid4())}
    sig = req["env:Envelope"].setdefault("env:Body", {}).setdefault("rsp:Signal", {})
    sig["@CommandId"] = command_id
    sig["rsp:Code"] = CODES[code]
    p.send_message(xmltodict.unparse(req))


def open_shell(p, spec):
    return p.open_shell(working_directory=spec.get("cwd") or None, env_vars=spec.get("env") or None)


def run_in(p, shell_id, spec, command=None):
    cid = p.run_command(shell_id, command or common.fill_command(spec), spec.get("args") or ())
    stdin = common.unb64(spec.get("stdin"))
    if stdin or spec.get("stdin_end"):
        # Send in chunks, as a real caller streaming input would.
        step = 32768
        for off in range(0, len(stdin), step):
            p.send_command_input(shell_id, cid, stdin[off : off + step], end=off + step >= len(stdin))
        if not stdin:
            p.send_command_input(shell_id, cid, b"", end=True)
    out, err, rc = p.get_command_output(shell_id, cid)
    p.cleanup_command(shell_id, cid)
    return out, err, rc


def op_run(conn, spec):
    p = protocol(conn)
    shell_id = open_shell(p, spec)
    try:
        out, err, rc = run_in(p, shell_id, spec)
    finally:
        p.close_shell(shell_id)
    res = {"exit_code": rc, "shell_id": shell_id}
    common.output(res, out, err, spec.get("digest"))
    return res


def op_concurrent(conn, spec):
    def one(i):
        p = protocol(conn)
        shell_id = open_shell(p, spec)
        try:
            out, err, rc = run_in(p, shell_id, spec, common.fill_command(spec, i))
        finally:
            p.close_shell(shell_id)
        r = {"ok": True, "exit_code": rc}
        common.output(r, out, err, spec.get("digest"))
        return r

    results, errors = common.concurrently(int(spec.get("count") or 1), one)
    for i, exc in errors.items():
        r = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)[:2000]}
        r.update(classify(exc))
        results[i] = r
    return {"results": results}


def receive_once(p, shell_id, cid):
    """One Receive; a TimedOut fault is an empty, unfinished answer."""
    try:
        return p.get_command_output_raw(shell_id, cid)
    except WinRMOperationTimeoutError:
        return b"", b"", None, False


def receive_until(p, shell_id, cid, marker, deadline):
    """Receive until marker is in stdout; returns (stdout, stderr, rc, done)."""
    out, err = b"", b""
    while time.monotonic() < deadline:
        o, e, rc, done = receive_once(p, shell_id, cid)
        out += o
        err += e
        if done or (marker and marker in out):
            return out, err, rc, done
    raise TimeoutError("marker %r not seen; stdout so far %r" % (marker, out[-200:]))


def op_signal(conn, spec):
    p = protocol(conn)
    shell_id = open_shell(p, spec)
    keep = bool(spec.get("keep_shell"))
    try:
        cid = p.run_command(shell_id, common.fill_command(spec), spec.get("args") or ())
        marker = common.unb64(spec.get("wait_for"))
        deadline = time.monotonic() + 60
        out, err, rc, done = receive_until(p, shell_id, cid, marker, deadline)
        if done:
            raise RuntimeError("command finished before the signal")
        t0 = time.monotonic()
        send_signal(p, shell_id, cid, spec["signal"])
        res = {"shell_id": shell_id, "command_id": cid}
        if spec["signal"] == "ctrl_c":
            while True:
                o, e, rc, done = receive_until(p, shell_id, cid, None, deadline)
                out += o
                err += e
                if done:
                    break
            res["exit_code"] = rc
            p.cleanup_command(shell_id, cid)
        res["signal_to_done_ms"] = int((time.monotonic() - t0) * 1000)
        common.output(res, out, err, False)
        return res
    finally:
        if not keep:
            p.close_shell(shell_id)


def op_long(conn, spec):
    p = protocol(conn)
    shell_id = open_shell(p, spec)
    try:
        cid = p.run_command(shell_id, common.fill_command(spec), spec.get("args") or ())
        out, err, timeouts = b"", b"", 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                o, e, rc, done = p.get_command_output_raw(shell_id, cid)
            except WinRMOperationTimeoutError:
                timeouts += 1
                continue
            out += o
            err += e
            if done:
                break
        else:
            raise TimeoutError("command not done")
        p.cleanup_command(shell_id, cid)
    finally:
        p.close_shell(shell_id)
    res = {"exit_code": rc, "timeouts": timeouts}
    common.output(res, out, err, False)
    return res


def op_open_shell(conn, spec):
    p = protocol(conn)
    return {"shell_id": open_shell(p, spec)}


def op_run_in_shell(conn, spec):
    p = protocol(conn)
    out, err, rc = run_in(p, spec["shell_id"], spec)
    res = {"exit_code": rc, "shell_id": spec["shell_id"]}
    common.output(res, out, err, spec.get("digest"))
    return res


def op_delete_shell(conn, spec):
    p = protocol(conn)
    p.close_shell(spec["shell_id"])
    return {"shell_id": spec["shell_id"]}


def op_interleave(conn, spec):
    """One connection: Receives of a big output (spec.command) interleaved
    with Sends to a second command (cat), a third command's whole run and a
    ctrl_c to a fourth. Every response must decrypt in the client's own
    sequence (the daemon prepares the next sealed Receive ahead); the big
    output comes back as stdout, the second command's echo is checked here."""
    p = protocol(conn)
    shell_id = open_shell(p, spec)
    try:
        big = p.run_command(shell_id, common.fill_command(spec))
        echo = p.run_command(shell_id, "cat")
        out, err, sent, echoed = b"", b"", b"", b""
        deadline = time.monotonic() + 120
        i = 0
        while time.monotonic() < deadline:
            i += 1
            o, e, rc, done = receive_once(p, shell_id, big)
            out += o
            err += e
            if done:
                break
            if i % 3 == 0:
                line = b"line %d\n" % i
                sent += line
                p.send_command_input(shell_id, echo, line)
            if i == 4:
                o3, _, rc3 = run_in(p, shell_id, spec, command="echo third")
                if o3 != b"third\n" or rc3 != 0:
                    raise RuntimeError("third command: %r exit %r" % (o3, rc3))
            if i == 5:
                sleeper = p.run_command(shell_id, "exec sleep 100")
                send_signal(p, shell_id, sleeper, "ctrl_c")
                while True:
                    _, _, rc4, done4 = receive_until(p, shell_id, sleeper, None, deadline)
                    if done4:
                        break
                if rc4 != 130:
                    raise RuntimeError("ctrl_c: exit %r, want 130" % rc4)
                p.cleanup_command(shell_id, sleeper)
        else:
            raise TimeoutError("the big command did not finish")
        p.send_command_input(shell_id, echo, b"", end=True)
        while True:
            o, _, _, done = receive_until(p, shell_id, echo, None, deadline)
            echoed += o
            if done:
                break
        if echoed != sent or not sent:
            raise RuntimeError("cat echoed %r, sent %r" % (echoed[:200], sent[:200]))
        p.cleanup_command(shell_id, big)
        p.cleanup_command(shell_id, echo)
        res = {"exit_code": rc, "shell_id": shell_id}
        common.output(res, out, err, True)
        return res
    finally:
        p.close_shell(shell_id)


OPS = {
    "run": op_run,
    "concurrent": op_concurrent,
    "signal": op_signal,
    "long": op_long,
    "open_shell": op_open_shell,
    "run_in_shell": op_run_in_shell,
    "delete_shell": op_delete_shell,
    "interleave": op_interleave,
}

if __name__ == "__main__":
    common.main(OPS, classify)
