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
var flagLine = regexp.MustCompile(`^  -[a-z0-9-]+( (string|int|float|duration|value))?$`)

func TestHelpTexts(t *testing.T) {
	for name := range commands {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), []string{name, "-h"}, &out, &errOut); code != 0 {
			t.Fatalf("snapshotter %s -h: exit %d", name, code)
		}
		text := out.String() + errOut.String()
		if !strings.Contains(text, "snapshotter "+name) {
			t.Errorf("snapshotter %s -h does not name the command:\n%s", name, text)
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "  -") && !flagLine.MatchString(line) {
				t.Errorf("snapshotter %s -h: flag shown as %q", name, line)
			}
		}
	}
}
