package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// flagLine is a flag as flag.PrintDefaults shows it: "  -name" for a
// boolean, else "  -name type". A usage text with a back-quoted word
// makes that word the argument's name, which is wrong for every flag here.
var flagLine = regexp.MustCompile(`^  -[a-z0-9-]+( (string|int|uint|float|duration|value))?$`)

// helpText runs example-app with args and returns stdout+stderr after
// checking the exit code.
func helpText(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("example-app %q: exit %d: %s", args, code, errOut.String())
	}
	return out.String() + errOut.String()
}

func TestHelpTexts(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		text := helpText(t, args...)
		for _, want := range []string{"Usage:", "example-app [demo] [flags]", "example-app load [flags]", "example-app <command> -h"} {
			if !strings.Contains(text, want) {
				t.Errorf("example-app %q lacks %q:\n%s", args, want, text)
			}
		}
		if strings.Contains(text, "Usage of") {
			t.Errorf("example-app %q prints a flag set's name as usage:\n%s", args, text)
		}
	}
	for sub, first := range map[string]string{
		"demo": "Usage: example-app [demo] [flags]\n",
		"load": "Usage: example-app load [flags]\n",
	} {
		text := helpText(t, sub, "-h")
		if !strings.HasPrefix(text, first) {
			t.Errorf("example-app %s -h starts %q, want %q", sub, text[:min(len(text), 40)], first)
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "  -") && !flagLine.MatchString(line) {
				t.Errorf("example-app %s -h: flag shown as %q", sub, line)
			}
		}
		if sub == "load" && !strings.Contains(text, "\n  -no-migrate\n") {
			t.Errorf("example-app load -h: -no-migrate is not shown as a boolean flag:\n%s", text)
		}
	}
}
