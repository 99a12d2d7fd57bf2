"""PSRP timing client for winrmd-bench (pypsrp through winrmd to the far
end the daemon was configured with). JSON on stdin:
{host, port, user, password, n, warm, metrics}; prints
{"open_ms": [...], "rtt_ms": [...], "warm_used": [...]} on stdout.

Each sample opens a runspace pool (RunspacePool.open: Create with
creationXml, then Receives until the pool is Opened), runs one pipeline
(`echo x`: Command, Receive to Done) and closes the pool. With warm, each
sample first waits until the daemon reports an idle warm spare
(winrmd_psrp_warm_spares on the metrics address), so it measures the pool
that takes one."""

import json
import sys
import time
import urllib.request

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan


def metric(url, name):
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def main():
    spec = json.load(sys.stdin)
    url = "http://%s/metrics" % spec["metrics"]
    w = WSMan(spec["host"], port=spec["port"], username=spec["user"], password=spec["password"], ssl=False,
              auth="ntlm", encryption="always", cert_validation=False, operation_timeout=20, read_timeout=30)
    out = {"open_ms": [], "rtt_ms": [], "warm_used": []}
    for i in range(spec["n"] + 1):  # sample 0 warms the connection up, not recorded
        if spec["warm"] and i > 0:  # a user's first pool starts their spare
            deadline = time.monotonic() + 60
            while metric(url, "winrmd_psrp_warm_spares") < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("no warm spare within 60 s")
                time.sleep(0.05)
        used0 = metric(url, "winrmd_psrp_warm_spares_used_total")
        t0 = time.perf_counter()
        pool = RunspacePool(w)
        pool.open()
        t1 = time.perf_counter()
        ps = PowerShell(pool)
        ps.add_script("echo x")
        ps.invoke()
        t2 = time.perf_counter()
        if [str(o) for o in ps.output] != ["x"] or ps.had_errors:
            raise SystemExit("pipeline output %r" % ([str(o) for o in ps.output],))
        pool.close()
        if i == 0:
            continue
        out["open_ms"].append(1000 * (t1 - t0))
        out["rtt_ms"].append(1000 * (t2 - t1))
        out["warm_used"].append(metric(url, "winrmd_psrp_warm_spares_used_total") > used0)
    json.dump(out, sys.stdout)


main()
