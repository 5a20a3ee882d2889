package pgstore

import "context"

// ReadEventsQuery returns the SQL ReadEvents runs for one page, for the
// EXPLAIN test.
func ReadEventsQuery(s *Store) string { return s.q.readEvents }

// LoadQuery returns the SQL LoadSnapshotAndEvents runs, for the EXPLAIN
// test.
func LoadQuery(s *Store) string { return s.q.loadSnapshotAndEvents }

// ListByIDQuery returns the SQL of one page of a listing in id order, for
// the EXPLAIN test.
func ListByIDQuery(s *Store) string { return s.q.listByID }

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

// MigrateTo applies the embedded migrations up to version only: a schema
// as an earlier release left it.
func MigrateTo(ctx context.Context, s *Store, version int) error {
	return s.migrate(ctx, int64(version))
}

// SplitStatements exposes splitStatements.
var SplitStatements = splitStatements

// ScanQuery returns the SQL of a ScanAggregates page, for the EXPLAIN
// test.
func ScanQuery(s *Store, byID bool, examine int) string { return s.scanSQL(byID, examine) }
