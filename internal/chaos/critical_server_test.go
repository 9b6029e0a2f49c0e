package chaos

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	qpserver "github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

// The critical-redundancy benchmark runs its server in a process of its
// own, so that the server's CPU time is not mixed with the 200 clients'.
// quicpushd has no settings for copies off/always, so the process is this
// test binary run again with criticalServerEnv set: TestMain then serves
// instead of testing (serveCritical).
const criticalServerEnv = "QUICPUSH_CHAOS_CRITICAL_SERVER"

// criticalServerSpec is what the parent asks of the server process.
type criticalServerSpec struct {
	Dir    string `json:"dir"`    // for the dev certificates
	Copies bool   `json:"copies"` // redundant copies always on, or none at all
}

// criticalServerReady is the server process's first line on stdout.
type criticalServerReady struct {
	Addr string `json:"addr"`
	CA   string `json:"ca"`
}

// criticalServerStats is the server process's answer to each line on its
// stdin: its counters so far.
type criticalServerStats struct {
	BytesSent uint64        `json:"bytes_sent"` // UDP payload bytes the server wrote, to every client
	CopyBytes uint64        `json:"copy_bytes"` // of the redundant copies (server.Stats)
	CPU       time.Duration `json:"cpu"`        // the process's user + system time (getrusage)
}

// serveCritical is the server process: it serves until its stdin closes,
// and returns the exit status.
func serveCritical(specJSON string) int {
	var spec criticalServerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "critical server:", err)
		return 2
	}
	if err := runCriticalServer(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "critical server:", err)
		return 1
	}
	return 0
}

func runCriticalServer(spec criticalServerSpec, in io.Reader, out io.Writer) error {
	dev, err := certs.EnsureDev(spec.Dir, nil)
	if err != nil {
		return err
	}
	rl, err := certs.Load(dev.Cert, dev.Key)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := qpserver.Config{Store: memstore.New(memstore.Options{}), TLSConfig: &tls.Config{GetCertificate: rl.GetCertificate}, Logger: quiet,
		PublishRate: -1, ChannelLimits: []qpserver.ChannelLimit{{Pattern: "room/*", DroppableRate: -1}}}
	cfg.Critical = qpserver.CriticalConfig{Always: true, BudgetBytes: 64 << 10}
	if !spec.Copies {
		cfg.Critical.BudgetBytes = -1
	}
	srv, err := qpserver.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer udp.Close()
	pc := &countingConn{UDPConn: udp}
	addr, err := srv.Listen(pc)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(criticalServerReady{Addr: addr.String(), CA: dev.CA}); err != nil {
		return err
	}
	for sc := bufio.NewScanner(in); sc.Scan(); {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return err
		}
		st := criticalServerStats{BytesSent: pc.sent.Load(), CopyBytes: srv.Stats().CopyBytes,
			CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
		if err := enc.Encode(st); err != nil {
			return err
		}
	}
	return nil
}

// countingConn counts the bytes the server writes. It embeds the
// *net.UDPConn so that quic-go still finds the OOB-capable connection (batch
// reads, GSO, ECN) and writes through WriteMsgUDP, as it does on a bare one.
type countingConn struct {
	*net.UDPConn
	sent atomic.Uint64
}

func (c *countingConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	n, oobn, err = c.UDPConn.WriteMsgUDP(b, oob, addr)
	c.sent.Add(uint64(n))
	return n, oobn, err
}

func (c *countingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(b, addr)
	c.sent.Add(uint64(n))
	return n, err
}

// criticalServer is the parent's handle on a server process.
type criticalServer struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	ready criticalServerReady
}

func startCriticalServer(t *testing.T, copies bool) *criticalServer {
	t.Helper()
	spec, err := json.Marshal(criticalServerSpec{Dir: t.TempDir(), Copies: copies})
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), criticalServerEnv+"="+string(spec))
	cmd.Stderr = testWriter{t, "critical server"}
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	s := &criticalServer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(s.stop)
	require.True(t, s.out.Scan(), "the server process exited before it listened: %v", s.out.Err())
	require.NoError(t, json.Unmarshal(s.out.Bytes(), &s.ready))
	return s
}

// stats asks the server process for its counters.
func (s *criticalServer) stats(t *testing.T) criticalServerStats {
	t.Helper()
	_, err := io.WriteString(s.in, "stats\n")
	require.NoError(t, err)
	require.True(t, s.out.Scan(), "the server process did not answer: %v", s.out.Err())
	var st criticalServerStats
	require.NoError(t, json.Unmarshal(s.out.Bytes(), &st))
	return st
}

// stop closes the server process's stdin, which ends it, and kills it if
// it has not ended within 10 s.
func (s *criticalServer) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	s.in.Close()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// machineLoad samples how busy the whole machine is, to tell a phase that
// other processes disturbed: the CPU time of every process (/proc/stat)
// and of this one (getrusage; the server process reports its own).
type machineLoad struct {
	at        time.Time
	busy, own time.Duration
}

func sampleLoad(t *testing.T) machineLoad {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	require.NoError(t, err)
	// "cpu  user nice system idle iowait irq softirq steal guest guest_nice",
	// in USER_HZ (100 on Linux); busy is all but idle and iowait (guest
	// time is already in user and nice).
	fields := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	require.GreaterOrEqual(t, len(fields), 9, "/proc/stat: %q", fields)
	var ticks int64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		require.NoError(t, err)
		ticks += n
	}
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return machineLoad{at: time.Now(), busy: time.Duration(ticks) * 10 * time.Millisecond,
		own: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
}

// othersCores is the CPU, in cores, that processes other than this test
// and its server used between from and to (server: the server process's
// CPU over the same span).
func othersCores(from, to machineLoad, server time.Duration) float64 {
	others := (to.busy - from.busy) - (to.own - from.own) - server
	return max(0, others.Seconds()/to.at.Sub(from.at).Seconds())
}

// loadAverage is the machine's 1-minute load average, as /proc/loadavg says.
func loadAverage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	require.NoError(t, err)
	return strings.Fields(string(b))[0]
}
