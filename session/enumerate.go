package session

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/beevik/etree"

	"github.com/winrmd/winrmd/server/wsman"
)

// enumeration is a pending (non-optimized) Enumerate waiting for Pulls.
type enumeration struct {
	owner   string
	items   []func(parent *etree.Element)
	expires time.Time
}

const maxEnumerationsPerUser = 64

func (m *Manager) get(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Env.Header
	switch {
	case strings.EqualFold(strings.TrimRight(h.ResourceURI, "/"), wsman.ResourceConfig):
		r := wsman.NewResponse(wsman.ActionGet+"Response", h.MessageID)
		m.describeConfig(r.Body())
		return r.Bytes(), nil
	case strings.EqualFold(h.ResourceURI, wsman.ResourceShell), isCmdShell(h.ResourceURI):
		sh, err := m.lookup(req)
		if err != nil {
			return nil, err
		}
		r := wsman.NewResponse(wsman.ActionGet+"Response", h.MessageID)
		sh.describe(r.Body(), true)
		return r.Bytes(), nil
	}
	return nil, wsman.DestinationUnreachable(h.ResourceURI)
}

// describeConfig renders the part of winrm/config a client may read
// (pypsrp reads MaxEnvelopeSizekb to size its messages).
func (m *Manager) describeConfig(body *etree.Element) {
	c := body.CreateElement("cfg:Config")
	c.CreateAttr("xmlns:cfg", wsman.NsConfig)
	addText(c, "cfg:MaxEnvelopeSizekb", strconv.Itoa(m.cfg.MaxEnvelopeSizeKB))
	addText(c, "cfg:MaxTimeoutms", strconv.FormatInt(int64(m.cfg.MaxTimeout/time.Millisecond), 10))
	addText(c, "cfg:MaxBatchItems", "32000")
	s := c.CreateElement("cfg:Service")
	addText(s, "cfg:MaxConcurrentOperationsPerUser", strconv.Itoa(m.cfg.MaxOperationsPerUser))
	addText(s, "cfg:EnumerationTimeoutms", strconv.FormatInt(int64(m.cfg.EnumerationTimeout/time.Millisecond), 10))
	w := c.CreateElement("cfg:Winrs")
	addText(w, "cfg:AllowRemoteShellAccess", strconv.FormatBool(m.cfg.Winrs.AllowRemoteShellAccess))
	addText(w, "cfg:IdleTimeout", strconv.FormatInt(m.cfg.Winrs.IdleTimeoutMS, 10))
	addText(w, "cfg:MaxConcurrentUsers", strconv.Itoa(m.cfg.Winrs.MaxConcurrentUsers))
	addText(w, "cfg:MaxShellRunTime", strconv.FormatInt(m.cfg.Winrs.MaxShellRunTimeMS, 10))
	addText(w, "cfg:MaxProcessesPerShell", strconv.Itoa(m.cfg.Winrs.MaxProcessesPerShell))
	addText(w, "cfg:MaxMemoryPerShellMB", strconv.Itoa(m.cfg.Winrs.MaxMemoryPerShellMB))
	addText(w, "cfg:MaxShellsPerUser", strconv.Itoa(m.cfg.Winrs.MaxShellsPerUser))
}

// items lists what an Enumerate on the request's ResourceURI returns for
// the caller: its own shells, or the commands of one of its shells.
func (m *Manager) items(req *Request) ([]func(*etree.Element), error) {
	h := &req.Env.Header
	body := req.Env.Body
	var filterShell string
	if f := wsman.Child(body, wsman.NsWsman, "Filter"); f != nil {
		if ss := wsman.Child(f, wsman.NsWsman, "SelectorSet"); ss != nil {
			for _, s := range wsman.Children(ss, wsman.NsWsman, "Selector") {
				if strings.EqualFold(wsman.Attr(s, "Name"), "ShellId") {
					filterShell = strings.ToUpper(strings.TrimSpace(s.Text()))
				}
			}
		}
	}
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
		out := make([]func(*etree.Element), 0, len(shells))
		for _, s := range shells {
			s := s
			out = append(out, func(p *etree.Element) { s.describe(p, true) })
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
		sh.mu.Lock()
		var out []func(*etree.Element)
		for _, id := range sh.order {
			c := sh.commands[id]
			if c == nil {
				continue
			}
			out = append(out, func(p *etree.Element) {
				e := p.CreateElement("rsp:Command")
				addText(e, "rsp:CommandId", c.id)
				addText(e, "rsp:CommandLine", "")
				state := "Running"
				if c.isDone() {
					state = "Done"
				}
				addText(e, "rsp:CommandState", state)
			})
		}
		sh.mu.Unlock()
		return out, nil
	}
	return nil, wsman.DestinationUnreachable(h.ResourceURI)
}

func (m *Manager) enumerate(ctx context.Context, req *Request) ([]byte, error) {
	h := &req.Env.Header
	body := req.Env.Body
	if !isElem(body, wsman.NsEnumeration, "Enumerate") {
		return nil, wsman.SchemaValidation("The Enumerate request must carry an n:Enumerate element.")
	}
	items, err := m.items(req)
	if err != nil {
		return nil, err
	}
	r := wsman.NewResponse(wsman.ActionEnumerate+"Response", h.MessageID)
	er := r.Body().CreateElement("n:EnumerateResponse")
	er.CreateAttr("xmlns:n", wsman.NsEnumeration)
	if wsman.Child(body, wsman.NsWsman, "OptimizeEnumeration") != nil {
		er.CreateElement("n:EnumerationContext")
		it := er.CreateElement("w:Items")
		for _, f := range items {
			f(it)
		}
		er.CreateElement("w:EndOfSequence")
		return r.Bytes(), nil
	}
	owner := req.Identity.Key()
	m.mu.Lock()
	n := 0
	for _, e := range m.enums {
		if e.owner == owner {
			n++
		}
	}
	if n >= maxEnumerationsPerUser {
		m.mu.Unlock()
		return nil, wsman.QuotaLimit(wsman.CodeQuotaLimit, "Too many open enumerations; Release some first.")
	}
	id := "uuid:" + wsman.NewGUID()
	m.enums[id] = &enumeration{owner: owner, items: items, expires: time.Now().Add(m.cfg.EnumerationTimeout)}
	m.mu.Unlock()
	addText(er, "n:EnumerationContext", id)
	return r.Bytes(), nil
}

func (m *Manager) takeEnumeration(req *Request, el *etree.Element) (*enumeration, string, error) {
	ctxEl := wsman.Child(el, wsman.NsEnumeration, "EnumerationContext")
	if ctxEl == nil {
		return nil, "", wsman.InvalidEnumerationContext()
	}
	id := strings.TrimSpace(ctxEl.Text())
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.enums[id]
	if e == nil || e.owner != req.Identity.Key() {
		// Another user's context is indistinguishable from an unknown one.
		return nil, "", wsman.InvalidEnumerationContext()
	}
	return e, id, nil
}

func (m *Manager) pull(ctx context.Context, req *Request) ([]byte, error) {
	body := req.Env.Body
	if !isElem(body, wsman.NsEnumeration, "Pull") {
		return nil, wsman.SchemaValidation("The Pull request must carry an n:Pull element.")
	}
	e, id, err := m.takeEnumeration(req, body)
	if err != nil {
		return nil, err
	}
	max := 32000
	if me := wsman.Child(body, wsman.NsEnumeration, "MaxElements"); me != nil {
		if v, err := strconv.Atoi(strings.TrimSpace(me.Text())); err == nil && v > 0 && v < max {
			max = v
		}
	}
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
		e.expires = time.Now().Add(m.cfg.EnumerationTimeout)
	}
	m.mu.Unlock()
	r := wsman.NewResponse(wsman.ActionPull+"Response", req.Env.Header.MessageID)
	pr := r.Body().CreateElement("n:PullResponse")
	pr.CreateAttr("xmlns:n", wsman.NsEnumeration)
	if !last {
		addText(pr, "n:EnumerationContext", id)
	}
	it := pr.CreateElement("n:Items")
	for _, f := range batch {
		f(it)
	}
	if last {
		pr.CreateElement("n:EndOfSequence")
	}
	return r.Bytes(), nil
}

func (m *Manager) release(ctx context.Context, req *Request) ([]byte, error) {
	body := req.Env.Body
	if !isElem(body, wsman.NsEnumeration, "Release") {
		return nil, wsman.SchemaValidation("The Release request must carry an n:Release element.")
	}
	_, id, err := m.takeEnumeration(req, body)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	delete(m.enums, id)
	m.mu.Unlock()
	r := wsman.NewResponse(wsman.ActionRelease+"Response", req.Env.Header.MessageID)
	return r.Bytes(), nil
}
