package isolation

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The package splits by the process that runs the code (package doc): the
// worker's files and the daemon's use each other's declarations not at all;
// what both need lives in the shared files (api.go, proto.go, proctree.go,
// drop.go's checks, fds.go). The type checker says who uses what.
func TestSplitByProcess(t *testing.T) {
	side := map[string]string{
		"worker_main.go": "worker", "worker_loop.go": "worker",
		"spawner.go": "daemon", "handle.go": "daemon", "cgroup.go": "daemon", "orphans.go": "daemon",
		"sidecar.go": "daemon", "ccache.go": "daemon", "pwsh.go": "daemon",
	}
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for n := range side {
		if _, err := os.Stat(n); err != nil {
			t.Errorf("the split names %s, which is gone: update this test and the package doc", n)
		}
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	// Imports are left unresolved (their errors ignored): only the uses of
	// this package's own declarations matter, and those resolve.
	conf := types.Config{Importer: noImports{}, Error: func(error) {}}
	pkg, _ := conf.Check("github.com/winrmd/winrmd/isolation", fset, files, info)
	if len(info.Uses) < 1000 {
		t.Fatalf("the type checker resolved only %d uses", len(info.Uses))
	}
	seen := map[string]bool{}
	for id, obj := range info.Uses {
		if obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		// Package-level declarations and methods and fields of the
		// package's types; a local variable is its own file's.
		if obj.Parent() != pkg.Scope() {
			if _, ok := obj.(*types.Func); !ok {
				if v, ok := obj.(*types.Var); !ok || !v.IsField() {
					continue
				}
			}
		}
		user := filepath.Base(fset.Position(id.Pos()).Filename)
		owner := filepath.Base(fset.Position(obj.Pos()).Filename)
		if su, so := side[user], side[owner]; su != "" && so != "" && su != so {
			seen[user+" ("+su+") uses "+obj.Name()+" of "+owner+" ("+so+")"] = true
		}
	}
	var bad []string
	for s := range seen {
		bad = append(bad, s)
	}
	sort.Strings(bad)
	for _, s := range bad {
		t.Error(s)
	}
}

type noImports struct{}

func (noImports) Import(path string) (*types.Package, error) {
	return nil, errors.New("not loaded: " + path)
}
