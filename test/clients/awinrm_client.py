#!/usr/bin/env python3
"""awinrm scenarios (awinrm.protocol.Protocol, asyncio), JSON in and out: see common.py.

awinrm is an independent client: its own SOAP, asyauth's NTLM inside SPNEGO,
and its own message sealing, which it applies on every connection (HTTP and
HTTPS alike). It speaks only Negotiate (and CredSSP), never Basic.
"""

import asyncio
import os
import ssl
import sys
import time
import uuid
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import logging  # noqa: E402

import httpx  # noqa: E402  (an awinrm dependency)
import xmltodict  # noqa: E402  (an awinrm dependency)
from asyauth.common.constants import asyauthSecret  # noqa: E402
from asyauth.common.credentials.ntlm import NTLMCredential  # noqa: E402
from awinrm import logger as awinrm_logger  # noqa: E402
from awinrm.exceptions import (  # noqa: E402
    ShellNotFoundError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
)
from awinrm.protocol import Protocol  # noqa: E402

import common  # noqa: E402

# The library logs to stderr at INFO; the Go side reads only stdout, but keep
# the client quiet unless it fails.
awinrm_logger.setLevel(logging.ERROR)

# The status of the last HTTP response the library received. awinrm 0.1.2
# cannot read a refusal during the handshake: a final 401 whose
# WWW-Authenticate is a bare "Negotiate" makes it base64-decode the word
# "Negotiate" and fail with a binascii error, hiding the status. Recording
# the status lets the result say what the server answered.
LAST_STATUS = {"code": 0}
_send = httpx.AsyncClient.send


async def _recording_send(self, request, **kw):
    resp = await _send(self, request, **kw)
    LAST_STATUS["code"] = resp.status_code
    return resp


httpx.AsyncClient.send = _recording_send

CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
CODES = {
    "ctrl_c": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c",
    "terminate": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate",
}
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}


def protocol(conn):
    if conn["auth"] not in ("ntlm", "negotiate"):
        raise ValueError("awinrm speaks Negotiate only, not %r" % conn["auth"])
    op_timeout = int(conn.get("operation_timeout") or 20)
    ctx, transport = None, None
    if conn["scheme"] == "https":
        # The daemon's certificate is self-signed. The library passes its
        # ssl_ctx to httpx.AsyncClient, which ignores it once the library also
        # hands over its own AsyncHTTPTransport; a transport of ours carries
        # the context instead.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        transport = httpx.AsyncHTTPTransport(verify=ctx, retries=0, http2=False)
    cred = NTLMCredential(conn["password"], conn["user"], None, stype=asyauthSecret.PASSWORD)
    return Protocol(
        "%s://%s:%d/wsman" % (conn["scheme"], conn["host"], conn["port"]),
        cred,
        ssl_ctx=ctx,
        http_transport=transport,
        authtype="spnego",
        verify=False,
        operation_timeout_sec=op_timeout,
        read_timeout_sec=int(conn.get("read_timeout") or op_timeout + 10),
    )


def fault_of(text):
    """The fault's HTTP-independent facts (code, subcode, reason) from a body."""
    try:
        root = ET.fromstring(text)
    except Exception:
        return {}
    out = {}
    wf = root.find("s:Body/s:Fault/s:Detail/f:WSManFault", NS)
    if wf is not None and wf.get("Code", "").isdigit():
        out["wsman_code"] = int(wf.get("Code"))
    sub = root.find("s:Body/s:Fault/s:Code/s:Subcode/s:Value", NS)
    if sub is not None and sub.text:
        out["fault_subcode"] = sub.text
    reason = root.find("s:Body/s:Fault/s:Reason/s:Text", NS)
    if reason is not None and reason.text:
        out["error"] = reason.text
    return out


def in_handshake(exc):
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "authenticate":
            return True
        tb = tb.tb_next
    return False


def classify(exc):
    # The library turns some faults into bare exceptions (ShellNotFoundError,
    # WinRMError with the fault folded into its text); the transport error it
    # was raised from still holds the status and the body.
    seen = exc
    while seen is not None:
        if isinstance(seen, WinRMTransportError):
            r = {"error_type": type(exc).__name__, "http_status": seen.code}
            body = seen.response_text
            if isinstance(body, bytes):
                body = body.decode("utf-8", "replace")
            r.update(fault_of(body or ""))
            r.setdefault("error", str(exc) or body[:2000])
            return r
        seen = seen.__context__
    if isinstance(exc, ShellNotFoundError):
        return {"error_type": "ShellNotFoundError"}
    if in_handshake(exc) and LAST_STATUS["code"] == 401:
        return {"error_type": "AuthenticationError", "http_status": 401, "error": "logon refused (client: %s)" % exc}
    if isinstance(exc, WinRMError):
        msg = str(exc)
        if "Authentication failed" in msg:
            return {"error_type": "AuthenticationError", "error": msg}
        return {"error_type": type(exc).__name__, "error": msg}
    return {}


async def send_signal(p, shell_id, command_id, code):
    req = {"env:Envelope": p._get_soap_header(resource_uri=CMD_URI, action=SIGNAL, shell_id=shell_id, message_id=uuid.uuid4())}
    sig = req["env:Envelope"].setdefault("env:Body", {}).setdefault("rsp:Signal", {})
    sig["@CommandId"] = command_id
    sig["rsp:Code"] = CODES[code]
    await p.send_message(xmltodict.unparse(req))


async def open_shell(p, spec):
    return await p.open_shell(working_directory=spec.get("cwd") or None, env_vars=spec.get("env") or None)


async def receive_all(p, shell_id, cid):
    out, err, rc, timeouts = b"", b"", None, 0
    while True:
        try:
            o, e, code, done = await p._raw_get_command_output(shell_id, cid)
        except WinRMOperationTimeoutError:
            timeouts += 1
            continue
        out += o
        err += e
        if done:
            return out, err, code, timeouts


async def send_stdin(p, shell_id, cid, data):
    # The library's send_command_input prints and swallows every error; send
    # through send_message so a refusal reaches the caller.
    step = 32768
    chunks = [data[off : off + step] for off in range(0, len(data), step)] or [b""]
    for i, chunk in enumerate(chunks):
        req = {"env:Envelope": p._get_soap_header(resource_uri=CMD_URI, action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send", shell_id=shell_id)}
        st = req["env:Envelope"].setdefault("env:Body", {}).setdefault("rsp:Send", {}).setdefault("rsp:Stream", {})
        st["@Name"] = "stdin"
        st["@CommandId"] = cid
        if i == len(chunks) - 1:
            st["@End"] = "true"
        st["#text"] = common.b64(chunk)
        await p.send_message(xmltodict.unparse(req))


async def run_in(p, shell_id, spec, command=None):
    cid = await p.run_command(shell_id, command or common.fill_command(spec), spec.get("args") or ())
    stdin = common.unb64(spec.get("stdin"))
    if stdin or spec.get("stdin_end"):
        await send_stdin(p, shell_id, cid, stdin)
    out, err, rc, timeouts = await receive_all(p, shell_id, cid)
    await p.cleanup_command(shell_id, cid)
    return out, err, rc, timeouts


async def op_run(conn, spec):
    p = protocol(conn)
    try:
        shell_id = await open_shell(p, spec)
        try:
            out, err, rc, _ = await run_in(p, shell_id, spec)
        finally:
            await p.close_shell(shell_id)
    finally:
        await p.close()
    res = {"exit_code": rc, "shell_id": shell_id}
    common.output(res, out, err, spec.get("digest"))
    return res


async def op_concurrent(conn, spec):
    async def one(i):
        p = protocol(conn)
        try:
            shell_id = await open_shell(p, spec)
            try:
                out, err, rc, _ = await run_in(p, shell_id, spec, common.fill_command(spec, i))
            finally:
                await p.close_shell(shell_id)
        finally:
            await p.close()
        r = {"ok": True, "exit_code": rc}
        common.output(r, out, err, spec.get("digest"))
        return r

    n = int(spec.get("count") or 1)
    got = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    results = []
    for r in got:
        if isinstance(r, BaseException):
            e = {"ok": False, "error_type": type(r).__name__, "error": str(r)[:2000]}
            e.update(classify(r))
            r = e
        results.append(r)
    return {"results": results}


async def receive_until(p, shell_id, cid, marker, deadline):
    out, err = b"", b""
    while time.monotonic() < deadline:
        try:
            o, e, rc, done = await p._raw_get_command_output(shell_id, cid)
        except WinRMOperationTimeoutError:
            continue
        out += o
        err += e
        if done or (marker and marker in out):
            return out, err, rc, done
    raise TimeoutError("marker %r not seen; stdout so far %r" % (marker, out[-200:]))


async def op_signal(conn, spec):
    p = protocol(conn)
    keep = bool(spec.get("keep_shell"))
    try:
        shell_id = await open_shell(p, spec)
        try:
            cid = await p.run_command(shell_id, common.fill_command(spec), spec.get("args") or ())
            marker = common.unb64(spec.get("wait_for"))
            deadline = time.monotonic() + 60
            out, err, rc, done = await receive_until(p, shell_id, cid, marker, deadline)
            if done:
                raise RuntimeError("command finished before the signal")
            t0 = time.monotonic()
            await send_signal(p, shell_id, cid, spec["signal"])
            res = {"shell_id": shell_id, "command_id": cid}
            if spec["signal"] == "ctrl_c":
                while True:
                    o, e, rc, done = await receive_until(p, shell_id, cid, None, deadline)
                    out += o
                    err += e
                    if done:
                        break
                res["exit_code"] = rc
                await p.cleanup_command(shell_id, cid)
            res["signal_to_done_ms"] = int((time.monotonic() - t0) * 1000)
            common.output(res, out, err, False)
            return res
        finally:
            if not keep:
                await p.close_shell(shell_id)
    finally:
        await p.close()


async def op_long(conn, spec):
    p = protocol(conn)
    try:
        shell_id = await open_shell(p, spec)
        try:
            cid = await p.run_command(shell_id, common.fill_command(spec), spec.get("args") or ())
            out, err, rc, timeouts = await asyncio.wait_for(receive_all(p, shell_id, cid), 120)
            await p.cleanup_command(shell_id, cid)
        finally:
            await p.close_shell(shell_id)
    finally:
        await p.close()
    res = {"exit_code": rc, "timeouts": timeouts}
    common.output(res, out, err, False)
    return res


async def op_open_shell(conn, spec):
    p = protocol(conn)
    try:
        return {"shell_id": await open_shell(p, spec)}
    finally:
        await p.close()


async def op_run_in_shell(conn, spec):
    p = protocol(conn)
    try:
        out, err, rc, _ = await run_in(p, spec["shell_id"], spec)
    finally:
        await p.close()
    res = {"exit_code": rc, "shell_id": spec["shell_id"]}
    common.output(res, out, err, spec.get("digest"))
    return res


async def op_delete_shell(conn, spec):
    p = protocol(conn)
    try:
        await p.close_shell(spec["shell_id"])
    finally:
        await p.close()
    return {"shell_id": spec["shell_id"]}


def sync(fn):
    return lambda conn, spec: asyncio.run(fn(conn, spec))


OPS = {
    "run": sync(op_run),
    "concurrent": sync(op_concurrent),
    "signal": sync(op_signal),
    "long": sync(op_long),
    "open_shell": sync(op_open_shell),
    "run_in_shell": sync(op_run_in_shell),
    "delete_shell": sync(op_delete_shell),
}

if __name__ == "__main__":
    common.main(OPS, classify)
