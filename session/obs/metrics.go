package obs

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the daemon's Prometheus series. Labels are bounded: action
// names come from a fixed set, never user or shell ids.
type Metrics struct {
	Registry       *prometheus.Registry
	Requests       *prometheus.CounterVec // action, outcome
	AuthAttempts   *prometheus.CounterVec // scheme, result
	Shells         prometheus.Gauge       // live shells
	Workers        prometheus.Gauge       // live worker processes
	Commands       prometheus.Gauge       // running commands
	PSRPPools      prometheus.Gauge       // live PowerShell runspace pools (also in Shells)
	PSRPPipelines  prometheus.Gauge       // PowerShell pipelines not yet terminated (also in Commands)
	PSRPSpares     prometheus.Gauge       // idle warm-spare pwsh processes
	PSRPSparesUsed prometheus.Counter     // pools that took a warm spare instead of a cold start
	Bytes          *prometheus.CounterVec // direction: in|out (HTTP bodies)
	StreamBytes    *prometheus.CounterVec // stream: stdin|stdout|stderr
	ReceiveLatency prometheus.Histogram   // seconds a Receive waited
	Connections    prometheus.Gauge       // open TCP connections
	Refused        *prometheus.CounterVec // reason: filter|max_connections|http
}

// NewMetrics registers every series on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winrmd_requests_total", Help: "WS-Management requests by action and outcome.",
		}, []string{"action", "outcome"}),
		AuthAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winrmd_auth_attempts_total", Help: "Authentication attempts by scheme and result.",
		}, []string{"scheme", "result"}),
		Shells:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_shells", Help: "Live shells."}),
		Workers:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_workers", Help: "Live worker processes."}),
		Commands:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_commands", Help: "Commands not yet released."}),
		PSRPPools: prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_psrp_pools", Help: "Live PowerShell runspace pools."}),
		PSRPPipelines: prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_psrp_pipelines",
			Help: "PowerShell pipelines not yet terminated."}),
		PSRPSpares: prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_psrp_warm_spares", Help: "Idle warm-spare PowerShell processes."}),
		PSRPSparesUsed: prometheus.NewCounter(prometheus.CounterOpts{Name: "winrmd_psrp_warm_spares_used_total",
			Help: "Runspace pools that took a warm spare instead of starting PowerShell."}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winrmd_bytes_total", Help: "HTTP body bytes by direction.",
		}, []string{"direction"}),
		StreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winrmd_stream_bytes_total", Help: "Shell stream bytes by stream.",
		}, []string{"stream"}),
		ReceiveLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "winrmd_receive_wait_seconds", Help: "Time a Receive waited for output.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "winrmd_connections", Help: "Open client connections."}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winrmd_connections_refused_total", Help: "Connections or requests refused before authentication, by reason.",
		}, []string{"reason"}),
	}
	m.Registry.MustRegister(m.Requests, m.AuthAttempts, m.Shells, m.Workers, m.Commands, m.PSRPPools, m.PSRPPipelines, m.PSRPSpares, m.PSRPSparesUsed, m.Bytes,
		m.StreamBytes, m.ReceiveLatency, m.Connections, m.Refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
