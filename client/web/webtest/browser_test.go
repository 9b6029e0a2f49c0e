package webtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A page receives 1000 reliable messages over 3 channels on 2 sessions:
// none missing, none twice, each channel in seq order, with the right data.
func TestBrowserReceivesEveryMessageOnce(t *testing.T) {
	e := newEnv(t)
	page := e.harness(t, browser(t))
	eval[map[string]any](t, page, `h.start({user: "alice", subs: [
		{session: "classroom", channel: "room/a"},
		{session: "classroom", channel: "room/b"},
		{session: "notify", channel: "room/c"}]})`)

	counts := map[string]int{"room/a": 0, "room/b": 0, "room/c": 0}
	channels := []string{"room/a", "room/b", "room/c"}
	for i := range 1000 {
		ch := channels[(i*7/3)%3] // uneven interleaving
		counts[ch]++
		e.publish(t, ch, fmt.Sprintf("%s #%d", ch, counts[ch]))
	}
	waitFor(t, page, `(h.got["room/a"]?.length ?? 0) + (h.got["room/b"]?.length ?? 0) + (h.got["room/c"]?.length ?? 0) >= 1000`, 60*time.Second)
	for _, ch := range channels {
		rs := got(t, page, ch)
		requireExactly(t, seqsOf(rs), counts[ch], ch)
		for _, r := range rs {
			require.Equal(t, fmt.Sprintf("%s #%d", ch, r.Seq), r.Text)
		}
	}
	require.Empty(t, eval[[]string](t, page, "h.problems"))
	t.Logf("received %v; stats %v", counts, eval[map[string]any](t, page, "h.client.getStats()"))
}
