package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// Skipped records how far a pipeline's source advanced through transactions
// it skipped (regiond's own, or tables not configured) beyond the position
// stored in the target. Writing that advance into the target would itself be
// a new transaction for the other direction to skip, and so on forever; so it
// is kept locally, and is valid only while the target still stores Base.
type Skipped struct {
	// Base is the position stored in the target when Position was reached.
	Base string `json:"base"`
	// Position is where reading may resume: every transaction between Base
	// and Position was skipped.
	Position string `json:"position"`
}

// FileStore keeps Skipped records in a directory (the config's state_dir),
// one small JSON file per pipeline, replaced atomically.
type FileStore struct{ dir string }

// NewFileStore returns a store in dir, creating it (mode 0700) if needed.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

func (s *FileStore) path(pipeline string) string {
	return filepath.Join(s.dir, "skipped-"+url.PathEscape(pipeline)+".json")
}

// Load returns the pipeline's record; ok is false when there is none.
func (s *FileStore) Load(pipeline string) (rec Skipped, ok bool, err error) {
	ok, err = readJSON(s.path(pipeline), &rec, "")
	return rec, ok, err
}

// readJSON reads the JSON file at path into v; ok is false when there is
// no such file. fix is added to the error of a file that does not decode.
func readJSON(path string, v any, fix string) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w%s", path, err, fix)
	}
	return true, nil
}

// writeJSON replaces the file at path with v as JSON, durably.
func (s *FileStore) writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.replace(path, b)
}

// Save replaces the pipeline's record durably (write, fsync, rename).
func (s *FileStore) Save(pipeline string, rec Skipped) error {
	return s.writeJSON(s.path(pipeline), rec)
}

// Published records how far a pipeline whose target is not a database (the
// Kafka sink) has delivered its source: every transaction up to Position was
// acknowledged by the target. Such a target cannot store the position with
// the data, so state_dir is where the pipeline resumes from.
type Published struct {
	// Position is the text form of the source position.
	Position string `json:"position"`
}

func (s *FileStore) publishedPath(pipeline string) string {
	return filepath.Join(s.dir, "position-"+url.PathEscape(pipeline)+".json")
}

// LoadPublished returns the pipeline's delivered position; ok is false when
// there is none (the pipeline never ran with this state_dir).
func (s *FileStore) LoadPublished(pipeline string) (rec Published, ok bool, err error) {
	ok, err = readJSON(s.publishedPath(pipeline), &rec, " (remove the file to restart the pipeline at the source's current position)")
	return rec, ok, err
}

// SavePublished replaces the pipeline's delivered position durably: when it
// returns nil, a crash cannot bring back an older one.
func (s *FileStore) SavePublished(pipeline string, rec Published) error {
	return s.writeJSON(s.publishedPath(pipeline), rec)
}

// replace writes b to final atomically and durably: a temporary file in the
// same directory, fsync, rename, fsync of the directory.
func (s *FileStore) replace(final string, b []byte) error {
	tmp, err := os.CreateTemp(s.dir, ".tmp-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// KafkaBackfill records how far an interrupted `regiond backfill --to
// kafka` got, so that running it again continues instead of publishing
// every row again.
type KafkaBackfill struct {
	// TxID is the run's source.txid; the runs that continue it keep it.
	TxID string `json:"txid"`
	// Published counts the events published so far: source.pos numbering
	// goes on from it.
	Published int `json:"published"`
	// Tables holds, by table name, the progress of each table begun.
	Tables map[string]TableBackfill `json:"tables"`
}

// TableBackfill is one table's progress in a KafkaBackfill.
type TableBackfill struct {
	// After is the key of the last row whose event the brokers
	// acknowledged, as snapshot.EncodeKey gives it ("": none yet).
	After string `json:"after,omitempty"`
	// Rows counts the table's events published.
	Rows int `json:"rows"`
	// Done is set once every row of the table was published.
	Done bool `json:"done,omitempty"`
}

func (s *FileStore) backfillPath(pipeline string) string {
	return filepath.Join(s.dir, "backfill-"+url.PathEscape(pipeline)+".json")
}

// LoadKafkaBackfill returns the pipeline's unfinished backfill; ok is false
// when there is none.
func (s *FileStore) LoadKafkaBackfill(pipeline string) (rec KafkaBackfill, ok bool, err error) {
	ok, err = readJSON(s.backfillPath(pipeline), &rec, " (run the backfill with --restart, or remove the file, to start it again)")
	return rec, ok, err
}

// SaveKafkaBackfill replaces the pipeline's backfill progress durably.
func (s *FileStore) SaveKafkaBackfill(pipeline string, rec KafkaBackfill) error {
	return s.writeJSON(s.backfillPath(pipeline), rec)
}

// RemoveKafkaBackfill forgets the pipeline's backfill progress.
func (s *FileStore) RemoveKafkaBackfill(pipeline string) error {
	err := os.Remove(s.backfillPath(pipeline))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
