#!/usr/bin/env python3
"""pypsrp PowerShell-remoting scenarios (RunspacePool, PowerShell,
Client.execute_ps), JSON in and out: see common.py.

spec: op, script (text the far end runs), scripts (list), count, endpoint
      (configuration name), shell_id, sleep (seconds), digest (bool),
      input (list of str: pipeline input, sent with Send),
      xpress (bool: ask for xpress stream compression as the Windows client
      does; see XpressWSMan)
Results carry output (list of str), errors (list of str), state (the
pipeline's PSInvocationState name), had_errors; digest replaces output by
output_sha256 / output_len over "\\n".join(output).
"""

import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pypsrp.client import Client  # noqa: E402
from pypsrp.complex_objects import PSInvocationState, RunspacePoolState  # noqa: E402
from pypsrp.powershell import PowerShell, RunspacePool  # noqa: E402

import common  # noqa: E402
from pypsrp_client import classify, wsman  # noqa: E402

DEFAULT_ENDPOINT = "Microsoft.PowerShell"


def pool_of(w, spec):
    return RunspacePool(w, configuration_name=spec.get("endpoint") or DEFAULT_ENDPOINT)


def state_name(ps):
    for k, v in vars(PSInvocationState).items():
        if not k.startswith("_") and v == ps.state:
            return k
    return str(ps.state)


def result_of(ps, spec):
    out = [str(o) for o in ps.output]
    res = {
        "errors": [str(e) for e in ps.streams.error],
        "state": state_name(ps),
        "had_errors": bool(ps.had_errors),
    }
    if spec.get("digest"):
        joined = "\n".join(out).encode()
        res["output_sha256"] = hashlib.sha256(joined).hexdigest()
        res["output_len"] = len(joined)
        res["output_count"] = len(out)
    else:
        res["output"] = out
    return res


def run_script(pool, script, spec):
    ps = PowerShell(pool)
    ps.add_script(script)
    if spec.get("input") is not None:
        ps.invoke(input=spec["input"])  # Send stdin with the pipeline's CommandId
    else:
        ps.invoke()
    return result_of(ps, spec)


class XpressWSMan:
    """Mix-in over pypsrp's WSMan that behaves as the Windows PowerShell
    client does (pypsrp never asks for compression): rsp:CompressionType
    xpress on Create, every Send stream payload compressed, every Receive
    stream payload decompressed. Sends use stored chunks (MS-WSMV's framing
    with equal sizes: this client has no LZ77+Huffman encoder); Receives are
    decoded by dissect.util's LZ77+Huffman decoder, an implementation
    independent of the daemon's. Counts what it saw in self.xpress_stats."""

    RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"

    def _create_header(self, action, *args, **kwargs):
        from pypsrp.wsman import WSManAction

        title, header = super()._create_header(action, *args, **kwargs)
        if action == WSManAction.CREATE:
            import xml.etree.ElementTree as ET

            ct = ET.SubElement(header, "{%s}CompressionType" % self.RSP, attrib={"{http://www.w3.org/2003/05/soap-envelope}mustUnderstand": "true"})
            ct.text = "xpress"
        return title, header

    def invoke(self, action, resource_uri, resource, *args, **kwargs):
        import base64

        from pypsrp.wsman import WSManAction

        st = self.xpress_stats
        if action == WSManAction.SEND:
            for e in resource.iter("{%s}Stream" % self.RSP):
                raw = base64.b64decode(e.text or "")
                framed = b""
                for i in range(0, len(raw), 65536):
                    part = raw[i : i + 65536]
                    framed += (len(part) - 1).to_bytes(2, "little") * 2 + part
                if self.xpress_corrupt and raw:
                    # A chunk that claims LZ77+Huffman data but is too short
                    # to hold even its code table.
                    framed = (len(raw) + 99).to_bytes(2, "little") + (19).to_bytes(2, "little") + bytes(20)
                e.text = base64.b64encode(framed).decode()
                st["sent_stored"] += 1
        res = super().invoke(action, resource_uri, resource, *args, **kwargs)
        if action == WSManAction.CREATE:
            mode = res.find(".//{%s}CompressionMode" % self.RSP)
            st["compression_mode"] = mode.text if mode is not None else ""
        if action == WSManAction.RECEIVE:
            for e in res.iter("{%s}Stream" % self.RSP):
                if e.text:
                    e.text = base64.b64encode(self.decompress(base64.b64decode(e.text))).decode()
        return res

    def decompress(self, data):
        from dissect.util.compression import lzxpress_huffman

        st, out, off = self.xpress_stats, b"", 0
        while off < len(data):
            orig = int.from_bytes(data[off : off + 2], "little") + 1
            comp = int.from_bytes(data[off + 2 : off + 4], "little") + 1
            chunk = data[off + 4 : off + 4 + comp]
            off += 4 + comp
            if len(chunk) != comp or comp > orig:
                raise ValueError("bad xpress chunk header")
            if comp == orig:
                out += chunk
                st["recv_stored"] += 1
                continue
            # dissect decodes until its input ends (it has no size
            # argument), so it gets zero padding and is cut at the size the
            # chunk header gives.
            plain = lzxpress_huffman.decompress(chunk + b"\0" * 4)
            if len(plain) < orig:
                raise ValueError("xpress chunk decoded short: %d of %d bytes" % (len(plain), orig))
            out += plain[:orig]
            st["recv_huffman"] += 1
            st["recv_huffman_bytes"] += orig
            st["recv_huffman_wire"] += comp
        return out


def xpress_wsman(conn, spec):
    w = wsman(conn)
    w.__class__ = type("XpressWSMan", (XpressWSMan, type(w)), {})
    w.xpress_corrupt = bool(spec.get("xpress_corrupt"))
    w.xpress_stats = {"compression_mode": None, "sent_stored": 0, "recv_stored": 0, "recv_huffman": 0, "recv_huffman_bytes": 0, "recv_huffman_wire": 0}
    return w


def op_ps_run(conn, spec):
    """One pool, the scripts in order (several pipelines in one pool)."""
    w = xpress_wsman(conn, spec) if spec.get("xpress") else wsman(conn)
    with w, pool_of(w, spec) as pool:
        runs = [run_script(pool, s, spec) for s in (spec.get("scripts") or [spec["script"]])]
        res = dict(runs[-1])
        res["runs"] = runs
        res["shell_id"] = str(pool.id).upper()
    if spec.get("xpress"):
        res["xpress"] = w.xpress_stats
    return res


def op_ps_concurrent(conn, spec):
    """One pool, count pipelines started together (begin_invoke), then all
    ended."""
    n = int(spec.get("count") or 4)
    with wsman(conn) as w:
        pool = pool_of(w, spec)
        pool.max_runspaces = n
        pool.open()
        try:
            pss = []
            for i in range(n):
                ps = PowerShell(pool)
                ps.add_script(common.fill_command({"command": spec["script"]}, i))
                ps.begin_invoke()
                pss.append(ps)
            runs = []
            for ps in pss:
                ps.end_invoke()
                runs.append(result_of(ps, spec))
            return {"runs": runs}
        finally:
            pool.close()


def op_ps_two_pools(conn, spec):
    """Two pools open at once, each running a pipeline while the other is
    open; each on its own connection object, as two clients would."""
    results, errors = common.concurrently(2, lambda i: op_ps_run(conn, dict(spec, script=common.fill_command({"command": spec["script"]}, i))))
    if errors:
        raise list(errors.values())[0]
    return {"runs": results}


def op_execute_ps(conn, spec):
    with wsman(conn) as w:
        c = Client.__new__(Client)
        c.wsman = w
        output, streams, had_errors = c.execute_ps(spec["script"], configuration_name=spec.get("endpoint") or DEFAULT_ENDPOINT)
        return {"output_text": output, "errors": [str(e) for e in streams.error], "had_errors": bool(had_errors)}


def op_ps_stop(conn, spec):
    """Start a long pipeline, wait for its first output, stop it."""
    with wsman(conn) as w, pool_of(w, spec) as pool:
        ps = PowerShell(pool)
        ps.add_script(spec["script"])
        ps.begin_invoke()
        deadline = time.monotonic() + 60
        while not ps.output and time.monotonic() < deadline:
            ps.poll_invoke()
        ps.stop()
        res = result_of(ps, spec)
        # The pool still works after a stop.
        res["after"] = run_script(pool, spec.get("after") or spec["script"].split(";")[0], spec)
        return res


def op_ps_disconnect(conn, spec):
    """Start a pipeline, disconnect the pool, wait while the pipeline keeps
    producing, reconnect the same client and receive everything."""
    with wsman(conn) as w:
        pool = pool_of(w, spec)
        pool.open()
        try:
            ps = PowerShell(pool)
            ps.add_script(spec["script"])
            ps.begin_invoke()
            pool.disconnect()
            time.sleep(float(spec.get("sleep") or 3))
            pool.connect()
            ps.connect()
            res = result_of(ps, spec)
            res["shell_id"] = str(pool.id).upper()
            return res
        finally:
            if pool.state != RunspacePoolState.CLOSED:
                pool.close()


def op_ps_open(conn, spec):
    """Open a pool and leave it open; returns its id (for other users'
    attempts and leftover checks)."""
    w = wsman(conn)
    pool = pool_of(w, spec)
    pool.open()
    return {"shell_id": str(pool.id).upper()}


def op_ps_attack(conn, spec):
    """As another user: try to use, list and close someone else's pool."""
    sid = spec["shell_id"]
    out = {}
    with wsman(conn) as w:
        pools = RunspacePool.get_runspace_pools(w)
        out["listed"] = [str(p.id).upper() for p in pools]
        victim = RunspacePool(w)
        victim.id = sid
        victim.shell.id = sid
        victim.shell.opened = True
        victim.state = RunspacePoolState.OPENED
        from pypsrp.wsman import SelectorSet

        victim.shell._selector_set = SelectorSet()
        victim.shell._selector_set.add_option("ShellId", sid)
        for name, f in (("run", lambda: run_script(victim, spec.get("script") or "echo owned", spec)), ("close", victim.close)):
            try:
                f()
                out[name] = "succeeded"
            except Exception as exc:  # noqa: BLE001
                out[name] = classify(exc) or {"error_type": type(exc).__name__, "error": str(exc)[:500]}
    return out


def op_ps_close(conn, spec):
    with wsman(conn) as w:
        pool = RunspacePool(w)
        pool.id = spec["shell_id"]
        pool.shell.id = spec["shell_id"]
        pool.shell.opened = True
        pool.state = RunspacePoolState.OPENED
        from pypsrp.wsman import SelectorSet

        pool.shell._selector_set = SelectorSet()
        pool.shell._selector_set.add_option("ShellId", spec["shell_id"])
        pool.close()
    return {"shell_id": spec["shell_id"]}


def op_ps_kill_far_end(conn, spec):
    """Start a long pipeline; the Go side kills the far end when it sees the
    marker file; the client must get an error, not hang."""
    with wsman(conn) as w:
        pool = pool_of(w, spec)
        pool.open()
        ps = PowerShell(pool)
        ps.add_script(spec["script"])
        ps.begin_invoke()
        deadline = time.monotonic() + 60
        while not ps.output and time.monotonic() < deadline:
            ps.poll_invoke()
        with open(spec["marker"], "w") as f:
            f.write(str(pool.id).upper())
        try:
            ps.end_invoke()
            return {"outcome": "ended", "state": state_name(ps)}
        except Exception as exc:  # noqa: BLE001
            res = {"outcome": "error"}
            res.update(classify(exc) or {"error_type": type(exc).__name__, "error": str(exc)[:500]})
            return res


OPS = {
    "ps_run": op_ps_run,
    "ps_concurrent": op_ps_concurrent,
    "ps_two_pools": op_ps_two_pools,
    "execute_ps": op_execute_ps,
    "ps_stop": op_ps_stop,
    "ps_disconnect": op_ps_disconnect,
    "ps_open": op_ps_open,
    "ps_attack": op_ps_attack,
    "ps_close": op_ps_close,
    "ps_kill_far_end": op_ps_kill_far_end,
}

if __name__ == "__main__":
    common.main(OPS, classify)
