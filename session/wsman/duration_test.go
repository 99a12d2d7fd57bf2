package wsman

import (
	"math"
	"testing"
	"time"
)

type durationCase struct {
	in   string
	want time.Duration
	err  bool
}

func durationCases() []durationCase {
	const day = 24 * time.Hour
	return []durationCase{
		// Values clients send (OperationTimeout, Lifetime, IdleTimeOut).
		{in: "PT20S", want: 20 * time.Second},
		{in: "PT60S", want: 60 * time.Second},
		{in: "PT180S", want: 180 * time.Second},
		{in: "PT180.000S", want: 180 * time.Second},
		{in: "PT5M0S", want: 5 * time.Minute},
		{in: "P0DT0H0M1.5S", want: 1500 * time.Millisecond},
		{in: "PT7200.000S", want: 2 * time.Hour},
		{in: "PT2147483.647S", want: 2147483647 * time.Millisecond},
		{in: "P0DT0H0M0S", want: 0},
		// The rest of the grammar.
		{in: "PT0S", want: 0},
		{in: "P0D", want: 0},
		{in: "P1D", want: day},
		{in: "P1M", want: 30 * day},
		{in: "PT1M", want: time.Minute},
		{in: "P1Y", want: 365 * day},
		{in: "P1Y2M3DT4H5M6.7S", want: 365*day + 60*day + 3*day + 4*time.Hour + 5*time.Minute + 6700*time.Millisecond},
		{in: "PT1H", want: time.Hour},
		{in: "PT36H", want: 36 * time.Hour},
		{in: "PT0.000000001S", want: time.Nanosecond},
		{in: "PT0.0000000019S", want: time.Nanosecond}, // truncated
		{in: "PT.5S", want: 500 * time.Millisecond},
		{in: "PT1.S", want: time.Second},
		{in: "PT0010S", want: 10 * time.Second},
		{in: "-PT1S", want: -time.Second},
		{in: "-P1DT1S", want: -(day + time.Second)},
		{in: " PT1S\n", want: time.Second},
		{in: "PT9223372036.854775807S", want: math.MaxInt64},
		{in: "P106751D", want: 106751 * day},
		// Errors.
		{in: "", err: true},
		{in: "P", err: true},
		{in: "PT", err: true},
		{in: "P1DT", err: true},
		{in: "-P", err: true},
		{in: "--PT1S", err: true},
		{in: "PT-1S", err: true},
		{in: "P-1D", err: true},
		{in: "PT+1S", err: true},
		{in: "PT1H1H", err: true},
		{in: "PT1S1M", err: true},
		{in: "P1D1Y", err: true},
		{in: "P1H", err: true},
		{in: "PT1D", err: true},
		{in: "P1DT1Y", err: true},
		{in: "P1.5D", err: true},
		{in: "PT1.5M", err: true},
		{in: "PT1..5S", err: true},
		{in: "PT.S", err: true},
		{in: "PTS", err: true},
		{in: "PT1", err: true},
		{in: "1S", err: true},
		{in: "60", err: true},
		{in: "pt1s", err: true},
		{in: "PT1s", err: true},
		{in: "P1YT", err: true},
		{in: "PTT1S", err: true},
		{in: "PT1S ", want: time.Second},
		{in: "PT 1S", err: true},
		{in: "PT1,5S", err: true},
		{in: "PT１S", err: true}, // full-width digit
		{in: "PT9223372036.854775808S", err: true},
		{in: "PT9999999999999999999S", err: true},
		{in: "PT99999999999999999999999999999S", err: true},
		{in: "P106752D", err: true},
		{in: "P99999999Y", err: true},
		{in: "PT2562048H", err: true},
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range durationCases() {
		got, err := ParseDuration(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseDuration(%q) = %v, want error", tc.in, got)
			} else if _, ok := err.(*DurationError); !ok {
				t.Errorf("ParseDuration(%q) error %T is not *DurationError", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "PT0.000S"},
		{2 * time.Hour, "PT7200.000S"},
		{2147483647 * time.Millisecond, "PT2147483.647S"},
		{1500 * time.Millisecond, "PT1.500S"},
		{60*time.Second + 5*time.Millisecond, "PT60.005S"},
		{time.Nanosecond, "PT0.000S"},
		{999999 * time.Nanosecond, "PT0.000S"},
		{-time.Second, "-PT1.000S"},
		{-time.Nanosecond, "PT0.000S"},
		{math.MaxInt64, "PT9223372036.854S"},
		{math.MinInt64, "-PT9223372036.854S"},
	} {
		if got := FormatDuration(tc.in); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatDurationDHMS(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "P0DT0H0M0S"},
		{999 * time.Millisecond, "P0DT0H0M0S"},
		{90061 * time.Second, "P1DT1H1M1S"},
		{7200 * time.Second, "P0DT2H0M0S"},
		{-5 * time.Second, "-P0DT0H0M5S"},
		{math.MinInt64, "-P106751DT23H47M16S"},
	} {
		if got := FormatDurationDHMS(tc.in); got != tc.want {
			t.Errorf("FormatDurationDHMS(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// checkDurationRoundTrip asserts that both formats parse back to d
// truncated to their precision.
func checkDurationRoundTrip(t *testing.T, d time.Duration) {
	t.Helper()
	s := FormatDuration(d)
	got, err := ParseDuration(s)
	if err != nil {
		t.Fatalf("ParseDuration(FormatDuration(%d) = %q): %v", d, s, err)
	}
	if want := d.Truncate(time.Millisecond); got != want {
		t.Fatalf("ParseDuration(%q) = %d, want %d", s, got, want)
	}
	s = FormatDurationDHMS(d)
	got, err = ParseDuration(s)
	if err != nil {
		t.Fatalf("ParseDuration(FormatDurationDHMS(%d) = %q): %v", d, s, err)
	}
	if want := d.Truncate(time.Second); got != want {
		t.Fatalf("ParseDuration(%q) = %d, want %d", s, got, want)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	for _, tc := range durationCases() {
		if !tc.err {
			checkDurationRoundTrip(t, tc.want)
		}
	}
	for _, d := range []time.Duration{0, 1, -1, time.Millisecond, -time.Millisecond, 1234567890123, math.MaxInt64, math.MinInt64 + 1, math.MinInt64} {
		checkDurationRoundTrip(t, d)
	}
}
