package session

// `powershell` inside cmd shells. pywinrm's run_ps, Ansible's winrm
// connection and many scripts send a WinRS command line such as
//
//	powershell -encodedcommand <base64 of UTF-16LE script>
//	powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Unrestricted -EncodedCommand <b64>
//	pwsh -Command "Get-Date"
//
// On Linux there is no `powershell`, and `/bin/sh -c` would answer with a
// shell's "not found" riddle. winrmd recognises these lines and runs the
// configured PowerShell (pwsh accepts the same switches, -EncodedCommand
// included) with the client's arguments; where PowerShell is not installed
// the command writes one clear line to stderr and exits 127.

import (
	"strings"
)

// powershellNames are the program names that mean PowerShell, compared
// case-insensitively as Windows does.
var powershellNames = []string{"powershell", "powershell.exe", "pwsh", "pwsh.exe"}

// pwshLauncher runs $1 with the remaining arguments when it can be found, and
// otherwise says so. $0 names the launcher in sh's own messages.
const pwshLauncher = `p="$1"; shift
if command -v "$p" >/dev/null 2>&1; then exec "$p" "$@"; fi
echo "winrmd: PowerShell is not installed on this host ($p not found); install PowerShell (pwsh) to run powershell commands" >&2
exit 127`

// pwshLauncherName is the launcher's $0.
const pwshLauncherName = "winrmd-powershell"

// maxPwshArgs bounds how many arguments a powershell command line may split
// into (the command line itself is already bounded by the envelope).
const maxPwshArgs = 4096

// powershellArgv recognises a command line that starts PowerShell and
// returns the argv that runs the configured pwsh with the same arguments
// (through the launcher above). ok is false for any other command line.
func powershellArgv(line, pwshPath string) (argv []string, ok bool) {
	args := splitWindowsArgs(line)
	if len(args) == 0 || len(args) > maxPwshArgs {
		return nil, false
	}
	prog := args[0]
	if i := strings.LastIndexAny(prog, `\/`); i >= 0 {
		// C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe
		prog = prog[i+1:]
	}
	match := false
	for _, n := range powershellNames {
		if strings.EqualFold(prog, n) {
			match = true
		}
	}
	if !match {
		return nil, false
	}
	return append([]string{"/bin/sh", "-c", pwshLauncher, pwshLauncherName, pwshPath}, args[1:]...), true
}

// splitWindowsArgs splits a command line the way the Microsoft C runtime
// does (CommandLineToArgvW): whitespace separates, double quotes group,
// backslashes are literal unless they precede a double quote (2n
// backslashes + quote = n backslashes and a quote toggle; 2n+1 = n
// backslashes and a literal quote), and "" inside quotes is a literal quote.
func splitWindowsArgs(s string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			n := 0
			for i < len(s) && s[i] == '\\' {
				n++
				i++
			}
			if i < len(s) && s[i] == '"' {
				cur.WriteString(strings.Repeat(`\`, n/2))
				if n%2 == 1 {
					cur.WriteByte('"')
				} else {
					quoted = !quoted
				}
			} else {
				cur.WriteString(strings.Repeat(`\`, n))
				i--
			}
			inArg = true
		case c == '"':
			if quoted && i+1 < len(s) && s[i+1] == '"' {
				cur.WriteByte('"')
				i++
			} else {
				quoted = !quoted
			}
			inArg = true
		case (c == ' ' || c == '\t' || c == '\n' || c == '\r') && !quoted:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
