package pgstore

// ReadEventsQuery returns the SQL ReadEvents runs for one page, for the
// EXPLAIN test.
func ReadEventsQuery(s *Store) string { return s.q.readEvents }

// ReadTailsQuery returns the SQL ReadTails runs with limit, for the
// EXPLAIN test.
func ReadTailsQuery(s *Store, limit int) string { return s.q.readTailsSQL(limit) }
