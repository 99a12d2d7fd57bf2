package session

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/winrmd/winrmd/configs"
	"github.com/winrmd/winrmd/session/obs"

	"github.com/winrmd/winrmd/session/wsman"
)

// enumeration is a pending (non-optimized) Enumerate waiting for Pulls. Its
// items are described when pulled, so a Pull reports the state then.
type enumeration struct {
	owner   string
	items   []func() wsman.Item
	expires time.Time
}

func (m *Manager) get(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Msg.Header
	switch {
	case strings.EqualFold(strings.TrimRight(h.ResourceURI, "/"), wsman.ResourceConfig):
		// Reading the configuration needs administrator rights on Windows;
		// Remote Management Users (winrm-remote-users) get Access Denied.
		if !req.Identity.Administrator() {
			m.cfg.Audit.Event(obs.EvAccessDenied, zap.String(obs.FUser, req.Identity.User()), zap.String(obs.FRemoteAddr, req.RemoteAddr),
				zap.String(obs.FReason, "winrm/config is for administrators"), zap.String(obs.FAction, "Get"))
			return nil, wsman.AccessDenied("")
		}
		return wsman.EncodeGetConfig(h.MessageID, m.configInfo()), nil
	case strings.EqualFold(h.ResourceURI, wsman.ResourceShell), isCmdShell(h.ResourceURI):
		sh, err := m.lookup(req)
		if err != nil {
			return nil, err
		}
		return wsman.EncodeGetShell(h.MessageID, sh.info(true)), nil
	}
	return nil, wsman.DestinationUnreachable(h.ResourceURI)
}

// configInfo is winrm/config with the daemon's values.
func (m *Manager) configInfo() *wsman.ConfigInfo {
	svc := m.service()
	cbt := map[string]string{"none": "None", "relaxed": "Relaxed", "strict": "Strict"}[svc.Auth.CBTHardeningLevel]
	return &wsman.ConfigInfo{
		MaxEnvelopeSizeKB:              m.cfg.MaxEnvelopeSizeKB,
		MaxTimeout:                     m.cfg.Limits.MaxTimeout,
		MaxBatchItems:                  m.cfg.Limits.MaxBatchItems,
		MaxConcurrentOperationsPerUser: m.cfg.Limits.MaxOperationsPerUser,
		EnumerationTimeout:             m.cfg.Limits.EnumerationTimeout,
		MaxConnections:                 svc.MaxConnections,
		AllowUnencrypted:               svc.AllowUnencrypted,
		Auth: wsman.ConfigAuth{Basic: svc.Auth.Basic, Kerberos: svc.Auth.Kerberos, Negotiate: svc.Auth.Negotiate,
			Certificate: svc.Auth.Certificate, CredSSP: svc.Auth.CredSSP, CbtHardeningLevel: cbt},
		IPv4Filter:             svc.IPv4Filter,
		IPv6Filter:             svc.IPv6Filter,
		AllowRemoteShellAccess: m.cfg.Winrs.AllowRemoteShellAccess,
		IdleTimeoutMS:          m.cfg.Limits.IdleTimeout.Milliseconds(),
		MaxConcurrentUsers:     m.cfg.Limits.MaxConcurrentUsers,
		MaxShellRunTimeMS:      m.cfg.Limits.MaxShellRunTime.Milliseconds(),
		MaxProcessesPerShell:   m.cfg.Limits.MaxProcessesPerShell,
		MaxMemoryPerShellMB:    m.cfg.Limits.MaxMemoryPerShellMB,
		MaxShellsPerUser:       m.cfg.Limits.MaxShellsPerUser,
	}
}

// SetService replaces the service settings the config Get reports (SIGHUP
// reloads auth switches, filters and the unencrypted policy).
func (m *Manager) SetService(s configs.Service) { m.svc.Store(&s) }

func (m *Manager) service() configs.Service {
	if s := m.svc.Load(); s != nil {
		return *s
	}
	return m.cfg.Service
}

// items lists what an Enumerate on the request's ResourceURI returns for
// the caller: its own shells, or the commands of one of its shells.
func (m *Manager) items(req *Request, filterShell string) ([]func() wsman.Item, error) {
	h := &req.Msg.Header
	owner := req.Identity.Key()
	switch {
	case strings.EqualFold(h.ResourceURI, wsman.ResourceShell), isCmdShell(h.ResourceURI):
		m.mu.Lock()
		var shells []*Shell
		for _, s := range m.shells {
			if s.owner == owner && (filterShell == "" || s.id == filterShell) {
				shells = append(shells, s)
			}
		}
		m.mu.Unlock()
		out := make([]func() wsman.Item, 0, len(shells))
		for _, s := range shells {
			out = append(out, func() wsman.Item { return wsman.Item{Shell: s.info(true)} })
		}
		return out, nil
	case strings.EqualFold(h.ResourceURI, wsman.ResourceCommand):
		if filterShell == "" {
			return nil, wsman.InvalidSelectors("Enumerating commands needs a ShellId selector filter.")
		}
		m.mu.Lock()
		sh := m.shells[filterShell]
		m.mu.Unlock()
		if sh == nil || sh.owner != owner {
			return nil, wsman.InvalidSelectors("The WS-Management service cannot process the request because the request contained invalid selectors for the resource.")
		}
		var out []func() wsman.Item
		if sh.ps != nil {
			for _, ci := range sh.psPipelines() {
				ci := ci
				out = append(out, func() wsman.Item { return wsman.Item{Command: &ci} })
			}
			return out, nil
		}
		sh.mu.Lock()
		for _, id := range sh.order {
			c := sh.commands[id]
			if c == nil {
				continue
			}
			out = append(out, func() wsman.Item {
				return wsman.Item{Command: &wsman.CommandInfo{CommandID: c.id, Done: c.isDone()}}
			})
		}
		sh.mu.Unlock()
		return out, nil
	}
	return nil, wsman.DestinationUnreachable(h.ResourceURI)
}

func describe(items []func() wsman.Item) []wsman.Item {
	out := make([]wsman.Item, len(items))
	for i, f := range items {
		out[i] = f()
	}
	return out
}

func (m *Manager) enumerate(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Msg.Header
	body, ok := req.Msg.Body.(*wsman.Enumerate)
	if !ok {
		return nil, wsman.SchemaValidation("The Enumerate request must carry an n:Enumerate element.")
	}
	items, err := m.items(req, body.FilterShellID)
	if err != nil {
		return nil, err
	}
	if body.Optimize {
		r := wsman.EnumerateResponse{Optimized: true, Items: describe(items)}
		return r.Encode(h.MessageID), nil
	}
	owner := req.Identity.Key()
	m.mu.Lock()
	n := 0
	for _, e := range m.enums {
		if e.owner == owner {
			n++
		}
	}
	if n >= m.cfg.Limits.MaxEnumerationsPerUser {
		m.mu.Unlock()
		return nil, wsman.QuotaLimit(wsman.CodeQuotaLimit, "Too many open enumerations; Release some first.")
	}
	id := "uuid:" + wsman.NewGUID()
	m.enums[id] = &enumeration{owner: owner, items: items, expires: time.Now().Add(m.cfg.Limits.EnumerationTimeout)}
	m.mu.Unlock()
	r := wsman.EnumerateResponse{Context: id}
	return r.Encode(h.MessageID), nil
}

func (m *Manager) takeEnumeration(req *Request, id string, present bool) (*enumeration, error) {
	if !present {
		return nil, wsman.InvalidEnumerationContext()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.enums[id]
	if e == nil || e.owner != req.Identity.Key() {
		// Another user's context is indistinguishable from an unknown one.
		return nil, wsman.InvalidEnumerationContext()
	}
	return e, nil
}

func (m *Manager) pull(ctx context.Context, req *Request) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.Pull)
	if !ok {
		return nil, wsman.SchemaValidation("The Pull request must carry an n:Pull element.")
	}
	e, err := m.takeEnumeration(req, body.Context, body.HasContext)
	if err != nil {
		return nil, err
	}
	max := m.cfg.Limits.MaxBatchItems
	if v := body.MaxElements; v > 0 && v < max {
		max = v
	}
	id := body.Context
	m.mu.Lock()
	n := len(e.items)
	if n > max {
		n = max
	}
	batch := e.items[:n]
	e.items = e.items[n:]
	last := len(e.items) == 0
	if last {
		delete(m.enums, id)
	} else {
		e.expires = time.Now().Add(m.cfg.Limits.EnumerationTimeout)
	}
	m.mu.Unlock()
	r := wsman.PullResponse{Context: id, Items: describe(batch), End: last}
	return r.Encode(req.Msg.Header.MessageID), nil
}

func (m *Manager) release(ctx context.Context, req *Request) ([]byte, error) {
	body, ok := req.Msg.Body.(*wsman.Release)
	if !ok {
		return nil, wsman.SchemaValidation("The Release request must carry an n:Release element.")
	}
	if _, err := m.takeEnumeration(req, body.Context, body.HasContext); err != nil {
		return nil, err
	}
	m.mu.Lock()
	delete(m.enums, body.Context)
	m.mu.Unlock()
	return wsman.EncodeEmpty(wsman.ActionRelease, req.Msg.Header.MessageID), nil
}
