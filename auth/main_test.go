package auth_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The end-to-end tests close every server and client they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
