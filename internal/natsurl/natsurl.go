// Package natsurl keeps credentials out of the NATS URLs that logs and
// errors show. It has no dependencies, so library packages can use it
// without pulling in the NATS server that internal/natsconn embeds.
package natsurl

import "net/url"

// Redact returns u with any password or token in its userinfo replaced.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	if _, has := p.User.Password(); has {
		p.User = url.UserPassword(p.User.Username(), "xxxxx")
	} else if p.User.Username() != "" {
		p.User = url.User("xxxxx") // a bare userinfo is a token
	}
	return p.String()
}
