package conflict

// Kind is what a last_writer_wins state holds for a key.
type Kind uint8

const (
	// Absent: no row and no tombstone.
	Absent Kind = iota
	// Row: a row image.
	Row
	// Tombstone: the row was deleted; Hash is the hash of the image the
	// delete removed, Version that image's version.
	Tombstone
)

// State is one key's state under last_writer_wins: the row the target holds
// (or the tombstone of its delete), or the state an incoming change would
// leave.
type State struct {
	Kind    Kind
	Version Version
	Hash    Hash
}

// Less is the strict total order of states under last_writer_wins. A
// change applies exactly when it moves its key up this order, so every
// region ends at the maximum of all the writes it received, whatever their
// order:
//
//  1. a higher version wins;
//  2. at equal versions, the higher canonical hash of the image wins (for a
//     delete, the image it removed);
//  3. at an equal image, the delete wins: a delete removes the very row
//     version it saw.
//
// So an update and a delete made concurrently with the same version are
// ordered like two updates, by their images' hashes (identically in every
// region), and a delete always removes the row it saw. Anything above Absent.
func (s State) Less(o State) bool {
	if s.Kind == Absent || o.Kind == Absent {
		return s.Kind == Absent && o.Kind != Absent
	}
	if c := s.Version.Compare(o.Version); c != 0 {
		return c < 0
	}
	if c := s.Hash.Compare(o.Hash); c != 0 {
		return c < 0
	}
	return s.Kind == Row && o.Kind == Tombstone
}

// Equal reports identical states.
func (s State) Equal(o State) bool {
	if s.Kind == Absent || o.Kind == Absent {
		return s.Kind == o.Kind
	}
	return s.Kind == o.Kind && s.Version.Compare(o.Version) == 0 && s.Hash == o.Hash
}

// LastWriterWins decides an incoming change (the state it would leave) against
// the key's current state in the target: Apply when it is higher in the
// order, Same when identical, Discard otherwise. A delete that applies leaves
// a tombstone, also when the target had no row, so that an older write
// arriving later does not bring the row back.
func LastWriterWins(current, incoming State) Outcome {
	switch {
	case current.Equal(incoming):
		return Same
	case current.Less(incoming):
		return Apply
	}
	return Discard
}

// HomeAllows reports whether a write made in region origin to a row homed in
// home may replicate under home_region. The home is read from the change's
// before image (the after image for inserts): a row can be re-homed only by
// a write made in its current home.
func HomeAllows(home, origin string) bool { return home == origin }

// ApplyRemote decides under apply_remote: the change always applies; it is
// also recorded as a conflict when the target row differs from the change's
// before image (someone else changed it meanwhile), so the operator sees
// possible divergence. current is the hash of the target's row (nil when
// absent), before the hash of the change's before image (nil for inserts).
func ApplyRemote(current, before *Hash) (Outcome, bool) {
	switch {
	case current == nil && before == nil:
		return Apply, false
	case current == nil || before == nil:
		return Apply, true
	}
	return Apply, *current != *before
}
