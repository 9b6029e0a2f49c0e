package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine of servers and clients ends on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
