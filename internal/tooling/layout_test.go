// Package tooling_test checks the layout's one rule: internal/tooling
// holds the benchmark harness, the chaos suite, test servers and deploy
// test helpers, and no product package (lib/, cmd/, the rest of
// internal/) imports any of it outside its tests.
package tooling_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/evsnap/evsnap"

func TestNoProductPackageImportsTooling(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "internal/tooling" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "data" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == module+"/internal/tooling" || strings.HasPrefix(path, module+"/internal/tooling/") {
				t.Errorf("%s imports %s: product code must not depend on tooling", rel, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked %d product files; the walk missed the tree", checked)
	}
}
