package server

import (
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/session/obs"
)

// Unauthenticated connections cannot hold the connection pool (issue
// 14.4: 300 connections that each got a 401 and then sat idle for the
// keep-alive timeout locked every real client out of both listeners):
//
//   - a connection idle between requests without an identity (it got a 401,
//     or stopped mid-handshake) is closed after Limits.UnauthenticatedIdle
//     instead of Limits.IdleTimeout; real handshake legs follow each other
//     within milliseconds;
//   - when the pool is full, a newcomer takes the slot of the longest-idle
//     such connection, so the slots are in effect reserved for
//     authenticated connections and handshakes in flight;
//   - one source address holds at most
//     Limits.MaxUnauthenticatedPerSource connections that
//     have not authenticated (counted from accept: a connection that sends
//     nothing, or a header a byte at a time, is busy and cannot be evicted,
//     so without the cap one address could hold the whole pool for good by
//     reconnecting every read_header_timeout); its newcomer beyond that
//     takes the slot of its own longest-idle one, or is closed at accept.
//     Authenticated connections are not capped per source (one Ansible
//     controller runs many shells).

// markIdle records whether c is idle between requests.
func (s *Server) markIdle(c net.Conn, idle bool) {
	v, ok := s.conns.Load(c)
	if !ok {
		return
	}
	st := v.(*connState)
	if idle {
		st.idleSince.Store(time.Now().UnixNano())
	} else {
		st.idleSince.Store(0)
	}
}

// idleUnauthenticated reports how long st has been idle without an identity
// (0 when it is busy, authenticated, or its state is locked by a request).
func idleUnauthenticated(st *connState, now int64) time.Duration {
	since := st.idleSince.Load()
	if since == 0 {
		return 0
	}
	if !st.mu.TryLock() {
		return 0 // a request holds it: not idle
	}
	authed := st.identity != nil
	st.mu.Unlock()
	if authed {
		return 0
	}
	return time.Duration(now - since)
}

// evictIdleUnauthenticated closes the longest-idle connection without an
// identity (from source from, when it is valid); it reports whether there
// was one.
func (s *Server) evictIdleUnauthenticated(from netip.Addr) bool {
	now := time.Now().UnixNano()
	var victim net.Conn
	var vst *connState
	var longest time.Duration
	s.conns.Range(func(k, v any) bool {
		st := v.(*connState)
		if from.IsValid() && st.remote != from {
			return true
		}
		if d := idleUnauthenticated(st, now); d > longest {
			victim, vst, longest = k.(net.Conn), st, d
		}
		return true
	})
	if victim == nil {
		return false
	}
	s.refuse("evicted_unauthenticated")
	s.log.Info("connection pool full: closing an idle unauthenticated connection for a new one",
		zap.Uint64(obs.FConnID, vst.id), zap.String(obs.FRemoteAddr, vst.remote.String()), zap.Duration("idle", longest))
	victim.Close()
	return true
}

// admitSource reports whether a new connection from addr may be served
// under its source's cap on unauthenticated connections, evicting the
// source's own longest-idle one to make room when it can. The count runs
// over the open connections (at most max_connections), at accept only.
func (s *Server) admitSource(addr netip.Addr) bool {
	limit := s.lim.Load().MaxUnauthenticatedPerSource
	n := 0
	s.conns.Range(func(_, v any) bool {
		st := v.(*connState)
		if st.remote == addr && !st.authed.Load() {
			n++
		}
		return n < limit
	})
	if n < limit || s.evictIdleUnauthenticated(addr) {
		return true
	}
	s.refuse("unauthenticated_per_source")
	if last := s.lastSourceWarn.Load(); time.Now().UnixNano()-last > int64(10*time.Second) && s.lastSourceWarn.CompareAndSwap(last, time.Now().UnixNano()) {
		s.log.Warn("connection refused: its source holds service.max_unauthenticated_connections_per_source connections that have not authenticated (logged at most every 10 s; winrmd_connections_refused_total counts each)",
			zap.String(obs.FRemoteAddr, addr.String()), zap.Int("limit", limit))
	}
	return false
}

// reapIdleUnauthenticated closes connections idle without an identity for
// longer than Limits.UnauthenticatedIdle, until the server stops.
func (s *Server) reapIdleUnauthenticated() {
	lim := s.lim.Load()
	t := time.NewTicker(lim.ReapEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopReap:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		s.conns.Range(func(k, v any) bool {
			if idleUnauthenticated(v.(*connState), now) > lim.UnauthenticatedIdle {
				k.(net.Conn).Close()
			}
			return true
		})
	}
}
