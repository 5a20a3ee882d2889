package natsnotice

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/baggage"
)

// WithTenantBaggage returns ctx carrying baggage tenant=acme, for the
// tests of both packages that check what a baggage propagator writes.
func WithTenantBaggage(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	return baggage.ContextWithBaggage(ctx, bag)
}
