package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// secretEnv sets every variable that can hold a secret to a value with a
// unique marker, and returns the markers.
func secretEnv(t *testing.T) []string {
	t.Helper()
	vars := map[string]string{
		"EVSNAP_POSTGRES_URL":  "postgres://evsnap:pgpw-MARK1@127.0.0.1:1/x",
		"EVSNAP_NATS_URL":      "nats://natsuser:urlpw-MARK2@127.0.0.1:1,nats://urltok-MARK3@127.0.0.1:2",
		"EVSNAP_NATS_PASSWORD": "natspw-MARK4",
		"EVSNAP_NATS_TOKEN":    "natstok-MARK5",
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	return []string{"pgpw-MARK1", "urlpw-MARK2", "urltok-MARK3", "natspw-MARK4", "natstok-MARK5"}
}

// No help text and no flag error of any command shows a secret taken from
// the environment; the help of a command that reads the variable says it
// is set.
func TestHelpAndFlagErrorsNeverShowSecrets(t *testing.T) {
	markers := secretEnv(t)
	runs := [][]string{nil, {"-h"}, {"help"}, {"explode"}}
	for name := range commands {
		runs = append(runs, []string{name, "-h"}, []string{name, "--concurency", "4"})
	}
	for _, args := range runs {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), args, &out, &errOut)
		text := out.String() + errOut.String()
		for _, m := range markers {
			if strings.Contains(text, m) {
				t.Errorf("snapshotter %q (exit %d) shows the secret %q:\n%s", args, code, m, text)
			}
		}
		if len(args) == 0 || (args[0] != "run" && args[0] != "migrate") {
			continue
		}
		for _, want := range []string{
			`env EVSNAP_NATS_TOKEN is set; value hidden`,
			`env EVSNAP_NATS_PASSWORD is set; value hidden`,
			`"postgres://evsnap:xxxxx@127.0.0.1:1/x"`,
			`"nats://natsuser:xxxxx@127.0.0.1:1,nats://xxxxx@127.0.0.1:2"`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("snapshotter %q: help lacks %q:\n%s", args, want, text)
			}
		}
	}
}
