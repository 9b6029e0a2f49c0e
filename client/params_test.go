package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// The client takes the server's parameters within its own safe limits, and
// keeps its defaults for what the server does not say.
func TestServerParamsAreClamped(t *testing.T) {
	d := defaultParams()
	require.Equal(t, d, paramsFrom(&pb.Welcome{}))

	p := paramsFrom(&pb.Welcome{HeartbeatMs: 1, HoleWaitMs: 3_600_000, MergeWindowMs: 10, AckDelayMs: 100, RepairBatch: 1 << 30})
	require.Equal(t, heartbeatLimits[0], p.heartbeat, "a heartbeat below 1 s would drain batteries")
	require.Equal(t, holeWaitLimits[1], p.holeWait)
	require.Equal(t, 10*time.Millisecond, p.mergeWindow)
	require.Equal(t, 100*time.Millisecond, p.ackDelay)
	require.Equal(t, repairBatchLimits[1], p.repairBatch)

	s := p.override(&pb.SessionOpened{HoleWaitMs: 7, RepairBatch: 2})
	require.Equal(t, 7*time.Millisecond, s.holeWait)
	require.Equal(t, repairBatchLimits[0], s.repairBatch)
	require.Equal(t, p.mergeWindow, s.mergeWindow, "what the session does not set stays")
}
