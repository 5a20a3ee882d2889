package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/pgstore"
	"github.com/evsnap/evsnap/lib/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestDocumentedGrantsSuffice runs the conformance suite as a role that
// holds only the privileges the package documentation lists.
func TestDocumentedGrantsSuffice(t *testing.T) {
	t.Parallel()
	admin := testPool(t)
	ctx := context.Background()
	st := newStoreOn(t, admin)
	role := st.Schema() + "_app"
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Skipf("cannot create a role on the test server (%v); the grants are not checked", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Runs after the schema's drop was registered, so before it: revoke
		// what the role holds, then drop it.
		if _, err := admin.Exec(ctx, "DROP OWNED BY "+role); err != nil {
			t.Errorf("drop owned by %s: %v", role, err)
		}
		if _, err := admin.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	s := pgx.Identifier{st.Schema()}.Sanitize()
	for _, grant := range []string{
		"GRANT USAGE ON SCHEMA " + s + " TO " + role,
		"GRANT SELECT, INSERT ON " + qualified(st, "events") + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE ON " + qualified(st, "streams") + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON " + qualified(st, "snapshots") + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON " + qualified(st, "streams_sweep_marks") + " TO " + role,
		"GRANT SELECT ON " + qualified(st, "evsnap_migrations") + " TO " + role,
	} {
		if _, err := admin.Exec(ctx, grant); err != nil {
			t.Fatalf("%s: %v", grant, err)
		}
	}
	pool := testPoolConfig(t, func(c *pgxpool.Config) { c.ConnConfig.User = role })
	app, err := pgstore.New(pool, pgstore.WithSchema(st.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.CheckMigrated(ctx); err != nil {
		t.Fatalf("CheckMigrated as %s: %v", role, err)
	}
	storetest.Run(t, func(*testing.T) eventsource.Store { return app })
}
