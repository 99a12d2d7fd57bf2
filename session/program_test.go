package session

import (
	"strings"
	"testing"

	"github.com/winrmd/winrmd/isolation"
)

// The audit records the program, never arguments or the values of leading
// assignments (issue 14.12).
func TestProgramName(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{"ls -l /", "ls"},
		{"TOKEN=s3cret curl https://x", "TOKEN=… curl"},
		{"A=1 B=two sh -c 'echo $A'", "A=… B=… sh"},
		{"PASSWORD=hunter2", "PASSWORD=…"},
		{"  echo   x", "echo"},
		{"1A=x prog", "1A=x"},
		{"", ""},
	} {
		got := programName(isolation.CommandSpec{Line: tt.line})
		if got != tt.want {
			t.Errorf("programName(%q) = %q, want %q", tt.line, got, tt.want)
		}
		for _, secret := range []string{"s3cret", "hunter2", "two"} {
			if strings.Contains(got, secret) {
				t.Errorf("programName(%q) = %q leaks %q", tt.line, got, secret)
			}
		}
	}
	if got := programName(isolation.CommandSpec{Argv: []string{"/bin/id", "-u"}}); got != "/bin/id" {
		t.Errorf("argv: %q", got)
	}
}
