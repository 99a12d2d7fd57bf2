package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/winrmd/winrmd/authn"
	"github.com/winrmd/winrmd/authn/accounts"
	"github.com/winrmd/winrmd/configs"
)

const userUsage = `usage: winrmd user add|passwd|del|list [--store FILE] [NAME]

  add NAME      create an account (fails if NAME exists, in any case)
  passwd NAME   set the password of an existing account
  del NAME      delete an account
  list          print the account names, one per line

  --store FILE  the account store (default %s)

The password is read from standard input when it is not a terminal (the
first line, without its line end), else prompted for twice without echo.
Exit status: 0 done, 1 failed, 2 usage.
`

// userCmd implements `winrmd user`.
func userCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintf(stderr, userUsage, configs.Default().Accounts.StoreFile)
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	verb := args[0]
	switch verb {
	case "-h", "--help", "help":
		fmt.Fprintf(stdout, userUsage, configs.Default().Accounts.StoreFile)
		return 0
	case "add", "passwd", "del", "list":
	default:
		fmt.Fprintf(stderr, "winrmd user: unknown subcommand %q\n", verb)
		return usage()
	}
	fs := flag.NewFlagSet("winrmd user "+verb, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	store := fs.String("store", configs.Default().Accounts.StoreFile, "account store file")
	// Flags may come before or after the name.
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stdout, userUsage, configs.Default().Accounts.StoreFile)
				return 0
			}
			fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
			return usage()
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	if *store == "" {
		fmt.Fprintf(stderr, "winrmd user %s: --store is empty\n", verb)
		return 2
	}
	want := 1
	if verb == "list" {
		want = 0
	}
	if len(pos) != want {
		if want == 0 {
			fmt.Fprintf(stderr, "winrmd user list: takes no NAME\n")
		} else {
			fmt.Fprintf(stderr, "winrmd user %s: exactly one NAME is required\n", verb)
		}
		return usage()
	}
	var name string
	if want == 1 {
		name = pos[0]
		if err := accounts.ValidName(name); err != nil {
			fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
			return 2
		}
	}

	st, err := accounts.Open(*store)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
		return 1
	}
	fail := func(err error) int {
		switch {
		case errors.Is(err, accounts.ErrExists):
			fmt.Fprintf(stderr, "winrmd user %s: account %q already exists in %s\n", verb, name, *store)
		case errors.Is(err, authn.ErrUnknownAccount):
			fmt.Fprintf(stderr, "winrmd user %s: no account %q in %s\n", verb, name, *store)
		default:
			fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
		}
		return 1
	}

	switch verb {
	case "list":
		if _, err := st.Contains(""); err != nil {
			return fail(err)
		}
		for _, n := range st.List() {
			fmt.Fprintln(stdout, n)
		}
		return 0
	case "del":
		if err := st.Delete(name); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stderr, "deleted %q\n", name)
		return 0
	}

	// add, passwd: check before asking for a password.
	in, err := st.Contains(name)
	if err != nil {
		return fail(err)
	}
	if verb == "add" && in {
		return fail(accounts.ErrExists)
	}
	if verb == "passwd" && !in {
		return fail(authn.ErrUnknownAccount)
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
		return 1
	}
	if err := accounts.ValidPassword(pw); err != nil {
		fmt.Fprintf(stderr, "winrmd user %s: %v\n", verb, err)
		return 1
	}
	if verb == "add" {
		err = st.Add(name, pw)
	} else {
		err = st.SetPassword(name, pw)
	}
	if err != nil {
		return fail(err)
	}
	if verb == "add" {
		fmt.Fprintf(stderr, "added %q to %s\n", name, *store)
	} else {
		fmt.Fprintf(stderr, "password of %q changed\n", name)
	}
	return 0
}

// readPassword reads a password: prompted twice without echo on a terminal,
// else the first line of stdin. It never echoes it.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(stderr, "Password: ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		defer clear(a)
		fmt.Fprint(stderr, "Password (again): ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		defer clear(b)
		if !bytes.Equal(a, b) {
			return "", errors.New("the passwords do not match")
		}
		return string(a), nil
	}
	r := bufio.NewReaderSize(stdin, accounts.MaxPasswordBytes+2)
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", fmt.Errorf("password longer than %d bytes", accounts.MaxPasswordBytes)
	case err != nil && !errors.Is(err, io.EOF):
		return "", fmt.Errorf("read password: %w", err)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return "", errors.New("no password on standard input")
	}
	return string(line), nil
}
