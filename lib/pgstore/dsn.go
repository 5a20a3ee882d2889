package pgstore

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

const redacted = "xxxxx"

var (
	// kvPasswordRE finds password=... and sslpassword=... in keyword/value
	// connection strings, quoted or not.
	kvPasswordRE = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
	// urlUserinfoRE finds the password of a URL that net/url cannot parse.
	urlUserinfoRE = regexp.MustCompile(`(://[^:/@\s]*:)([^@\s]*)(@)`)
)

// RedactDSN returns dsn with every password it can find replaced by
// "xxxxx": the userinfo password of a URL, and password= and sslpassword=
// parameters in either form. Use it whenever a DSN is logged or shown.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
		if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
			for _, k := range []string{"password", "sslpassword"} {
				if q.Has(k) {
					q.Set(k, redacted)
				}
			}
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	out := kvPasswordRE.ReplaceAllString(dsn, "${1}"+redacted)
	return urlUserinfoRE.ReplaceAllString(out, "${1}"+redacted+"${3}")
}

// dsnSecrets returns the passwords written in dsn, best effort, so error
// texts built from a driver's message can be scrubbed of them.
func dsnSecrets(dsn string) []string {
	var out []string
	add := func(s string) {
		s = strings.Trim(s, "'")
		if s != "" && s != redacted {
			out = append(out, s)
			if u, err := url.QueryUnescape(s); err == nil && u != s {
				out = append(out, u)
			}
		}
	}
	if u, err := url.Parse(dsn); err == nil {
		if p, ok := u.User.Password(); ok {
			add(p)
		}
		for _, k := range []string{"password", "sslpassword"} {
			add(u.Query().Get(k))
		}
	}
	for _, m := range kvPasswordRE.FindAllStringSubmatch(dsn, -1) {
		add(m[2])
	}
	for _, m := range urlUserinfoRE.FindAllStringSubmatch(dsn, -1) {
		add(m[2])
	}
	return out
}

// scrubSecrets masks every password of dsn found in msg.
func scrubSecrets(msg, dsn string) string {
	return scrub(msg, dsnSecrets(dsn))
}

func scrub(msg string, secrets []string) string {
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}

// parseErrorText says why pgconn could not parse dsn, naming the DSN with
// its passwords masked (pgconn's own masking, then ours on top).
func parseErrorText(err error, dsn string) string {
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		return scrubSecrets(pce.Error(), dsn) // "cannot parse `<redacted dsn>`: why"
	}
	return scrubSecrets(fmt.Sprintf("cannot parse `%s`: %v", RedactDSN(dsn), err), dsn)
}

// openError is why Open failed to reach the server. Its text names the
// redacted DSN and never a password, even one a driver message repeats.
type openError struct {
	dsn     string
	secrets []string
	err     error
}

func (e *openError) Error() string {
	return scrub(fmt.Sprintf("pgstore: connect to PostgreSQL at %s: %v", e.dsn, e.err), e.secrets)
}

// Unwrap returns the driver's error (a *pgconn.ConnectError, a context
// error, ...).
func (e *openError) Unwrap() error { return e.err }
