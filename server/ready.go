package server

import (
	"encoding/json"
	"errors"
	"os"
)

// Ready is the ready-file contract: what `winrmd serve --ready-file PATH`
// writes, as JSON, once every listener is bound and the daemon serves. It
// is written whole (a temporary file renamed into place), so a reader
// polling the path sees either nothing or all of it. Port 0 in the
// configuration becomes the bound port here, which is how the tests, the
// bench (cmd/winrmd-bench) and `winrmd lab` find a daemon on ephemeral
// ports. PID is the daemon's own: a wrapper that starts it must exec it.
type Ready struct {
	PID       int     `json:"pid"`
	Listeners []Bound `json:"listeners"`
	// Metrics is the metrics listener's address, "" when it is off.
	Metrics string `json:"metrics,omitempty"`
}

// Address returns the first listener of transport ("http", "https"), or "".
func (r *Ready) Address(transport string) string {
	for _, l := range r.Listeners {
		if l.Transport == transport {
			return l.Address
		}
	}
	return ""
}

// ReadReady reads a ready file. It fails until the file exists and names
// at least one listener: callers poll it while the daemon starts.
func ReadReady(path string) (*Ready, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Ready
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if len(r.Listeners) == 0 {
		return nil, errors.New("ready file: no listeners yet")
	}
	return &r, nil
}
