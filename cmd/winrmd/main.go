// Command winrmd is a WinRM-compatible remoting server for Linux.
//
// This file is CLI wiring only: every behaviour lives in the packages it
// assembles (server, session, authn, isolation, configs).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/isolation"
	"github.com/winrmd/winrmd/server/procs"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func main() {
	// The hidden worker subcommand comes first: a worker must never parse
	// flags or configuration meant for the daemon.
	if isolation.IsWorker() {
		// Still root (a pooled worker): the runtime's sysmon naps with
		// procs.SysmonSlack while the worker runs its commands; the
		// commands are forked from the main thread and keep its slack.
		_, _ = procs.RelaxSysmon(procs.SysmonSlack)
		isolation.WorkerMain()
		return
	}
	if isolation.IsWatchdog() {
		isolation.WatchdogMain()
		return
	}
	// A container's entrypoint: pid 1 reaps orphans and runs the daemon
	// as its child (isolation/init.go).
	if code, ran := isolation.RunAsInit(); ran {
		os.Exit(code)
	}
	// Nothing the daemon inherited beyond 0, 1, 2 may reach a worker or a
	// user's command (issue 14.8).
	if err := isolation.MarkInheritedCloseOnExec(3); err != nil {
		fmt.Fprintf(os.Stderr, "winrmd: marking inherited descriptors close-on-exec: %v\n", err)
		os.Exit(1)
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveCmd(args[1:], stderr)
	case "lab":
		return labCmd(args[1:], stdout, stderr)
	case "config":
		return configCmd(args[1:], stdout, stderr)
	case "cert":
		return certCmd(args[1:], stdout, stderr)
	case "enable":
		return enableCmd(args[1:], stdout, stderr)
	case "disable":
		return disableCmd(args[1:], stdout, stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "probe":
		return probeCmd(args[1:], stdout, stderr)
	case "user":
		return userCmd(args[1:], stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "winrmd %s (%s)\n", Version, buildSummary())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "winrmd: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: winrmd <command> [options]

  serve --config FILE [--ready-file PATH]   run the daemon
  lab [--dir DIR]                            a lab daemon on loopback (make run)
  config check --config FILE                 validate a configuration
  config default                             print the default configuration
  cert generate --cert FILE --key FILE [--host NAME]...
                                             write a self-signed certificate
  user add|passwd|del|list --store FILE [NAME]
                                             manage the local account store
  enable [--basic] [--host NAME]... [--cert FILE --key FILE] [--root DIR]
                                             make this host a remoting target (Enable-PSRemoting)
  disable [--root DIR]                       stop and disable the service; keep the configuration
  status [--config FILE]                     listeners, schemes, live shells, last logons
  probe [--url URL]                          anonymous Identify; exit 0 when answered (container probes)
  version                                    print the version
`)
}

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: winrmd config check --config FILE | winrmd config default")
		return 2
	}
	switch args[0] {
	case "default":
		stdout.Write(configs.Example())
		return 0
	case "check":
		fs := newFlagSet("config check", stderr)
		path := fs.String("config", "/etc/winrmd/winrmd.yaml", "configuration file")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		c, err := configs.Load(*path)
		if err != nil {
			fmt.Fprintf(stderr, "winrmd: %v\n", err)
			return 1
		}
		for _, w := range c.UnservedSchemes() {
			fmt.Fprintf(stdout, "%s: warning: %s\n", *path, w)
		}
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	}
	fmt.Fprintf(stderr, "winrmd config: unknown subcommand %q\n", args[0])
	return 2
}
