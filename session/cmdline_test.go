package session

import "testing"

func TestCmdShellLine(t *testing.T) {
	cases := []struct{ in, want string }{
		// The Ruby WinRM library's shape: the whole command quoted.
		{`"echo 'hello world'"`, `echo 'hello world'`},
		// First and last quote go; inner quotes and what follows stay.
		{`"echo "a b" c"`, `echo "a b" c`},
		{`"printf %s\n x" extra`, `printf %s\n x extra`},
		{`"ls" -l /`, `ls -l /`},
		// Leading blanks are skipped before the check.
		{`  "echo x"`, `echo x`},
		// One quote only: the first goes, there is no last.
		{`"echo x`, `echo x`},
		// Not starting with a quote: untouched, quotes and all.
		{`echo "a b"`, `echo "a b"`},
		{`sh -c 'echo x; exit 3'`, `sh -c 'echo x; exit 3'`},
		{``, ``},
		// Empty after the rule.
		{`""`, ``},
	}
	for _, c := range cases {
		if got := cmdShellLine(c.in); got != c.want {
			t.Errorf("cmdShellLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
