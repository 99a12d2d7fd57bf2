package session

import (
	"time"

	"github.com/winrmd/winrmd/configs"
)

// Limits are the session layer's quotas and timeouts: what one user, shell,
// command or enumeration may hold and how long anything may wait. LimitsFor
// is the one place the winrs.* and service.* keys that govern shells map
// into it; the other fields are fixed, each with its reason. The HTTP
// layer's limits are server.Limits, the envelope's wsman.Limits, the PSRP
// wire's psrp.DefaultMaxData.
//
// A zero field takes the default its comment names; the quotas' default is
// configs.Unlimited (2147483647, Windows' "unlimited").
type Limits struct {
	// MaxShellsPerUser is how many shells one user may hold
	// (winrs.max_shells_per_user); one more answers the QuotaLimit fault.
	MaxShellsPerUser int
	// MaxConcurrentUsers is how many users may hold shells at once
	// (winrs.max_concurrent_users).
	MaxConcurrentUsers int
	// MaxProcessesPerShell is how many processes one shell may run
	// (winrs.max_processes_per_shell): a running command count for
	// Command, the pids controller of the shell's cgroup for the rest.
	MaxProcessesPerShell int
	// MaxMemoryPerShellMB is the memory controller limit of a shell's
	// cgroup (winrs.max_memory_per_shell_mb).
	MaxMemoryPerShellMB int
	// IdleTimeout closes a shell no request touched for this long
	// (winrs.idle_timeout_ms; default 2 h, Windows' 7200000). A PSRP
	// Disconnect's IdleTimeOut may lower it for its pool, never raise it.
	IdleTimeout time.Duration
	// MaxShellRunTime closes a shell this long after it was created,
	// however busy (winrs.max_shell_run_time_ms; default
	// configs.Unlimited ms, about 24.8 days).
	MaxShellRunTime time.Duration
	// MaxOperationsPerUser is how many requests of one user may be in
	// flight at once (service.max_concurrent_operations_per_user; default
	// 1500, Windows').
	MaxOperationsPerUser int
	// MaxTimeout clamps a request's OperationTimeout
	// (service.max_timeout_ms; default 60 s, Windows').
	MaxTimeout time.Duration
	// DefaultReceiveTimeout is a Receive's long poll when the client sends
	// no OperationTimeout (default 60 s, Windows' default).
	DefaultReceiveTimeout time.Duration
	// ExitGrace is how long a Receive that found output of a still running
	// command waits for its exit, so a command that writes and exits comes
	// back in one response (default DefaultExitGrace, 100 ms; negative:
	// not at all). See receive.go.
	ExitGrace time.Duration
	// EnumerationTimeout forgets an enumeration not pulled for this long
	// (default 240 s, Windows' EnumerationTimeoutms).
	EnumerationTimeout time.Duration
	// MaxEnumerationsPerUser is how many open enumerations one user may
	// hold (default 64).
	MaxEnumerationsPerUser int
	// MaxBatchItems is the most items one Pull returns (default 32000,
	// Windows' MaxBatchItems; the config Get reports it).
	MaxBatchItems int
	// MaxRetainedCommands is how many commands a shell remembers before
	// it forgets the oldest finished ones (default 256), for clients that
	// never send terminate.
	MaxRetainedCommands int
	// ReapInterval is how often shells past IdleTimeout or MaxShellRunTime
	// and expired enumerations are looked for (default 1 s).
	ReapInterval time.Duration
	// PSRPMaxBuffered is how much output of one runspace pool waits for
	// Receives, over a Disconnect included, before pwsh blocks on its
	// stdout (default 16 MiB).
	PSRPMaxBuffered int
	// PSRPAckTimeout is how long pwsh has to acknowledge one packet
	// (default 60 s, what the PowerShell client gives it); a late
	// acknowledgement ends the pool.
	PSRPAckTimeout time.Duration
	// PSRPCloseTimeout bounds closing a pool (default 60 s): sending
	// Close, the CloseAck and ending pwsh's stdin together. It runs from
	// before Close is written, so for the CloseAck it is the bound that
	// applies, PSRPAckTimeout for every other packet.
	PSRPCloseTimeout time.Duration
}

// LimitsFor maps the configuration's winrs.* quotas and timeouts and the
// service.* keys that govern shells into Limits: the only place they are
// read for a decision. The fixed fields take their defaults.
func LimitsFor(c *configs.Config) Limits {
	w := c.Winrs
	return Limits{
		MaxShellsPerUser:     w.MaxShellsPerUser,
		MaxConcurrentUsers:   w.MaxConcurrentUsers,
		MaxProcessesPerShell: w.MaxProcessesPerShell,
		MaxMemoryPerShellMB:  w.MaxMemoryPerShellMB,
		IdleTimeout:          time.Duration(w.IdleTimeoutMS) * time.Millisecond,
		MaxShellRunTime:      time.Duration(w.MaxShellRunTimeMS) * time.Millisecond,
		MaxOperationsPerUser: c.Service.MaxConcurrentOperationsPerUser,
		MaxTimeout:           time.Duration(c.Service.MaxTimeoutMS) * time.Millisecond,
	}.withDefaults()
}

// withDefaults fills every zero field with its default.
func (l Limits) withDefaults() Limits {
	d := configs.Default()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxShellsPerUser, configs.Unlimited)
	set(&l.MaxConcurrentUsers, configs.Unlimited)
	set(&l.MaxProcessesPerShell, configs.Unlimited)
	set(&l.MaxMemoryPerShellMB, configs.Unlimited)
	setD(&l.IdleTimeout, time.Duration(d.Winrs.IdleTimeoutMS)*time.Millisecond)
	setD(&l.MaxShellRunTime, time.Duration(configs.Unlimited)*time.Millisecond)
	set(&l.MaxOperationsPerUser, d.Service.MaxConcurrentOperationsPerUser)
	setD(&l.MaxTimeout, time.Duration(d.Service.MaxTimeoutMS)*time.Millisecond)
	setD(&l.DefaultReceiveTimeout, 60*time.Second)
	if l.ExitGrace == 0 {
		l.ExitGrace = DefaultExitGrace
	}
	setD(&l.EnumerationTimeout, 240*time.Second)
	set(&l.MaxEnumerationsPerUser, 64)
	set(&l.MaxBatchItems, 32000)
	set(&l.MaxRetainedCommands, 256)
	setD(&l.ReapInterval, time.Second)
	set(&l.PSRPMaxBuffered, 16<<20)
	setD(&l.PSRPAckTimeout, 60*time.Second)
	setD(&l.PSRPCloseTimeout, 60*time.Second)
	return l
}
