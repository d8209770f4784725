package mysql

import (
	"fmt"

	"github.com/go-mysql-org/go-mysql/replication"
)

// The server writes a table map event before every rows event of a
// statement: in the bench's backlog of single-row UPDATEs, one table map per
// row. go-mysql decodes each in full, optional metadata included (column
// names, charsets, ENUM and SET values, the primary key: an allocation or
// more per column), and the reader then compared everything decoding uses
// with the cached definition. Nearly always nothing has changed.
//
// So go-mysql's goroutine decodes only a table map's fixed part (names,
// types, type metadata: what it needs to find a rows event's table), and the
// reader compares the event's body with the body of the table map its
// cached definition was made from. Only a table map that differs (a new
// table id, an ALTER TABLE) is decoded in full, by a parser of the reader's
// own, and goes through the signature comparison as before.

// skipOptionalMeta is go-mysql's TableMapOptionalMetaDecodeFunc: it leaves
// the optional metadata undecoded (see tableMaps).
func skipOptionalMeta([]byte) error { return nil }

// tableMaps decodes, in the reader's goroutine, the table maps whose
// optional metadata go-mysql's goroutine skipped.
type tableMaps struct {
	// lazy: go-mysql skips the optional metadata (skipOptionalMeta). The
	// decoder's tests hand it fully decoded table maps without raw data.
	lazy   bool
	flavor string
	// fde is the raw format description event of the current binlog file:
	// a parser needs it before any other event.
	fde      []byte
	checksum bool // the events end in a CRC32 checksum
	parser   *replication.BinlogParser
	parsed   int // table maps parser decoded (it keeps every one)
}

// format takes the binlog's format description event, which precedes every
// other event of a binlog file.
func (m *tableMaps) format(ev *replication.BinlogEvent, e *replication.FormatDescriptionEvent) {
	m.fde = ev.RawData
	m.checksum = e.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
	m.parser = nil
}

// body returns the part of a table map event that says what the table is:
// the event without its header (timestamp, position) and checksum.
func (m *tableMaps) body(raw []byte) ([]byte, bool) {
	n := len(raw)
	if m.checksum {
		n -= replication.BinlogChecksumLength
	}
	if m.fde == nil || n < replication.EventHeaderSize {
		return nil, false
	}
	return raw[replication.EventHeaderSize:n], true
}

// decode decodes the table map event raw in full.
func (m *tableMaps) decode(raw []byte) (*replication.TableMapEvent, error) {
	if m.parser == nil || m.parsed >= 1024 {
		// A new parser when the format changed, or when this one holds many
		// table maps (it keeps each table id's last one).
		p := replication.NewBinlogParser()
		p.SetFlavor(m.flavor)
		if _, err := p.Parse(m.fde); err != nil {
			return nil, fmt.Errorf("format description event: %w", err)
		}
		m.parser, m.parsed = p, 0
	}
	m.parsed++
	ev, err := m.parser.Parse(raw)
	if err != nil {
		return nil, err
	}
	tm, ok := ev.Event.(*replication.TableMapEvent)
	if !ok {
		return nil, fmt.Errorf("event %v is not a table map", ev.Header.EventType)
	}
	return tm, nil
}

// tableMap makes the table map event tm the current definition of its
// table id: the cached one when the event's body is the same as the body
// that one was made from, else one made from the event decoded in full.
func (d *decoder) tableMap(ev *replication.BinlogEvent, tm *replication.TableMapEvent) error {
	if !d.maps.lazy {
		_, err := d.def(tm)
		return err
	}
	body, ok := d.maps.body(ev.RawData)
	if !ok {
		return fmt.Errorf("region %s: table map event of table id %d before the binlog's format description", d.cfg.Region, tm.TableID)
	}
	if def, ok := d.tables[tm.TableID]; ok && string(def.raw) == string(body) {
		return nil
	}
	full, err := d.maps.decode(ev.RawData)
	if err != nil {
		return fmt.Errorf("region %s: table map event of table id %d: %w", d.cfg.Region, tm.TableID, err)
	}
	def, err := d.def(full)
	if err != nil {
		return err
	}
	def.raw = append(def.raw[:0:0], body...)
	return nil
}
