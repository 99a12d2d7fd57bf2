// Command winrmd-worker is the shell worker alone: the process winrmd starts
// for every shell (package isolation's worker side: the privilege drop, the
// command loop), linked without the daemon's listeners, authentication,
// metrics, configuration and zap: no net/http or TLS at all (deps_test.go). Installed beside winrmd, it is what the daemon
// runs instead of re-executing itself; without it the daemon runs
// `winrmd worker`, the same code. It exists for speed and memory: the
// daemon's binary spends about 2.8 ms of CPU starting (dynamic loading,
// 141 package initialisers) and keeps about 0.5 MB more private memory in
// every idle shell (BENCH.md). It is built without cgo, so it is static and
// loads nothing at start.
//
// It is started by winrmd only, over its socketpair on fd 3; run by hand it
// says so and exits.
package main

import (
	"fmt"
	"os"

	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/server/procs"
)

func main() {
	if !isolation.IsWorker() {
		fmt.Fprintln(os.Stderr, "winrmd-worker: the shell worker of winrmd; winrmd starts it (as `winrmd-worker worker`), it is not run by hand")
		os.Exit(2)
	}
	// As in winrmd's own worker branch: sysmon naps with
	// procs.SysmonSlack; the commands keep the main thread's slack.
	_, _ = procs.RelaxSysmon(procs.SysmonSlack)
	isolation.WorkerMain()
}
