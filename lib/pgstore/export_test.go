package pgstore

// ReadEventsQuery returns the SQL ReadEvents runs for one page, for the
// EXPLAIN test.
func ReadEventsQuery(s *Store) string { return s.q.readEvents }

// LoadEventsQuery returns the SQL LoadSnapshotAndEvents runs for the
// events, for the EXPLAIN test.
func LoadEventsQuery(s *Store) string { return s.q.loadEvents }

// MigrationNames returns the embedded migrations' names, in order.
func MigrationNames() []string {
	cfg, err := buildConfig(nil)
	if err != nil {
		panic(err)
	}
	s, err := newStore(nil, cfg)
	if err != nil {
		panic(err)
	}
	names := make([]string, len(s.migrations))
	for i, m := range s.migrations {
		names[i] = m.name
	}
	return names
}
