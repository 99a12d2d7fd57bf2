package delegation

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample() (tgt, evidence Credential) {
	now := time.Unix(1_800_000_000, 0)
	svc := Principal{Type: NTPrincipal, Realm: "EX.TEST", Components: []string{"wrmdsvc"}}
	user := Principal{Type: NTPrincipal, Realm: "EX.TEST", Components: []string{"alice"}}
	tgt = Credential{
		Client: svc, Server: Principal{Type: NTSrvInst, Realm: "EX.TEST", Components: []string{"krbtgt", "EX.TEST"}},
		KeyType: 18, Key: bytes.Repeat([]byte{1}, 32), AuthTime: now, StartTime: now, EndTime: now.Add(10 * time.Hour),
		Flags: FlagForwardable, Ticket: []byte("tgt-der"),
	}
	evidence = Credential{
		Client: user, Server: Principal{Type: NTSrvInst, Realm: "EX.TEST", Components: []string{"HTTP", "winrmd.ex.test"}},
		KeyType: 18, Key: bytes.Repeat([]byte{2}, 32), AuthTime: now, EndTime: now.Add(time.Hour),
		Flags: FlagForwardable, Ticket: []byte("evidence-der"),
	}
	return
}

func TestProxyCacheShape(t *testing.T) {
	tgt, ev := sample()
	c, err := ProxyCache(tgt, ev)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Default.Equal(ev.Client) {
		t.Fatalf("default principal %s", back.Default)
	}
	if v, ok := back.Config("proxy_impersonator"); !ok || string(v) != "wrmdsvc@EX.TEST" {
		t.Fatalf("proxy_impersonator = %q %v", v, ok)
	}
	// The evidence is filed under the impersonator's name, unchanged inside.
	got, ok := back.Find(tgt.Client)
	if !ok || string(got.Ticket) != "evidence-der" || !got.Client.Equal(ev.Client) || !bytes.Equal(got.Key, ev.Key) || !got.EndTime.Equal(ev.EndTime) {
		t.Fatalf("evidence entry %+v %v", got, ok)
	}
	if g, ok := back.Find(tgt.Server); !ok || string(g.Ticket) != "tgt-der" || !g.Client.Equal(tgt.Client) {
		t.Fatalf("TGT entry %+v %v", g, ok)
	}
}

func TestProxyCacheRefusals(t *testing.T) {
	tgt, ev := sample()
	nf := ev
	nf.Flags = 0
	notTGT := tgt
	notTGT.Server = ev.Server
	noKey := ev
	noKey.Key = nil
	for name, c := range map[string][2]Credential{
		"not forwardable": {tgt, nf}, "not a TGT": {notTGT, ev}, "no key": {tgt, noKey},
	} {
		if _, err := ProxyCache(c[0], c[1]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	tgt, ev := sample()
	c, _ := ProxyCache(tgt, ev)
	good := c.Encode()
	for i := 0; i < len(good); i++ {
		if _, err := Decode(good[:i]); err == nil && i > 0 && i != len(good) {
			// A prefix that ends exactly between credentials is a valid cache.
			continue
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	huge := append([]byte{5, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}, 0xff, 0xff, 0xff, 0xff)
	if _, err := Decode(huge); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("huge field: %v", err)
	}
	many := append([]byte{5, 4, 0, 0, 0, 0, 0, 1}, 0, 0, 1, 0)
	if _, err := Decode(many); err == nil || !strings.Contains(err.Error(), "components") {
		t.Fatalf("many components: %v", err)
	}
	if _, err := Decode([]byte{5, 3, 0, 0}); err == nil {
		t.Fatal("version 3 accepted")
	}
}

func FuzzDecode(f *testing.F) {
	tgt, ev := sample()
	c, _ := ProxyCache(tgt, ev)
	f.Add(c.Encode())
	f.Add([]byte{5, 4, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		again, err := Decode(c.Encode())
		if err != nil || len(again.Credentials) != len(c.Credentials) || !again.Default.Equal(c.Default) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
