// Package natsurl keeps credentials out of the NATS URLs that logs and
// errors show. It has no dependencies, so library packages can use it
// without pulling in the NATS server that internal/natsconnect embeds.
package natsurl

import (
	"net/url"
	"strings"
)

// Redact returns u with any password or token in its userinfo replaced
// by xxxxx. u may be a comma-separated list of URLs (as --nats-url takes);
// each is redacted. A URL that does not parse but has userinfo (an '@')
// loses everything before the '@', since where the secret ends cannot be
// known.
func Redact(u string) string {
	parts := strings.Split(u, ",")
	for i, part := range parts {
		parts[i] = redactOne(part)
	}
	return strings.Join(parts, ",")
}

func redactOne(u string) string {
	lead := u[:len(u)-len(strings.TrimLeft(u, " "))]
	p, err := url.Parse(strings.TrimSpace(u))
	if err != nil {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			scheme := ""
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				scheme = u[:i+3]
			}
			return scheme + "xxxxx" + u[at:]
		}
		return u
	}
	if p.User == nil {
		return u
	}
	if _, has := p.User.Password(); has {
		p.User = url.UserPassword(p.User.Username(), "xxxxx")
	} else if p.User.Username() != "" {
		p.User = url.User("xxxxx") // a bare userinfo is a token
	}
	return lead + p.String()
}
