package wsman

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Calendar units of xs:duration have no fixed length; like Windows and OMI
// we use 365-day years and 30-day months.
const (
	durYear  = 365 * 24 * time.Hour
	durMonth = 30 * 24 * time.Hour
	durDay   = 24 * time.Hour
)

// durationError builds a *DurationError, truncating long input.
func durationError(s, why string) error {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return &DurationError{Input: s, Reason: why}
}

// DurationError reports an invalid xs:duration.
type DurationError struct {
	Input  string // the offending text, truncated to 64 bytes
	Reason string
}

func (e *DurationError) Error() string {
	return "wsman: invalid xs:duration " + strconv.Quote(e.Input) + ": " + e.Reason
}

// ParseDuration parses an xs:duration: [-]P[nY][nM][nD][T[nH][nM][n[.n]S]]
// with at least one component, and at least one after a T. Only seconds may
// carry a fraction (".5S" and "1.S" are accepted, as in XSD 1.1); digits
// beyond nanoseconds are truncated. Surrounding XML whitespace is ignored.
// Years are 365 days and months 30 days. A leading '-' yields a negative
// duration; callers decide whether that is acceptable. Values beyond
// time.Duration's range are errors.
func ParseDuration(s string) (time.Duration, error) {
	in := s
	s = strings.Trim(s, " \t\r\n")
	neg := false
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	if !strings.HasPrefix(s, "P") {
		return 0, durationError(in, "missing P")
	}
	s = s[1:]

	var total uint64 // nanoseconds
	inTime, anyPart, anyTime := false, false, false
	lastRank := 0
	for len(s) > 0 {
		if s[0] == 'T' {
			if inTime {
				return 0, durationError(in, "repeated T")
			}
			inTime = true
			lastRank = 3
			s = s[1:]
			continue
		}
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		intPart := s[:i]
		hasDot, frac := false, ""
		if i < len(s) && s[i] == '.' {
			hasDot = true
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			frac = s[i+1 : j]
			i = j
		}
		if intPart == "" && frac == "" {
			return 0, durationError(in, "missing number")
		}
		if i >= len(s) {
			return 0, durationError(in, "missing designator")
		}
		designator := s[i]
		s = s[i+1:]

		var rank int
		var unit time.Duration
		switch {
		case !inTime && designator == 'Y':
			rank, unit = 1, durYear
		case !inTime && designator == 'M':
			rank, unit = 2, durMonth
		case !inTime && designator == 'D':
			rank, unit = 3, durDay
		case inTime && designator == 'H':
			rank, unit = 4, time.Hour
		case inTime && designator == 'M':
			rank, unit = 5, time.Minute
		case inTime && designator == 'S':
			rank, unit = 6, time.Second
		default:
			return 0, durationError(in, "unexpected designator "+strconv.QuoteRune(rune(designator)))
		}
		if rank <= lastRank {
			return 0, durationError(in, "designators out of order")
		}
		if hasDot && rank != 6 {
			return 0, durationError(in, "fraction allowed on seconds only")
		}
		lastRank = rank

		n, ok := parseUint(intPart)
		if !ok {
			return 0, durationError(in, "out of range")
		}
		if n != 0 {
			if n > math.MaxInt64/uint64(unit) {
				return 0, durationError(in, "out of range")
			}
			if total, ok = addNoOverflow(total, n*uint64(unit)); !ok {
				return 0, durationError(in, "out of range")
			}
		}
		if frac != "" {
			var ns uint64
			for k := 0; k < 9; k++ {
				ns *= 10
				if k < len(frac) {
					ns += uint64(frac[k] - '0')
				}
			}
			if total, ok = addNoOverflow(total, ns); !ok {
				return 0, durationError(in, "out of range")
			}
		}
		anyPart = true
		if inTime {
			anyTime = true
		}
	}
	if !anyPart {
		return 0, durationError(in, "no components")
	}
	if inTime && !anyTime {
		return 0, durationError(in, "T without time components")
	}
	d := time.Duration(total)
	if neg {
		d = -d
	}
	return d, nil
}

// parseUint parses decimal digits ("" is 0) and reports overflow.
func parseUint(s string) (uint64, bool) {
	var n uint64
	for i := 0; i < len(s); i++ {
		if n > (math.MaxUint64-9)/10 {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n, true
}

// addNoOverflow adds two values that must stay within int64's range.
func addNoOverflow(a, b uint64) (uint64, bool) {
	if b > math.MaxInt64 || a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// absDuration returns |d| without overflowing on math.MinInt64.
func absDuration(d time.Duration) (u uint64, neg bool) {
	if d < 0 {
		return uint64(-(d + 1)) + 1, true
	}
	return uint64(d), false
}

// FormatDuration formats d the way Windows does for timeouts: seconds with
// millisecond precision, e.g. "PT7200.000S" or "PT2147483.647S". Precision
// below a millisecond is truncated toward zero.
func FormatDuration(d time.Duration) string {
	u, neg := absDuration(d)
	ms := u / uint64(time.Millisecond)
	var b strings.Builder
	if neg && ms != 0 {
		b.WriteByte('-')
	}
	b.WriteString("PT")
	b.WriteString(strconv.FormatUint(ms/1000, 10))
	frac := ms % 1000
	b.WriteByte('.')
	b.WriteByte(byte('0' + frac/100))
	b.WriteByte(byte('0' + frac/10%10))
	b.WriteByte(byte('0' + frac%10))
	b.WriteByte('S')
	return b.String()
}

// FormatDurationDHMS formats d the way Windows reports elapsed times such as
// rsp:ShellRunTime: "P0DT0H0M0S", whole seconds truncated toward zero.
func FormatDurationDHMS(d time.Duration) string {
	u, neg := absDuration(d)
	secs := u / uint64(time.Second)
	var b strings.Builder
	if neg && secs != 0 {
		b.WriteByte('-')
	}
	b.WriteByte('P')
	b.WriteString(strconv.FormatUint(secs/86400, 10))
	b.WriteString("DT")
	b.WriteString(strconv.FormatUint(secs/3600%24, 10))
	b.WriteByte('H')
	b.WriteString(strconv.FormatUint(secs/60%60, 10))
	b.WriteByte('M')
	b.WriteString(strconv.FormatUint(secs%60, 10))
	b.WriteByte('S')
	return b.String()
}
