package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// No help text and no flag error of either command shows a secret taken
// from the environment; help says the variable is set. (The NATS password
// and token are read from the environment only, never shown by help; they
// are set here so that a flag that starts showing them is caught.)
func TestHelpAndFlagErrorsNeverShowSecrets(t *testing.T) {
	vars := map[string]string{
		"EVSNAP_POSTGRES_URL":  "postgres://evsnap:pgpw-MARK1@127.0.0.1:1/x",
		"EVSNAP_NATS_URL":      "nats://natsuser:urlpw-MARK2@127.0.0.1:1,nats://urltok-MARK3@127.0.0.1:2",
		"EVSNAP_NATS_PASSWORD": "natspw-MARK4",
		"EVSNAP_NATS_TOKEN":    "natstok-MARK5",
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	markers := []string{"pgpw-MARK1", "urlpw-MARK2", "urltok-MARK3", "natspw-MARK4", "natstok-MARK5"}
	runs := [][]string{{"-h"}, {"help"}, {"explode"}, {"--concurency", "4"}}
	for _, sub := range subcommands {
		runs = append(runs, []string{sub, "-h"}, []string{sub, "--concurency", "4"})
	}
	for _, args := range runs {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), args, &out, &errOut)
		text := out.String() + errOut.String()
		for _, m := range markers {
			if strings.Contains(text, m) {
				t.Errorf("example-app %q (exit %d) shows the secret %q:\n%s", args, code, m, text)
			}
		}
		if args[0] != "demo" && args[0] != "load" {
			continue
		}
		for _, want := range []string{
			`env EVSNAP_POSTGRES_URL is set`,
			`"postgres://evsnap:xxxxx@127.0.0.1:1/x"`,
			`"nats://natsuser:xxxxx@127.0.0.1:1,nats://xxxxx@127.0.0.1:2"`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("example-app %q: help lacks %q:\n%s", args, want, text)
			}
		}
	}
}
