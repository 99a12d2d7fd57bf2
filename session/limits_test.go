package session

import (
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// The configuration maps into Limits in one place, with the values the
// session layer has always used; a zero Limits is the same defaults.
func TestLimitsFor(t *testing.T) {
	u := configs.Unlimited
	want := Limits{
		MaxShellsPerUser: u, MaxConcurrentUsers: u, MaxProcessesPerShell: u, MaxMemoryPerShellMB: u,
		IdleTimeout:            2 * time.Hour,
		MaxShellRunTime:        time.Duration(u) * time.Millisecond,
		MaxOperationsPerUser:   1500,
		MaxTimeout:             60 * time.Second,
		DefaultReceiveTimeout:  60 * time.Second,
		ExitGrace:              DefaultExitGrace,
		EnumerationTimeout:     240 * time.Second,
		MaxEnumerationsPerUser: 64,
		MaxBatchItems:          32000,
		MaxRetainedCommands:    256,
		ReapInterval:           time.Second,
		PSRPMaxBuffered:        16 << 20,
		PSRPAckTimeout:         60 * time.Second,
		PSRPCloseTimeout:       60 * time.Second,
	}
	if got := LimitsFor(configs.Default()); got != want {
		t.Errorf("LimitsFor(default):\n got %+v\nwant %+v", got, want)
	}
	if got := (Limits{}).withDefaults(); got != want {
		t.Errorf("zero Limits:\n got %+v\nwant %+v", got, want)
	}
	c := configs.Default()
	c.Winrs.MaxShellsPerUser, c.Winrs.IdleTimeoutMS, c.Service.MaxTimeoutMS = 3, 5000, 1500
	l := LimitsFor(c)
	if l.MaxShellsPerUser != 3 || l.IdleTimeout != 5*time.Second || l.MaxTimeout != 1500*time.Millisecond {
		t.Errorf("configured values not taken: %+v", l)
	}
	if (Limits{ExitGrace: -1}).withDefaults().ExitGrace != -1 {
		t.Error("a negative ExitGrace (no wait) was replaced")
	}
}
