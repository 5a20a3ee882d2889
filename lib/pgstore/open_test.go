package pgstore_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/jackc/pgx/v5/pgxpool"
)

const secret = "s3cr3t-Pa55"

func TestOpenUnreachableServer(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://evsnap:" + secret + "@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
		"host=127.0.0.1 port=1 user=evsnap password=" + secret + " dbname=test sslmode=disable connect_timeout=5",
		"host=127.0.0.1 port=1 user=evsnap password='" + secret + "' dbname=test sslmode=disable connect_timeout=5",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		st, err := pgstore.Open(ctx, dsn)
		cancel()
		if err == nil {
			st.Close()
			t.Fatalf("Open(%s) of a closed port succeeded", pgstore.RedactDSN(dsn))
		}
		msg := err.Error()
		t.Logf("error: %v", msg)
		if strings.Contains(msg, secret) {
			t.Errorf("error shows the password: %s", msg)
		}
		if !strings.Contains(msg, "127.0.0.1") || !strings.Contains(msg, "connect to PostgreSQL") {
			t.Errorf("error %q does not say which server it could not reach", msg)
		}
	}
}

func TestOpenMalformedDSN(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://evsnap:" + secret + "@127.0.0.1:notaport/test",
		"postgres://evsnap:" + secret + "@[::1/test",
		"postgres://evsnap:" + secret + "@127.0.0.1/test?sslmode=sometimes",
		"host=127.0.0.1 password='" + secret,
		"host=127.0.0.1 port=abc password=" + secret,
		"mysql://evsnap:" + secret + "@127.0.0.1/test",
		"   ",
	} {
		st, err := pgstore.Open(context.Background(), dsn)
		if err == nil {
			st.Close()
			t.Errorf("Open(%q) succeeded", pgstore.RedactDSN(dsn))
			continue
		}
		msg := err.Error()
		t.Logf("error: %v", msg)
		if strings.Contains(msg, secret) {
			t.Errorf("error shows the password: %s", msg)
		}
		if !errors.Is(err, eventsource.ErrInvalidArgument) || !strings.Contains(msg, "DSN") {
			t.Errorf("error %q: want ErrInvalidArgument naming the DSN", msg)
		}
	}
}

func TestOpenAndClose(t *testing.T) {
	t.Parallel()
	url := testURL(t)
	schema := newSchemaName()
	st, err := pgstore.Open(context.Background(), url, pgstore.WithSchema(schema), pgstore.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	dropSchemaAtCleanup(t, testPool(t), schema)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st.Close() // idempotent
	if _, err := st.StreamVersion(context.Background(), "T", [16]byte{1}); err == nil {
		t.Fatal("a closed store still answers")
	}
	// A bad option fails before any connection is made.
	if _, err := pgstore.Open(context.Background(), url, pgstore.WithSchema("Bad")); !errors.Is(err, eventsource.ErrInvalidOption) {
		t.Fatalf("Open with a bad option: %v", err)
	}
}

func TestNewDoesNotCloseCallerPool(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	st.Close()
	if err := st.Pool().Ping(context.Background()); err != nil {
		t.Fatalf("Close closed a pool the store did not create: %v", err)
	}
}

func TestNewRefusesInvalidNames(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	long := strings.Repeat("a", 45)
	cases := []struct {
		opt  pgstore.Option
		name string
	}{
		{pgstore.WithSchema("Public"), "Public"},
		{pgstore.WithSchema(`x"; DROP TABLE events; --`), `x"; DROP TABLE events; --`},
		{pgstore.WithSchema(""), ""},
		{pgstore.WithSchema("pg_evsnap"), "pg_evsnap"},
		{pgstore.WithSchema("1abc"), "1abc"},
		{pgstore.WithSchema(strings.Repeat("s", 64)), strings.Repeat("s", 64)},
		{pgstore.WithEventsTable("events-2"), "events-2"},
		{pgstore.WithEventsTable(long), long},
		{pgstore.WithStreamsTable("My Streams"), "My Streams"},
		{pgstore.WithSnapshotsTable("snapshots;"), "snapshots;"},
		{pgstore.WithMigrationsTable("ünï"), "ünï"},
		{pgstore.WithSnapshotsTable("events"), "events"},
	}
	for _, c := range cases {
		st, err := pgstore.New(pool, c.opt)
		if err == nil {
			t.Errorf("New accepted %s", c.name)
			continue
		}
		if st != nil || !errors.Is(err, eventsource.ErrInvalidOption) || !strings.Contains(err.Error(), strconv.Quote(c.name)) {
			t.Errorf("New with %s: error %v; want ErrInvalidOption naming it", c.name, err)
		}
	}
	for _, bad := range []pgstore.Option{pgstore.WithReadPageSize(0), pgstore.WithLogger(nil), pgstore.WithTracerProvider(nil), nil} {
		if _, err := pgstore.New(pool, bad); !errors.Is(err, eventsource.ErrInvalidOption) {
			t.Errorf("bad option: error %v, want ErrInvalidOption", err)
		}
	}
	if _, err := pgstore.New(nil); !errors.Is(err, eventsource.ErrInvalidOption) {
		t.Errorf("New(nil): %v", err)
	}
	if _, err := pgstore.New(pool, pgstore.WithSchema("evsnap_prod"), pgstore.WithEventsTable(long[:44])); err != nil {
		t.Errorf("valid names refused: %v", err)
	}
}

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"postgres://u:" + secret + "@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgresql://u@h/db", "postgresql://u@h/db"},
		{"postgres://u@h/db?password=" + secret, "postgres://u@h/db?password=xxxxx"},
		{"host=h user=u password=" + secret + " dbname=db", "host=h user=u password=xxxxx dbname=db"},
		{"host=h password = '" + secret + " with space' dbname=db", "host=h password = xxxxx dbname=db"},
		{"host=h sslpassword=" + secret, "host=h sslpassword=xxxxx"},
		{"postgres://u:" + secret + "@h:port/db", "postgres://u:xxxxx@h:port/db"},
	} {
		got := pgstore.RedactDSN(c.in)
		if got != c.want || strings.Contains(got, secret) {
			t.Errorf("RedactDSN(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
