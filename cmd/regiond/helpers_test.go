package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildRegiond builds the regiond binary into a new directory of
// t.TempDir() and returns its path. The directory goes when t ends, so build
// once per top-level test and share the path with its subtests.
func buildRegiond(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "regiond")
	// go test runs in the package directory and puts its own go first in
	// PATH.
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s .: %v\n%s", bin, err, out)
	}
	return bin
}

// runRegiond runs the regiond binary bin with args, as a user would, and
// returns its stdout, stderr and exit code. It fails the test if the
// command cannot start or runs longer than timeout (then it is killed).
func runRegiond(t *testing.T, bin string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("regiond %v did not finish within %v\nstdout:\n%s\nstderr:\n%s", args, timeout, outBuf.String(), errBuf.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running regiond %v: %v", args, err)
	}
	return outBuf.String(), errBuf.String(), code
}
