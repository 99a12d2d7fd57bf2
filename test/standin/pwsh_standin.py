#!/usr/bin/env python3
"""STAND-IN for `pwsh -NoLogo -NoProfile -s` (PowerShell's out-of-process
server mode), for tests only.

PowerShell is served by no package source the test machines reach, so the
bridge is proven against this: a real third-party PSRP server implementation
(psrpcore's ServerRunspacePool / ServerPipeline) behind the same out-of-process
transport pwsh speaks, one packet per line on stdin/stdout:

    <Data Stream='Default' PSGuid='G'>BASE64</Data>   <DataAck PSGuid='G' />
    <Command PSGuid='G' />  <CommandAck PSGuid='G' />  <Signal PSGuid='G' />
    <SignalAck PSGuid='G' />  <Close PSGuid='G' />  <CloseAck PSGuid='G' />

framed as pwsh frames them (single quotes, lower-case GUIDs, one fragment of at
most 32 KiB per Data packet, '\\n' line ends). What pwsh would run as
PowerShell is run here through /bin/sh: each stdout line becomes an output
string object, each stderr line an error record, and a non-zero exit a Failed
pipeline state. Signal(P) kills the script's process group and reports
Stopped. Close(pool) or EOF on stdin ends the process.

Arguments are accepted and ignored (the daemon passes pwsh's, e.g.
`-NoLogo -NoProfile -s`), except `-Command TEXT...` / `-EncodedCommand B64`:
pwsh's server mode takes that as its initial command and runs it in each
runspace it creates for the pool, as the pool opens and before any pipeline,
in the session's global scope (an endpoint's startup_script). The stand-in
runs it through /bin/sh once, when INIT_RUNSPACEPOOL has opened the pool and
before the Opened state goes out; what it exports is kept as the session
state every later pipeline sees (the /bin/sh model of PowerShell session
variables); its output is dropped (pwsh writes it to the host); a non-zero
exit breaks the pool (RUNSPACEPOOL_STATE Broken instead of Opened) and ends
the process. Also
`--standin-banner`: print one line to stderr
at start, which the tests use to say which far end ran; and `--site DIR`:
import psrpcore from DIR (the test venv's site-packages: the stand-in runs as
a test user, under the system python3, since the venv's interpreter may live
where only root can reach it).
"""

import sys

if "--site" in sys.argv[1:-1]:
    sys.path.insert(0, sys.argv[sys.argv.index("--site") + 1])

import base64
import os
import signal
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET

from psrpcore import ServerPipeline, ServerRunspacePool, StreamType
from psrpcore.types import (
    RunspacePoolState,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
)
from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    PipelineInputEvent,
    ResetRunspaceStateEvent,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    PSRPPayload,
)

EMPTY = uuid.UUID(int=0)
FRAGMENT = 32 * 1024  # pwsh's out-of-process fragment size

lock = threading.RLock()  # psrpcore objects are not thread-safe
out = sys.stdout.buffer
pool = ServerRunspacePool()
procs = {}  # pipeline id -> Popen
stopped = set()


def write_line(line):
    out.write(line)
    out.flush()


def guid_packet(tag, g):
    write_line(b"<%s PSGuid='%s' />\n" % (tag.encode(), str(g or EMPTY).encode()))


def flush():
    """Send everything psrpcore has queued, one fragment per Data packet."""
    with lock:
        while True:
            payload = pool.data_to_send(FRAGMENT + 21)
            if payload is None:
                return
            g = payload.pipeline_id or EMPTY
            write_line(
                b"<Data Stream='Default' PSGuid='%s'>%s</Data>\n"
                % (str(g).encode(), base64.b64encode(payload.data))
            )


def script_of(ps):
    """The text /bin/sh runs: commands joined as a pipe, parameters appended.
    Two cmdlets are modelled, as pypsrp's Client.execute_ps sends them:
    `Invoke-Expression -Command TEXT` evaluates TEXT as a script (here: as
    /bin/sh text) and `Out-String` turns objects into strings, which the
    stand-in's output already is (one per line, as -Stream gives)."""
    parts = []
    for cmd in ps.commands:
        name = cmd.command_text.lower()
        if name == "invoke-expression":
            parts.append(" ".join(str(v) for k, v in cmd.parameters if (k or "").lower() == "command"))
            continue
        if name == "out-string":
            continue
        text = cmd.command_text
        for name, value in cmd.parameters:
            if name:
                text += " -%s" % name
            if value is not None:
                text += " %s" % value
        parts.append(text)
    return " | ".join(parts)


def pump(pid, stream, pipe):
    for raw in iter(pipe.readline, b""):
        line = raw.rstrip(b"\n").decode("utf-8", "replace")
        with lock:
            pipe_obj = pool.pipeline_table.get(pid)
            if pipe_obj is None or pipe_obj.state != PSInvocationState.Running:
                continue
            if stream == "out":
                pipe_obj.write_output(line)
            else:
                pipe_obj.write_error(
                    NETException(Message=line),
                    ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason="StandInStderr"),
                    fully_qualified_error_id="NativeCommandError",
                )
        flush()


def initial_command(argv):
    """pwsh's -Command/-c (the rest of the command line) or
    -EncodedCommand/-ec (base64 of UTF-16LE text), else None."""
    for i, a in enumerate(argv):
        k = a.lower()
        if k in ("-command", "-c"):
            return " ".join(argv[i + 1 :])
        if k in ("-encodedcommand", "-ec", "-e") and i + 1 < len(argv):
            return base64.b64decode(argv[i + 1]).decode("utf-16-le")
    return None


def run_initial_command(text):
    """Run the initial command in the opening pool (see the module doc)."""
    r = subprocess.run(
        ["/bin/sh", "-c", "{\n%s\n} >/dev/null\nrc=$?\nenv -0\nexit $rc" % text],
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if r.returncode != 0:
        sys.stderr.write("stand-in: initial command exited with code %d: %s\n" % (r.returncode, r.stderr.decode("utf-8", "replace")[-2000:]))
        sys.stderr.flush()
        with lock:
            # The pool never opened: what psrpcore queued for the opening
            # (its capability, private data and the Opened state) is
            # dropped, so the client hears only Broken.
            while pool.data_to_send(FRAGMENT + 21) is not None:
                pass
            pool.set_broken(
                ErrorRecord(
                    Exception=NETException(Message="stand-in: the startup script failed with code %d" % r.returncode),
                    CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason="StartupScript"),
                    FullyQualifiedErrorId="StartupScriptFailed",
                )
            )
        return False
    for item in r.stdout.split(b"\0"):
        k, sep, v = item.decode("utf-8", "replace").partition("=")
        if sep and k not in ("PWD", "OLDPWD", "SHLVL", "_"):
            os.environ[k] = v
    return True


def spawn(pid, pipe_obj):
    """Start the pipeline's /bin/sh before the next packet is read: its
    input (PIPELINE_INPUT, END_OF_PIPELINE_INPUT) may follow at once and
    must find the process (as pwsh has the pipeline before it acks)."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script_of(pipe_obj.metadata)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with lock:
        procs[pid] = proc
        if pipe_obj.metadata.no_input:
            proc.stdin.close()
    return proc


def run(pid, pipe_obj, proc):
    readers = [
        threading.Thread(target=pump, args=(pid, "out", proc.stdout), daemon=True),
        threading.Thread(target=pump, args=(pid, "err", proc.stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    rc = proc.wait()
    with lock:
        procs.pop(pid, None)
        if pid in stopped or pipe_obj.state != PSInvocationState.Running:
            return
        if rc == 0:
            pipe_obj.complete()
        else:
            err = ErrorRecord(
                Exception=NETException(Message="stand-in: /bin/sh exited with code %d" % rc),
                CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason="ExitCode"),
                FullyQualifiedErrorId="NativeCommandExitCode",
            )
            pipe_obj._change_state(PSInvocationState.Failed, err)
    flush()


def handle_events():
    while True:
        with lock:
            event = pool.next_event()
        if event is None:
            return
        if isinstance(event, CreatePipelineEvent):
            with lock:
                pipe_obj = pool.pipeline_table[event.pipeline_id]
                pipe_obj.start()
            proc = spawn(event.pipeline_id, pipe_obj)
            threading.Thread(target=run, args=(event.pipeline_id, pipe_obj, proc), daemon=True).start()
        elif isinstance(event, PipelineInputEvent):
            with lock:
                proc = procs.get(event.pipeline_id)
            if proc and proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.write(("%s\n" % event.data).encode())
                    proc.stdin.flush()
                except OSError:
                    pass
        elif isinstance(event, EndOfPipelineInputEvent):
            with lock:
                proc = procs.get(event.pipeline_id)
            if proc and proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
        elif isinstance(event, (SetMaxRunspacesEvent, SetMinRunspacesEvent, ResetRunspaceStateEvent)):
            with lock:
                pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, GetAvailableRunspacesEvent):
            with lock:
                pool.runspace_availability_response(event.ci, pool.max_runspaces)


def kill(pid):
    with lock:
        proc = procs.get(pid)
    if proc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    if "--standin-banner" in sys.argv[1:]:
        sys.stderr.write("pwsh stand-in (psrpcore + /bin/sh) pid %d\n" % os.getpid())
        sys.stderr.flush()
    init = initial_command(sys.argv[1:])
    for raw in sys.stdin.buffer:
        raw = raw.strip()
        if not raw:
            break  # pwsh: an empty line closes the session
        el = ET.fromstring(raw)
        g = uuid.UUID(el.attrib["PSGuid"])
        pid = None if g == EMPTY else g
        if el.tag == "Data":
            stream = StreamType.prompt_response if el.attrib.get("Stream") == "PromptResponse" else StreamType.default
            with lock:
                pool.receive_data(PSRPPayload(base64.b64decode(el.text or ""), stream, pid))
                opened = pool.state == RunspacePoolState.Opened
            if init is not None and opened:
                ok = run_initial_command(init)
                init = None
                if not ok:
                    # A broken pool's session ends: Broken goes out, then
                    # the process exits, as the server side closes.
                    flush()
                    guid_packet("DataAck", g)
                    return
            handle_events()
            flush()
            guid_packet("DataAck", g)
        elif el.tag == "Command":
            with lock:
                ServerPipeline(pool, g)
            guid_packet("CommandAck", g)
        elif el.tag == "Signal":
            with lock:
                pipe_obj = pool.pipeline_table.get(g)
                if pipe_obj is not None and pipe_obj.state == PSInvocationState.Running:
                    stopped.add(g)
                    pipe_obj.stop()
            kill(g)
            flush()
            guid_packet("SignalAck", g)
        elif el.tag == "Close":
            if pid is None:
                for p in list(procs):
                    kill(p)
                guid_packet("CloseAck", g)
                return
            kill(g)
            with lock:
                pool.pipeline_table.pop(g, None)
            guid_packet("CloseAck", g)
        else:
            raise ValueError("stand-in: unknown packet %r" % raw[:80])
    for p in list(procs):
        kill(p)


if __name__ == "__main__":
    main()
