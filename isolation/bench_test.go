package isolation

import (
	"context"
	"testing"
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
	req := SpawnRequest{}
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
