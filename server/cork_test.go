package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// countingConn counts the writes that reach the socket below it.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A corked connection under TLS hands a 512 KB body to the socket in a
// few writes (33 records uncorked), byte for byte, and writes at once
// again after uncork.
func TestSlotConnCork(t *testing.T) {
	dir := t.TempDir()
	certF, keyF := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeTestCert(t, certF, keyF)
	cert, err := tls.LoadX509KeyPair(certF, keyF)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	body := make([]byte, 512000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	type result struct {
		got []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			read <- result{err: err}
			return
		}
		defer c.Close()
		got := make([]byte, 2*len(body)+5)
		_, err = io.ReadFull(c, got)
		read <- result{got, err}
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	sc := &slotConn{Conn: cc, release: func() {}}
	tc := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}

	before := cc.writes.Load()
	if _, err := tc.Write(body); err != nil {
		t.Fatal(err)
	}
	uncorked := cc.writes.Load() - before

	sc.cork()
	before = cc.writes.Load()
	if _, err := tc.Write(body); err != nil {
		t.Fatal(err)
	}
	inCork := cc.writes.Load() - before
	if err := sc.uncork(); err != nil {
		t.Fatal(err)
	}
	corked := cc.writes.Load() - before
	if _, err := tc.Write([]byte("tail!")); err != nil {
		t.Fatal(err)
	}
	if cc.writes.Load()-before != corked+1 {
		t.Errorf("a write after uncork did not go out at once")
	}

	r := <-read
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := append(append(bytes.Clone(body), body...), "tail!"...)
	if !bytes.Equal(r.got, want) {
		t.Fatal("the client read other bytes than were written")
	}
	// 512000 bytes: 32 records of 16 KiB; corked, their 512 KB of TLS
	// records go out in 256 KiB writes, the last at uncork.
	if uncorked < 32 || corked > 3 || inCork >= corked {
		t.Errorf("writes to the socket: %d uncorked, %d corked (%d before uncork), want ≥ 32 and ≤ 3", uncorked, corked, inCork)
	}
	t.Logf("a 512000-byte TLS write: %d socket writes uncorked, %d corked", uncorked, corked)
}
