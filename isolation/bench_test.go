package isolation

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSpawnAndRunTrue spawns one worker (as a test user when root,
// else in lab mode) and runs `true` b.N times: the cost of one command.
func BenchmarkSpawnAndRunTrue(b *testing.B) {
	_, c := benchWorker(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, code := c.run(b, CommandSpec{Argv: []string{"true"}}, nil); code != 0 {
			b.Fatal(code)
		}
	}
}

// BenchmarkOutputToExitGap measures, for commands that write and exit at
// once (`echo x`, `ls /`, `sh -c 'echo x; exit 3'`), how long after their
// last output the exit reaches the daemon: the figure behind the session
// layer's exit grace window (session.exitGrace), which holds a Receive that
// found output so that the exit can ride in the same response. Reported as
// p50, p99 and max microseconds.
func BenchmarkOutputToExitGap(b *testing.B) {
	_, c := benchWorker(b)
	lines := []string{"echo x", "ls /", "echo x; exit 3"}
	var gaps []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec := sh(lines[i%len(lines)])
		spec.ID = nextID()
		c.run(b, spec, nil)
		c.mu.Lock()
		out, ex := c.lastOut[spec.ID], c.exitAt[spec.ID]
		c.mu.Unlock()
		if out.IsZero() || ex.IsZero() {
			b.Fatalf("%q: output at %v, exit at %v", spec.Line, out, ex)
		}
		gaps = append(gaps, ex.Sub(out))
	}
	b.StopTimer()
	slices.Sort(gaps)
	pct := func(p float64) float64 { return float64(gaps[int(p*float64(len(gaps)-1))].Microseconds()) }
	b.ReportMetric(pct(0.5), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
	b.ReportMetric(pct(1), "max-us")
}

// BenchmarkOutputThroughput measures output through the real protocol and
// credit window: 16 MiB from `head -c` per iteration.
func BenchmarkOutputThroughput(b *testing.B) {
	_, c := benchWorker(b)
	const n = 16 << 20
	b.SetBytes(n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _, code := c.run(b, sh("head -c 16777216 /dev/zero"), nil)
		if code != 0 || len(out) != n {
			b.Fatalf("exit %d, %d bytes", code, len(out))
		}
	}
}

// BenchmarkStdinThroughput feeds a command (`cat >/dev/null`) 375000-byte
// Stdin calls, the size of one stdin Send of make bench's rows, through the
// real protocol. cpu-ms/op is the daemon side's, worker-ms/op the worker's
// (not its command's); allocs/op and B/op are the daemon side's.
func BenchmarkStdinThroughput(b *testing.B) {
	h, c := benchWorker(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := nextID()
	if err := c.w.Start(ctx, CommandSpec{ID: id, Line: "cat >/dev/null"}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 375000)
	for i := range data {
		data[i] = byte(i)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	start, wstart := cpuTime(), procCPU(b, h.Pid())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.w.Stdin(ctx, id, data, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportCPU(b, start)
	b.ReportMetric(float64(procCPU(b, h.Pid())-wstart)/float64(time.Millisecond)/float64(b.N), "worker-ms/op")
	if err := c.w.Stdin(ctx, id, nil, true); err != nil {
		b.Fatal(err)
	}
	if code := c.waitExit(b, id, 60*time.Second); code != 0 {
		b.Fatalf("exit %d", code)
	}
	if err := c.w.Release(id); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFrameCodec is the protocol alone: encode and decode 64 KiB
// Output frames.
func BenchmarkFrameCodec(b *testing.B) {
	data := make([]byte, maxOutChunk)
	b.SetBytes(int64(len(data)))
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf, _ = appendFrame(buf[:0], msgOutput{ID: "C1", Stream: Stdout, Data: data})
		if _, err := decodeWorkerToDaemon(buf[4], buf[5:]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchWorker(b *testing.B) (*workerHandle, *collector) {
	opts := SpawnerOptions{}
	// WINRMD_BENCH_NEWPRIVS=1: shells that allow new privileges, the
	// daemon's default (winrs.allow_new_privileges), whose workers keep
	// their bounding set; else the hardened shells, whose workers empty it.
	req := SpawnRequest{AllowNewPrivileges: os.Getenv("WINRMD_BENCH_NEWPRIVS") == "1"}
	if isRoot() {
		req.Account = newTestUser(b).acct
	} else {
		opts.Lab = true
	}
	s := newTestSpawner(b, opts)
	h, c := spawn(b, s, req)
	_ = context.Background()
	return h, c
}

// benchSpawner is a spawner and request for the spawn benchmarks: as a test
// user when root (cgroup "auto" or "off"), else in lab mode.
func benchSpawner(b *testing.B, cgroupRoot string) (*procSpawner, SpawnRequest) {
	// WINRMD_BENCH_WORKER: the shipped worker binary (bin/winrmd-worker)
	// instead of the test binary, whose start costs more (its size, the
	// test framework's packages).
	opts := SpawnerOptions{CgroupRoot: cgroupRoot, Logger: slog.New(slog.DiscardHandler), Exe: os.Getenv("WINRMD_BENCH_WORKER")}
	// WINRMD_BENCH_NEWPRIVS=1: shells that allow new privileges, the
	// daemon's default (winrs.allow_new_privileges), whose workers keep
	// their bounding set; else the hardened shells, whose workers empty it.
	req := SpawnRequest{AllowNewPrivileges: os.Getenv("WINRMD_BENCH_NEWPRIVS") == "1"}
	if isRoot() {
		req.Account = newTestUser(b).acct
	} else {
		opts.Lab = true
	}
	return newTestSpawner(b, opts), req
}

// spawnRunClose is one shell's life: Spawn, run `true`, Close.
func spawnRunClose(b *testing.B, s *procSpawner, req SpawnRequest) {
	req.ShellID = "wrmdtest-" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := s.Spawn(ctx, req)
	if err != nil {
		b.Error(err)
		return
	}
	c := newCollector(w)
	id := nextID()
	if err := w.Start(ctx, CommandSpec{ID: id, Argv: []string{"true"}}); err != nil {
		b.Error(err)
	} else if code := c.waitExit(b, id, 30*time.Second); code != 0 {
		b.Errorf("exit %d", code)
	}
	if err := w.Close(); err != nil {
		b.Error(err)
	}
	c.wait()
}

// cpuTime is the CPU time of this process and its reaped children (the
// workers and, through them, their commands).
func cpuTime() time.Duration {
	var self, kids unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &kids)
	tv := func(t unix.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

// procCPU is the CPU time process pid has used itself (utime + stime of
// /proc/<pid>/stat), at USER_HZ resolution.
func procCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+2:]))
	// Fields after the name start at field 3 (state): utime is 14, stime 15.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stime) * (time.Second / 100)
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkSpawnClose is one shell after another: spawn a worker, run
// `true`, Close. cpu-ms/op counts the daemon side, the worker and `true`.
func BenchmarkSpawnClose(b *testing.B) {
	for _, mode := range []string{"auto", "off"} {
		b.Run("cgroup="+mode, func(b *testing.B) {
			root := ""
			if mode == "off" {
				root = "off"
			}
			s, req := benchSpawner(b, root)
			b.ResetTimer()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				spawnRunClose(b, s, req)
			}
			reportCPU(b, start)
		})
	}
}

// BenchmarkParallelSpawnClose is the same with 4×GOMAXPROCS shells at once,
// the shape of the "200 concurrent" row of BENCH.md.
func BenchmarkParallelSpawnClose(b *testing.B) {
	for _, mode := range []string{"auto", "off"} {
		b.Run("cgroup="+mode, func(b *testing.B) {
			root := ""
			if mode == "off" {
				root = "off"
			}
			s, req := benchSpawner(b, root)
			b.SetParallelism(4)
			b.ResetTimer()
			start := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					spawnRunClose(b, s, req)
				}
			})
			reportCPU(b, start)
		})
	}
}

// BenchmarkShellTree is the cost of finding a shell's processes, the
// choice proctree.go makes once: the walk of the children files below the
// worker against the scan of every process's stat file on the host (the
// fallback without children files or pidfds). The shell holds 10 sleeping
// processes; nothing is killed. The scan's cost grows with the host's
// processes, the walk's only with the shell's.
func BenchmarkShellTree(b *testing.B) {
	s, req := benchSpawner(b, "off")
	h, _ := spawn(b, s, req)
	id := nextID()
	if err := h.Start(context.Background(), CommandSpec{ID: id, Line: "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; wait"}); err != nil {
		b.Fatal(err)
	}
	list := func() int {
		var buf []byte
		n := 0
		var walk func(int)
		walk = func(pid int) {
			for _, k := range taskChildren(pid, &buf) {
				n++
				walk(k)
			}
		}
		walk(h.Pid())
		return n
	}
	if !eventually(5*time.Second, func() bool { return list() >= 11 }) {
		b.Fatalf("the shell's processes did not start: %d", list())
	}
	b.Run("walk", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if n := list(); n < 11 {
				b.Fatalf("walk found %d", n)
			}
		}
	})
	b.Run("scan", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if n := len(descendants(h.Pid())); n < 11 {
				b.Fatalf("scan found %d", n)
			}
		}
		b.ReportMetric(float64(len(allStats())), "host-procs")
	})
}
