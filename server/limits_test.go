package server

import (
	"testing"
	"time"

	"github.com/winrmd/winrmd/configs"
)

// The configuration maps into Limits in one place, with the values the
// daemon has always used; zero fields take their defaults, except
// FailureDelay, whose zero is "answer at once".
func TestLimitsFor(t *testing.T) {
	svc := configs.Default().Service
	got := LimitsFor(svc)
	want := Limits{
		MaxConnections:              300,
		MaxUnauthenticatedPerSource: 200,
		ReadHeaderTimeout:           10 * time.Second,
		IdleTimeout:                 120 * time.Second,
		UnauthenticatedIdle:         10 * time.Second,
		ReapEvery:                   time.Second,
		MaxHeaderBytes:              64 << 10,
		MaxToken:                    48 << 10,
		MaxEnvelope:                 512000,
		SealingOverhead:             16 << 10,
		BodyTimeout:                 60 * time.Second,
		MaxUnauthenticatedBody:      64 << 10,
		UnauthenticatedBodyTimeout:  5 * time.Second,
		ReauthorizeEvery:            30 * time.Second,
		FailureDelay:                3 * time.Second,
	}
	if got != want {
		t.Errorf("LimitsFor(default):\n got %+v\nwant %+v", got, want)
	}
	want.FailureDelay = 0
	if z := (Limits{}).withDefaults(); z != want {
		t.Errorf("zero Limits:\n got %+v\nwant %+v", z, want)
	}
	svc.MaxEnvelopeSizeKB, svc.Auth.FailureDelayMS, svc.MaxConnections = 150, 0, 7
	l := LimitsFor(svc)
	if l.MaxEnvelope != 150*1024 || l.FailureDelay != 0 || l.MaxConnections != 7 {
		t.Errorf("configured values not taken: %+v", l)
	}
}
