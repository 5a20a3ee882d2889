package snapshottercli

import (
	"context"
	"fmt"
	"time"

	"github.com/evsnap/evsnap/internal/exampledomain"
	"github.com/evsnap/evsnap/internal/natsconnect"
	"github.com/evsnap/evsnap/internal/storeopen"
	"github.com/evsnap/evsnap/lib/eventsource"
	"github.com/evsnap/evsnap/lib/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewWorker builds the worker for the example domain on b, consuming
// from js (nil for the admin commands, which consume nothing), with c's
// worker configuration and policies (defaults: threshold 100; Order also
// on its milestones) and the Account release c.AccountSchema names,
// instrumented by tel when it is not nil.
func NewWorker(c Config, b *storeopen.Backend, js jetstream.JetStream, tel *Telemetry) (*snapshotter.Worker, error) {
	cfg := c.Worker
	cfg.Store, cfg.JetStream = b.Store, js
	cfg.Logger = c.Logger
	if tel != nil {
		cfg.MeterProvider = tel.MeterProvider
		cfg.TracerProvider = tel.TracerProvider
	}
	reg := exampledomain.NewRegistry()
	if err := exampledomain.CheckAccountSchema(c.AccountSchema); err != nil {
		return nil, fmt.Errorf("%w: %w", snapshotter.ErrInvalidConfig, err)
	}
	account := snapshotter.For[exampledomain.Account](reg, eventsource.DefaultPolicy())
	if c.AccountSchema == exampledomain.AccountSchemaVersionV2 {
		account = snapshotter.For[exampledomain.AccountV2](reg, eventsource.DefaultPolicy())
	}
	order := snapshotter.For[exampledomain.Order](reg, eventsource.Policy{Threshold: 100, Milestones: exampledomain.OrderMilestones})
	if p, ok := c.Policies[exampledomain.AccountType]; ok {
		account = account.WithPolicy(p)
	}
	if p, ok := c.Policies[exampledomain.OrderType]; ok {
		order = order.WithPolicy(p)
	}
	return snapshotter.New(cfg, account, order)
}

// openBackend opens the configured store.
func openBackend(ctx context.Context, c Config) (*storeopen.Backend, error) {
	o := c.Store
	o.Logger = c.Logger
	b, err := storeopen.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	c.Logger.Debug("store opened", "backend", b.String())
	return b, nil
}

// connectNATS connects within 15s (a server that is down is waited for
// when c.NATS.WaitForServer says so).
func connectNATS(ctx context.Context, c Config) (*nats.Conn, jetstream.JetStream, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	o := c.NATS
	o.Logger = c.Logger
	nc, err := natsconnect.Connect(cctx, o)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
