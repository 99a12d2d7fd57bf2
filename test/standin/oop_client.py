#!/usr/bin/env python3
"""A minimal PSRP out-of-process client on psrpcore's client classes, framed
as pypsrp's own out-of-process connection frames it (the released pypsrp has
no such connection; this follows its framing: one packet per line, wait for
each acknowledgement). It proves a far end — the stand-in or real
`pwsh -s` — speaks the transport before the daemon is put between them.

Usage: oop_client.py SCRIPT [--stop-after-first] [--record DIR] -- FAR-END-ARGV...
Prints one JSON object: output, errors, state, far_end_exit. --record writes
every line sent (DIR/client.lines) and received (DIR/server.lines), for the
Go codec to read back.
"""

import base64
import json
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET

from psrpcore import (
    ClientPowerShell,
    ClientRunspacePool,
    ErrorRecordEvent,
    PipelineOutputEvent,
    PipelineStateEvent,
    RunspacePoolStateEvent,
)
from psrpcore.types import PSInvocationState, RunspacePoolState

EMPTY = uuid.UUID(int=0)


class Conn:
    def __init__(self, argv, record):
        self.sent = open(record + "/client.lines", "wb") if record else None
        self.got = open(record + "/server.lines", "wb") if record else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.cond = threading.Condition()
        self.acks = []
        self.events = []
        self.pool = ClientRunspacePool()
        self.reader = threading.Thread(target=self.listen, daemon=True)
        self.reader.start()

    def write(self, line):
        if self.sent:
            self.sent.write(line)
            self.sent.flush()
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def wait(self, key, timeout=60):
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.acks or self.proc.poll() is not None, timeout):
                raise TimeoutError("no %s" % (key,))
            if key not in self.acks:
                raise EOFError("far end exited waiting for %s" % (key,))
            self.acks.remove(key)

    def packet(self, tag, g):
        self.write(b"<%s PSGuid='%s' />\n" % (tag.encode(), str(g or EMPTY).encode()))
        self.wait((tag + "Ack", g or EMPTY))

    def send(self):
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                return
            g = payload.pipeline_id or EMPTY
            self.write(b"<Data Stream='Default' PSGuid='%s'>%s</Data>\n" % (str(g).encode(), base64.b64encode(payload.data)))
            self.wait(("DataAck", g))

    def listen(self):
        for line in self.proc.stdout:
            if self.got:
                self.got.write(line)
                self.got.flush()
            el = ET.fromstring(line)
            g = uuid.UUID(el.attrib["PSGuid"])
            with self.cond:
                if el.tag == "Data":
                    from psrpcore import PSRPPayload, StreamType

                    self.pool.receive_data(PSRPPayload(base64.b64decode(el.text), StreamType.default, None if g == EMPTY else g))
                    while True:
                        ev = self.pool.next_event()
                        if ev is None:
                            break
                        self.events.append(ev)
                else:
                    self.acks.append((el.tag, g))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_event(self, pred, timeout=60):
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(e) for e in self.events) or self.proc.poll() is not None, timeout)
            if not ok or not any(pred(e) for e in self.events):
                raise TimeoutError("event not seen")


def main():
    sep = sys.argv.index("--")
    script, flags, argv = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1 :]
    record = flags[flags.index("--record") + 1] if "--record" in flags else None
    c = Conn(argv, record)
    c.pool.open()
    c.send()
    c.wait_event(lambda e: isinstance(e, RunspacePoolStateEvent) and c.pool.state == RunspacePoolState.Opened)

    ps = ClientPowerShell(c.pool)
    ps.add_script(script)
    ps.start()
    c.packet("Command", ps.pipeline_id)
    c.send()
    if "--stop-after-first" in flags:
        c.wait_event(lambda e: isinstance(e, PipelineOutputEvent))
        c.packet("Signal", ps.pipeline_id)
    terminal = (PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped)
    c.wait_event(lambda e: isinstance(e, PipelineStateEvent) and e.pipeline_id == ps.pipeline_id and e.state in terminal)
    c.packet("Close", ps.pipeline_id)
    c.packet("Close", None)
    c.proc.stdin.close()
    rc = c.proc.wait(timeout=60)
    res = {
        "output": [str(e.data) for e in c.events if isinstance(e, PipelineOutputEvent)],
        "errors": [str(e.record.Exception.Message) for e in c.events if isinstance(e, ErrorRecordEvent)],
        "state": [e.state.name for e in c.events if isinstance(e, PipelineStateEvent)][-1],
        "far_end_exit": rc,
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
