// Package isolationtest holds what the tests of several packages need to
// drive a shell's worker; it is for tests only, never linked into winrmd.
package isolationtest

// ProcessFiller is a command line that takes every process slot its
// shell's kernel limit (pids.max) leaves, retrying a refused fork every
// 5 ms, until it is terminated (its children are in its process group).
//
// It fills by retrying rather than by an exact count because the limit
// follows the worker's threads, recounted before each Start: a thread the
// worker's runtime makes meanwhile takes a slot until the next Start gives
// it back, so a filler that forked an exact number could leave one free or
// be refused one (isolation.pidsLimit). The shell execs python3 rather
// than forking it: forked, the filler's own start is a fork the limit can
// refuse when the worker has made a thread since the Start's recount, and
// a filler that died there let every later probe through (a CI run of
// TestProcessLimitCountsOnlyCommands, about one run in seven here). It
// needs python3 on the shell's PATH, which `make test` installs
// (python3-venv).
const ProcessFiller = `exec python3 -c 'import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
    except OSError:
        time.sleep(0.005)'`
