package logattr_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/evsnap/evsnap/internal/logattr"
)

// A duration reaches a JSON log as a number of seconds under a _seconds
// key, not as nanoseconds.
func TestSecondsInJSON(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x",
		logattr.Seconds("retry_in", 432284565*time.Nanosecond),
		logattr.Seconds("lag_seconds", 48*time.Millisecond))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if v, ok := line["retry_in_seconds"].(float64); !ok || v != 0.432285 {
		t.Fatalf("retry_in_seconds = %#v in %s", line["retry_in_seconds"], buf.String())
	}
	if v, ok := line["lag_seconds"].(float64); !ok || v != 0.048 {
		t.Fatalf("lag_seconds = %#v in %s", line["lag_seconds"], buf.String())
	}
	if _, bad := line["retry_in"]; bad {
		t.Fatalf("a duration without the suffix: %s", buf.String())
	}
}
