package storekit

import (
	"fmt"

	"github.com/evsnap/evsnap/lib/eventsource"
)

// ValidateCount checks CountAggregates' argument, as an error matching
// eventsource.ErrInvalidArgument. Stores call it first.
func ValidateCount(typ string) error {
	if typ == "" {
		return fmt.Errorf("%w: count the aggregates of an empty aggregate type", eventsource.ErrInvalidArgument)
	}
	return nil
}

// ValidatePrune checks PruneSnapshots' arguments, as an error matching
// eventsource.ErrInvalidArgument: those of DeleteSnapshotsByType and a
// limit of at least 1. Stores call it first.
func ValidatePrune(typ string, schemaVersionBelow, limit int) error {
	if err := ValidateDeleteByType(typ, schemaVersionBelow); err != nil {
		return err
	}
	if limit < 1 {
		return fmt.Errorf("%w: prune the snapshots of %s in batches of %d aggregates; a batch takes at least 1", eventsource.ErrInvalidArgument, typ, limit)
	}
	return nil
}
