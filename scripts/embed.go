// Package scripts embeds the project's shell scripts that the regiond binary
// itself runs, so that `regiond demo` works from an installed binary, far
// from a checkout of the repository.
package scripts

import _ "embed"

// TestDB is scripts/testdb.sh, which starts and stops private, throwaway
// MariaDB and PostgreSQL servers (see the script's header).
//
//go:embed testdb.sh
var TestDB []byte
