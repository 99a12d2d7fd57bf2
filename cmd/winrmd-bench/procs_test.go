package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// procs reads the governor's gauge and counter from a Prometheus text
// page, skipping their HELP and TYPE lines and other series, and says so
// when the gauge is missing (a daemon before the governor).
func TestProcsFromMetrics(t *testing.T) {
	page := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(page))
	}))
	defer srv.Close()
	d := &daemon{metrics: strings.TrimPrefix(srv.URL, "http://")}

	page = "# HELP winrmd_gomaxprocs The daemon's GOMAXPROCS.\n# TYPE winrmd_gomaxprocs gauge\nwinrmd_gomaxprocs 2\n" +
		"winrmd_gomaxprocs_changes_total 7\nwinrmd_shells 3\nwinrmd_requests_total{action=\"x\",outcome=\"ok\"} 9\n"
	procs, changes, err := d.procs()
	if err != nil || procs != 2 || changes != 7 {
		t.Fatalf("procs, changes, err = %d, %d, %v; want 2, 7, nil", procs, changes, err)
	}
	page = "winrmd_gomaxprocs 4\n" // the governor off: no counter
	if procs, changes, err = d.procs(); err != nil || procs != 4 || changes != 0 {
		t.Fatalf("without the counter: %d, %d, %v; want 4, 0, nil", procs, changes, err)
	}
	page = "winrmd_shells 3\n"
	if _, _, err = d.procs(); err == nil {
		t.Fatal("a page without winrmd_gomaxprocs read as a value")
	}
	if _, _, err = (&daemon{}).procs(); err == nil {
		t.Fatal("a daemon without a metrics listener read as a value")
	}
}
