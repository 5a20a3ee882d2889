package pgurl

import "testing"

func TestWithAppName(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://u@h:5432/db?sslmode=disable":                    "postgres://u@h:5432/db?application_name=x&sslmode=disable",
		"postgresql://u@h/db?application_name=old":                  "postgresql://u@h/db?application_name=x",
		"host=h dbname=db":                                          "host=h dbname=db application_name=x",
		"postgres://u:secret@h/db?sslmode=disable&pool_max_conns=4": "postgres://u:secret@h/db?application_name=x&pool_max_conns=4&sslmode=disable",
	} {
		if got := WithAppName(dsn, "x"); got != want {
			t.Errorf("WithAppName(%q) = %q, want %q", dsn, got, want)
		}
	}
}
