package mysql

// SlowDecoding makes r decode every row image with go-mysql and convert,
// the way the fast decoder must match.
func SlowDecoding(r *Reader) { r.slowDecode = true }

// FastRows returns how many row images r's fast decoder decoded.
func FastRows(r *Reader) int64 { return r.fastRows.Load() }
