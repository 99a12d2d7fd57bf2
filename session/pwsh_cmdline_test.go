package session

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestSplitWindowsArgs(t *testing.T) {
	for in, want := range map[string][]string{
		`powershell -encodedcommand QQBCAA==`:  {"powershell", "-encodedcommand", "QQBCAA=="},
		`  a   b  `:                            {"a", "b"},
		`"C:\Program Files\pwsh.exe" -c "x y"`: {`C:\Program Files\pwsh.exe`, "-c", "x y"},
		`a\\b \"q\" "a\\" "x""y"`:              {`a\\b`, `"q"`, `a\`, `x"y`},
		`"unterminated quote`:                  {"unterminated quote"},
		`x""`:                                  {"x"},
		"tab\tsep\r\nnl":                       {"tab", "sep", "nl"},
		``:                                     nil,
		`\\\"`:                                 {`\"`},
		`-Command "Write-Output \"hi there\""`: {"-Command", `Write-Output "hi there"`},
	} {
		if got := splitWindowsArgs(in); !slices.Equal(got, want) {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestPowershellArgv(t *testing.T) {
	for _, line := range []string{
		"powershell -encodedcommand QQBCAA==",
		"PowerShell.EXE -NoProfile -NonInteractive -ExecutionPolicy Unrestricted -EncodedCommand QQBCAA==",
		`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe -c 1`,
		"pwsh -Command Get-Date",
	} {
		argv, ok := powershellArgv(line, "/opt/pwsh")
		if !ok {
			t.Errorf("%q not recognised", line)
			continue
		}
		args := splitWindowsArgs(line)
		if argv[0] != "/bin/sh" || argv[4] != "/opt/pwsh" || !slices.Equal(argv[5:], args[1:]) {
			t.Errorf("%q: argv %q", line, argv)
		}
	}
	for _, line := range []string{"echo powershell", "powershellx -c 1", "", "cmd /c powershell", "/usr/bin/pwshx"} {
		if argv, ok := powershellArgv(line, "pwsh"); ok {
			t.Errorf("%q recognised as %q", line, argv)
		}
	}
}

// TestPowershellLauncher runs the launcher itself: with a program that
// exists it is exec'd with the client's arguments unchanged; without one
// the command says so on stderr and exits 127.
func TestPowershellLauncher(t *testing.T) {
	argv, _ := powershellArgv(`pwsh -c "a b" 'c'`, "echo")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil || string(out) != "-c a b 'c'\n" {
		t.Fatalf("with a PowerShell: %q %v", out, err)
	}
	argv, _ = powershellArgv("powershell -encodedcommand QQBCAA==", "/nonexistent/pwsh")
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 127 {
		t.Fatalf("without a PowerShell: %v", err)
	}
	if !strings.Contains(stderr.String(), "PowerShell is not installed") {
		t.Errorf("stderr %q", stderr.String())
	}
}

func FuzzSplitWindowsArgs(f *testing.F) {
	f.Add(`powershell -encodedcommand QQBCAA==`)
	f.Add(`a\\\"b "c""d" \\`)
	f.Fuzz(func(t *testing.T, s string) {
		args := splitWindowsArgs(s)
		total := 0
		for _, a := range args {
			total += len(a)
		}
		if total > len(s) {
			t.Fatalf("arguments longer than the line: %d > %d", total, len(s))
		}
	})
}
