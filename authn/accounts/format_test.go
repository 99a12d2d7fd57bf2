package accounts

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/winrmd/winrmd/authn/ntlm"
)

// A record made with tiny argon2 parameters (the parser does not hash).
const (
	goodHash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
	goodNT   = "a4f49c406510bdcab6824ee7c30fd852"
	goodLine = "alice:" + goodHash + ":" + goodNT
)

func file(lines ...string) string {
	return Header + "\n" + strings.Join(lines, "\n")
}

var parseTests = []struct {
	name  string
	data  string
	users []string // nil with ok=false: must fail
	ok    bool
}{
	{"empty file", "", nil, true},
	{"header only", Header + "\n", nil, true},
	{"header without newline", Header, nil, true},
	{"one account", file(goodLine) + "\n", []string{"alice"}, true},
	{"no final newline", file(goodLine), []string{"alice"}, true},
	{"comments and blank lines", file("# comment", "", goodLine, "#", ""), []string{"alice"}, true},
	{"two accounts", file(goodLine, "Bob:"+goodHash+":"+goodNT), []string{"alice", "Bob"}, true},
	{"unicode name", file("josé:" + goodHash + ":" + goodNT), []string{"josé"}, true},
	{"name with space", file("first last:" + goodHash + ":" + goodNT), []string{"first last"}, true},
	{"max params", file("a:$argon2id$v=19$m=1048576,t=32,p=64$" + strings.Repeat("A", 86) + "$" + strings.Repeat("A", 86) + ":" + goodNT), []string{"a"}, true},

	{"missing header", goodLine + "\n", nil, false},
	{"wrong header", "# winrmd account store v2\n" + goodLine, nil, false},
	{"header with CR", Header + "\r\n" + goodLine, nil, false},
	{"CR line end", file(goodLine + "\r"), nil, false},
	{"leading blank line", "\n" + Header + "\n", nil, false},
	{"duplicate", file(goodLine, goodLine), nil, false},
	{"duplicate by case", file(goodLine, "ALICE:"+goodHash+":"+goodNT), nil, false},
	{"two fields", file("alice:" + goodHash), nil, false},
	{"four fields", file(goodLine + ":x"), nil, false},
	{"empty name", file(":" + goodHash + ":" + goodNT), nil, false},
	{"name too long", file(strings.Repeat("a", 65) + ":" + goodHash + ":" + goodNT), nil, false},
	{"name 64 bytes", file(strings.Repeat("a", 64) + ":" + goodHash + ":" + goodNT), []string{strings.Repeat("a", 64)}, true},
	{"name with backslash", file(`CORP\alice:` + goodHash + ":" + goodNT), nil, false},
	{"name with at", file("alice@x:" + goodHash + ":" + goodNT), nil, false},
	{"name with slash", file("a/b:" + goodHash + ":" + goodNT), nil, false},
	{"name with tab", file("a\tb:" + goodHash + ":" + goodNT), nil, false},
	{"name with NUL", file("a\x00b:" + goodHash + ":" + goodNT), nil, false},
	{"name with leading dash", file("-a:" + goodHash + ":" + goodNT), nil, false},
	{"name with leading space", file(" a:" + goodHash + ":" + goodNT), nil, false},
	{"name with zero-width space", file("a\u200bb:" + goodHash + ":" + goodNT), nil, false},
	{"invalid UTF-8", file("a\xffb:" + goodHash + ":" + goodNT), nil, false},
	{"upper-case NT hash", file("alice:" + goodHash + ":" + strings.ToUpper(goodNT)), nil, false},
	{"short NT hash", file("alice:" + goodHash + ":" + goodNT[:30]), nil, false},
	{"non-hex NT hash", file("alice:" + goodHash + ":" + goodNT[:31] + "g"), nil, false},
	{"argon2i", file("alice:$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"argon2 v16", file("alice:$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"no version", file("alice:$argon2id$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"params out of order", file("alice:$argon2id$v=19$t=1,m=64,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"leading zero param", file("alice:$argon2id$v=19$m=064,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"plus sign param", file("alice:$argon2id$v=19$m=+64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"memory too large", file("alice:$argon2id$v=19$m=1048577,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"memory below 8p", file("alice:$argon2id$v=19$m=16,t=1,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"zero time", file("alice:$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"too many lanes", file("alice:$argon2id$v=19$m=4096,t=1,p=65$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"huge param", file("alice:$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"padded salt", file("alice:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0YQ==$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"short salt", file("alice:$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA:" + goodNT), nil, false},
	{"short hash", file("alice:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA:" + goodNT), nil, false},
	{"non-canonical base64", file("alice:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaB:" + goodNT), nil, false},
	{"extra dollar field", file("alice:" + goodHash + "$x:" + goodNT), nil, false},
	{"line too long", file("# " + strings.Repeat("x", MaxLineBytes)), nil, false},
	{"plain text password", file("alice:secret:" + goodNT), nil, false},
	{"shadow-like line", file("alice:$6$salt$hash:19000:0:99999:7:::"), nil, false},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := parse([]byte(tt.data))
			if !tt.ok {
				if err == nil {
					t.Fatalf("parse accepted %q", tt.data)
				}
				if strings.Contains(err.Error(), "aGFzaGhh") || strings.Contains(err.Error(), goodNT) {
					t.Fatalf("error leaks file content: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			var names []string
			for _, r := range recs {
				names = append(names, r.name)
			}
			if strings.Join(names, ",") != strings.Join(tt.users, ",") {
				t.Fatalf("names %q, want %q", names, tt.users)
			}
			// Round trip: format then parse gives the same records.
			again, err := parse(format(recs))
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if !bytes.Equal(format(again), format(recs)) {
				t.Fatal("format is not stable")
			}
		})
	}
}

func TestParseFileTooLarge(t *testing.T) {
	data := make([]byte, MaxFileBytes+1)
	if _, err := parse(data); err == nil {
		t.Fatal("parse accepted an oversized file")
	}
}

func TestNTHashVectors(t *testing.T) {
	tests := []struct{ pw, want string }{
		{"Password", "a4f49c406510bdcab6824ee7c30fd852"},      // MS-NLMP 4.2.2.1.2
		{"password", "8846f7eaee8fb117ad06bdd830b7586c"},      //
		{"SecREt01", "cd06ca7c7e10c99b1d33b7485a2ed808"},      // davenport
		{"", "31d6cfe0d16ae931b73c59d7e0c089c0"},              // empty
		{"pässwörd€", hex.EncodeToString(ntRef("pässwörd€"))}, // non-ASCII through UTF-16
		{"😀", hex.EncodeToString(ntRef("😀"))},                 // surrogate pair
	}
	for _, tt := range tests {
		got := ntlm.NTHash(tt.pw)
		if hex.EncodeToString(got) != tt.want {
			t.Errorf("NTHash(%q) = %x, want %s", tt.pw, got, tt.want)
		}
	}
}

// ntRef is an independent UTF-16LE encoding for the non-ASCII vectors.
func ntRef(s string) []byte {
	var b []byte
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			hi, lo := 0xD800+(r>>10), 0xDC00+(r&0x3FF)
			b = append(b, byte(hi), byte(hi>>8), byte(lo), byte(lo>>8))
			continue
		}
		b = append(b, byte(r), byte(r>>8))
	}
	return md4Ref(b)
}

func TestValidName(t *testing.T) {
	good := []string{"alice", "A", "first.last", "svc-backup_1", "josé", "first last", strings.Repeat("x", 64)}
	bad := []string{"", strings.Repeat("x", 65), "#alice", "a:b", `a\b`, "a@b", "a/b", "-a", " a", "a ", ".", "..",
		"a\x00", "a\n", "a\x7f", "a\u0085", "a\u200d", "\xff"}
	for _, n := range good {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if ValidName(n) == nil {
			t.Errorf("ValidName(%q) accepted", n)
		}
	}
}

func TestValidPassword(t *testing.T) {
	good := []string{"x", "pass word", "tab\there", "pässwörd", strings.Repeat("p", MaxPasswordBytes), "a:b:c", "\n"}
	bad := []string{"", strings.Repeat("p", MaxPasswordBytes+1), "a\x00b", "\xff"}
	for _, p := range good {
		if err := ValidPassword(p); err != nil {
			t.Errorf("ValidPassword(%q) = %v", p, err)
		}
	}
	for _, p := range bad {
		if ValidPassword(p) == nil {
			t.Errorf("ValidPassword(%q) accepted", p)
		}
	}
}

func FuzzStoreLoad(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := parse(data)
		if err != nil {
			return
		}
		out := format(recs)
		again, err := parse(out)
		if err != nil {
			t.Fatalf("formatted store does not parse: %v", err)
		}
		if !bytes.Equal(format(again), out) {
			t.Fatal("format(parse(format(x))) != format(x)")
		}
		seen := map[string]bool{}
		for _, r := range again {
			if ValidName(r.name) != nil || seen[fold(r.name)] {
				t.Fatalf("bad or duplicate name %q accepted", r.name)
			}
			seen[fold(r.name)] = true
			h := r.hash
			if h.memory > maxMemoryKiB || h.time > maxTime || h.threads > maxThreads || h.memory < 8*uint32(h.threads) {
				t.Fatalf("out-of-bounds parameters accepted: %s", h)
			}
		}
	})
}
