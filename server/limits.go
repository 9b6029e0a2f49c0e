package server

import (
	"fmt"
	"path"
	"time"
)

// ChannelLimit configures the channels whose names match Pattern
// (path.Match syntax: "room/*" matches "room/math-101"; first match wins).
type ChannelLimit struct {
	Pattern string
	// DroppableRate bounds the droppable messages per second fanned out on
	// a channel (each channel its own bucket); the excess is dropped and
	// counted. Zero: the default 200/s; negative: unlimited.
	DroppableRate float64
	// Notify runs matching channels in notify mode: subscribers get "head
	// is now N" notices, at most one per merge window, and pull the
	// messages, instead of every message pushed (huge rooms).
	Notify bool
}

// defaultDroppableRate is the per-channel droppable limit of channels no
// ChannelLimit matches: enough for lively barrage, not for a flood.
const defaultDroppableRate = 200

type channelLimits []ChannelLimit

func (l channelLimits) validate() error {
	for _, c := range l {
		if _, err := path.Match(c.Pattern, ""); err != nil {
			return fmt.Errorf("server: channel limit pattern %q: %w", c.Pattern, err)
		}
	}
	return nil
}

// forChannel returns the limit that applies to channel.
func (l channelLimits) forChannel(channel string) ChannelLimit {
	for _, c := range l {
		if ok, _ := path.Match(c.Pattern, channel); ok {
			if c.DroppableRate == 0 {
				c.DroppableRate = defaultDroppableRate
			}
			return c
		}
	}
	return ChannelLimit{DroppableRate: defaultDroppableRate}
}

// SessionParams override Welcome's client parameters for the channels of
// one business session (zero fields keep the server's).
type SessionParams struct {
	HoleWait    time.Duration
	MergeWindow time.Duration
	RepairBatch int
}
