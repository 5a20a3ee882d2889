// Package pgurl edits PostgreSQL connection strings for the project's
// harnesses, which name their connections so that their server
// processes can be told apart in pg_stat_activity.
package pgurl

import (
	"net/url"
	"strings"
)

// WithAppName returns the connection string dsn (a postgres:// or
// postgresql:// URL, or keyword/value pairs) with its application_name
// set to app, replacing any it had.
func WithAppName(dsn, app string) string {
	u, err := url.Parse(dsn)
	if err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(dsn + " application_name=" + app)
}
