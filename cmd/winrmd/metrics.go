package main

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The metrics listener is reachable by every local user (loopback by
// default) and serves no one who must get through, so it is bounded hard:
// at most metricsMaxConns connections are accepted at once (further ones
// wait in the kernel's backlog and hold no daemon descriptor), and each
// lives only as long as a scrape needs (issue 14.5: a local user opening
// connections could otherwise exhaust the daemon's descriptors).
const (
	metricsMaxConns          = 8
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 15 * time.Second
)

// serveMetrics serves /metrics of reg on ln until the returned server is
// closed.
func serveMetrics(ln net.Listener, reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: metricsMaxConns}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    8 << 10,
	}
	go srv.Serve(&cappedListener{Listener: ln, slots: make(chan struct{}, metricsMaxConns)})
	return srv
}

// cappedListener accepts a connection only while fewer than cap(slots) are
// open: Accept waits for a slot before taking one from the kernel.
type cappedListener struct {
	net.Listener
	slots chan struct{}
}

func (l *cappedListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotReleasingConn{Conn: c, release: func() { <-l.slots }}, nil
}

type slotReleasingConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotReleasingConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
