package pgstore

// ReadEventsQuery returns the SQL ReadEvents runs for one page, for the
// EXPLAIN test.
func ReadEventsQuery(s *Store) string { return s.q.readEvents }
