package pac

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/types"
)

// A PAC from the test suite's throwaway Samba AD domain (test/addc, dumped
// by TestADPAC with WINRMD_PAC_DUMP) with the service key it was signed
// with: a random key of a domain that no longer exists.
type sample struct {
	PAC       []byte `json:"pac"`
	KeyType   int32  `json:"keytype"`
	Key       []byte `json:"key"`
	Client    string `json:"client"`
	AuthTime  int64  `json:"authtime"`
	DomainSID string `json:"domain_sid"`
	Groups    int    `json:"group_sids"`
}

func load(t testing.TB, name string) sample {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s sample) key() types.EncryptionKey {
	return types.EncryptionKey{KeyType: s.KeyType, KeyValue: s.Key}
}

func (s sample) verify(raw []byte) (*Info, error) {
	return Verify(raw, s.key(), s.Client, time.Unix(s.AuthTime, 0))
}

func TestVerifySamples(t *testing.T) {
	for _, name := range []string{"adadmin", "adoper", "adbig"} {
		s := load(t, name)
		info, err := s.verify(s.PAC)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(info.GroupSIDs) != s.Groups || info.LogonDomainSID != s.DomainSID || !strings.EqualFold(info.UserName, name) {
			t.Fatalf("%s: %+v", name, info)
		}
		if name == "adadmin" && !slices.Contains(info.GroupSIDs, s.DomainSID+"-512") {
			t.Errorf("adadmin without Domain Admins: %v", info.GroupSIDs)
		}
		p := info.Principal()
		if p.User != info.UserSID || p.Domain != s.DomainSID || len(p.Groups) != len(info.GroupSIDs) {
			t.Errorf("Principal %+v", p)
		}
	}
}

// Every single-bit change outside the two signature values is caught by
// the server signature (or refused as malformed); none is accepted.
func TestVerifyTampered(t *testing.T) {
	s := load(t, "adoper")
	bufs, err := parse(s.PAC)
	if err != nil {
		t.Fatal(err)
	}
	kdcSig := map[int]bool{}
	for _, b := range bufs {
		if b.typ == typeKDCSignature {
			// Changing the KDC signature is not detectable with the service
			// key alone (it is zeroed for the server signature).
			for i := b.off + 4; i < b.off+b.size; i++ {
				kdcSig[i] = true
			}
		}
	}
	for i := range s.PAC {
		if kdcSig[i] {
			continue
		}
		bad := slices.Clone(s.PAC)
		bad[i] ^= 0x10
		if info, err := s.verify(bad); err == nil {
			t.Fatalf("byte %d changed: accepted (%+v)", i, info)
		}
	}
}

func TestVerifyRefusals(t *testing.T) {
	s := load(t, "adoper")
	k := s.key()
	at := time.Unix(s.AuthTime, 0)
	wrong := k
	wrong.KeyValue = slices.Clone(k.KeyValue)
	wrong.KeyValue[0] ^= 1
	if _, err := Verify(s.PAC, wrong, s.Client, at); !errors.Is(err, ErrSignature) {
		t.Errorf("wrong key: %v", err)
	}
	other := k
	other.KeyType = 23 // rc4-hmac: the signature is an AES checksum
	if _, err := Verify(s.PAC, other, s.Client, at); !errors.Is(err, ErrSignature) {
		t.Errorf("key of another enctype: %v", err)
	}
	if _, err := Verify(s.PAC, k, "adadmin@WRMDAD.TEST", at); !errors.Is(err, ErrMismatch) {
		t.Errorf("other client: %v", err)
	}
	if _, err := Verify(s.PAC, k, s.Client, at.Add(time.Second)); !errors.Is(err, ErrMismatch) {
		t.Errorf("other authtime: %v", err)
	}
	// Structural limits.
	for name, raw := range map[string][]byte{
		"empty":      nil,
		"short":      s.PAC[:7],
		"version":    func() []byte { b := slices.Clone(s.PAC); b[4] = 1; return b }(),
		"no buffers": func() []byte { b := slices.Clone(s.PAC); binary.LittleEndian.PutUint32(b, 0); return b }(),
		"many":       func() []byte { b := slices.Clone(s.PAC); binary.LittleEndian.PutUint32(b, MaxBuffers+1); return b }(),
		"offset past": func() []byte {
			b := slices.Clone(s.PAC)
			binary.LittleEndian.PutUint64(b[16:], uint64(len(b))+8)
			return b
		}(),
		"unaligned": func() []byte { b := slices.Clone(s.PAC); b[16]++; return b }(),
		"huge":      make([]byte, MaxPACBytes+1),
	} {
		if _, err := Verify(raw, k, s.Client, at); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A server signature of an unkeyed type is refused before any check.
	b := slices.Clone(s.PAC)
	bufs, _ := parse(b)
	for _, x := range bufs {
		if x.typ == typeServerSignature {
			binary.LittleEndian.PutUint32(b[x.off:], 7) // RSA-MD5, unkeyed
		}
	}
	if _, err := Verify(b, k, s.Client, at); !errors.Is(err, ErrSignature) {
		t.Errorf("unkeyed signature type: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	s := load(f, "adoper")
	f.Add(s.PAC)
	f.Add(s.PAC[:100])
	f.Fuzz(func(t *testing.T, raw []byte) {
		info, err := s.verify(raw)
		if err == nil && (info == nil || info.UserSID == "") {
			t.Fatal("accepted without an identity")
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrMismatch) {
			t.Fatalf("unwrapped error %v", err)
		}
	})
}
