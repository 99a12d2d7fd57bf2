package session

import "strings"

// cmdShellLine applies cmd.exe's quote rule to a command line before it
// reaches `/bin/sh -c`, because clients write command lines for
// `cmd.exe /c <Command> <Arguments>`, which is what Windows runs outside
// WINRS_SKIP_CMD_SHELL.
//
// cmd /c documents two cases (cmd /?, "processing quote characters"): it
// keeps the quotes only when the line holds exactly two of them around a
// name with whitespace in it and no special character (&<>()@^|) that names
// an existing executable; otherwise, when the first character is a quote,
// it removes that quote and the last quote of the line, keeping whatever
// follows it. The Ruby WinRM library (Vagrant, Test Kitchen, knife-windows,
// InSpec's train-winrm) relies on the second case: it sends every command
// as `"echo 'hello world'"`, which cmd runs as `echo 'hello world'`.
//
// Only the second case is applied here: the first needs a lookup of the
// quoted path as the user, and a Linux path with spaces is rare where a
// Windows one ("C:\Program Files\...") is common. Leading blanks are
// skipped first, as cmd does after /c. Nothing else in the line changes:
// no caret escapes, no %VAR% expansion — the line is sh's from then on.
func cmdShellLine(line string) string {
	s := strings.TrimLeft(line, " \t")
	if !strings.HasPrefix(s, `"`) {
		return line
	}
	s = s[1:]
	if i := strings.LastIndexByte(s, '"'); i >= 0 {
		s = s[:i] + s[i+1:]
	}
	return s
}
