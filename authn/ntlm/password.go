package ntlm

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/winrmd/winrmd/authn"
)

// PasswordRequest turns a plaintext password into the NTLMv2 proof a
// Verifier checks, for backends that verify nothing but NTLM responses
// (winbind's ntlm_auth asking a domain controller): CredSSP hands the
// daemon a password for an account that only the domain can check. The
// response is what a client would send to this host (MS-NLMP 3.3.2): a
// random server and client challenge, now as the timestamp, and the host's
// NetBIOS computer and domain names, which a DC compares with the member's
// secure channel.
func PasswordRequest(user, domain, password, netbiosComputer, netbiosDomain string, now time.Time) (VerifyRequest, error) {
	r := VerifyRequest{User: user, Domain: domain, Workstation: netbiosComputer}
	var clientCh [8]byte
	if _, err := rand.Read(r.ServerChallenge[:]); err != nil {
		return VerifyRequest{}, fmt.Errorf("ntlm: random challenge: %v: %w", err, authn.ErrBackend)
	}
	if _, err := rand.Read(clientCh[:]); err != nil {
		return VerifyRequest{}, fmt.Errorf("ntlm: random challenge: %v: %w", err, authn.ErrBackend)
	}
	var ts [8]byte
	binary.LittleEndian.PutUint64(ts[:], fileTime(now))
	var av []byte
	av = appendAV(av, avNbDomainName, encodeUTF16(netbiosDomain))
	av = appendAV(av, avNbComputerName, encodeUTF16(netbiosComputer))
	av = appendAV(av, avTimestamp, ts[:])
	av = appendAV(av, avEOL, nil)
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = append(temp, ts[:]...)
	temp = append(temp, clientCh[:]...)
	temp = append(temp, 0, 0, 0, 0)
	temp = append(temp, av...)
	temp = append(temp, 0, 0, 0, 0)
	key := NTOWFv2(NTHash(password), user, domain)
	proof := hmacMD5(key, r.ServerChallenge[:], temp)
	clear(key)
	r.NtResponse = append(proof, temp...)
	return r, nil
}
