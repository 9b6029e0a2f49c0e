package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverProc is a server child process (see Serve).
type serverProc struct {
	kind string
	cmd  *exec.Cmd
	in   *os.File
	out  *os.File // read deadlines bound every exchange
	r    *bufio.Reader
	addr string
	ca   string

	mu sync.Mutex // one command at a time
}

// controlTimeout bounds the start of a child and each of its answers.
const controlTimeout = 30 * time.Second

func startServer(cfg *Config, kind string) (*serverProc, error) {
	cmd := cfg.ServerCommand(kind)
	cmd.Stderr = cfg.Stderr
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	inR.Close() // the child's ends
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("cannot start the %s server: %w", kind, err)
	}
	p := &serverProc{kind: kind, cmd: cmd, in: inW, out: outR, r: bufio.NewReader(outR)}
	var ready readyLine
	if err := p.read(&ready); err != nil {
		p.close()
		return nil, fmt.Errorf("the %s server did not start: %w", kind, err)
	}
	p.addr, p.ca = ready.Addr, ready.CA
	return p, nil
}

// read reads one JSON line from the child.
func (p *serverProc) read(v any) error {
	p.out.SetReadDeadline(time.Now().Add(controlTimeout))
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// call sends a command and reads its answer.
func (p *serverProc) call(cmd string) (statsLine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var reply statsLine
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return reply, fmt.Errorf("%s server: %w", p.kind, err)
	}
	if err := p.read(&reply); err != nil {
		return reply, fmt.Errorf("%s server: no answer to %q: %w", p.kind, cmd, err)
	}
	if reply.Error != "" {
		return reply, fmt.Errorf("%s server: %s", p.kind, reply.Error)
	}
	return reply, nil
}

// close ends the child (it exits when its stdin ends) and waits for it.
func (p *serverProc) close() error {
	p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(controlTimeout):
		p.cmd.Process.Kill()
		err = fmt.Errorf("%s server: killed after not exiting for %v", p.kind, controlTimeout)
		<-done
	}
	p.out.Close()
	return err
}

// sample is what the parent reads of a child at one moment.
type sample struct {
	at   time.Time
	cpu  time.Duration // the child's user + system time so far
	rss  int64         // the child's, in bytes
	load time.Duration // this process's CPU time (the load clients)
	busy time.Duration // the CPU time of every process on the machine
	udp  int64         // UDP datagrams sent by every process on the machine
}

func (p *serverProc) sample() (sample, error) {
	s, err := sampleSelf()
	if err != nil {
		return s, err
	}
	if s.cpu, err = cpuTime(p.cmd.Process.Pid); err != nil {
		return s, err
	}
	s.rss, err = rss(p.cmd.Process.Pid)
	return s, err
}

// sampleSelf samples this process and the machine (no server child).
func sampleSelf() (sample, error) {
	s := sample{at: time.Now()}
	var err error
	if s.load, err = cpuTime(os.Getpid()); err != nil {
		return s, err
	}
	if s.busy, err = machineBusy(); err != nil {
		return s, err
	}
	s.udp, err = udpSent()
	return s, err
}

// cores are the CPU cores used between two samples (CPU time per second)
// by the server, by the load clients, and by every other process.
type cores struct{ server, load, other float64 }

func coresBetween(s0, s1 sample) cores {
	wall := s1.at.Sub(s0.at).Seconds()
	c := cores{
		server: (s1.cpu - s0.cpu).Seconds() / wall,
		load:   (s1.load - s0.load).Seconds() / wall,
	}
	// Ticks are counted apart, so a quiet machine may come out a little
	// below zero.
	c.other = max(0, (s1.busy-s0.busy).Seconds()/wall-c.server-c.load)
	return c
}

// userHZ is the unit of the times in /proc/PID/stat: 100 per second on
// every Linux that Go supports.
const userHZ = 100

// cpuTime reads a process's user + system CPU time from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read server CPU time (Linux /proc needed): %w", err)
	}
	// The command name, field 2, may hold spaces: count after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("cannot parse /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("cannot parse /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("cannot parse /proc/PID/stat")
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// machineBusy reads the CPU time every process on the machine has used
// (user, nice, system, irq, softirq) from /proc/stat, to tell how much of
// the machine other work took during a measurement.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("cannot parse /proc/stat")
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, errors.New("cannot parse /proc/stat")
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ, nil
}

// udpSent reads how many UDP datagrams the machine (its network namespace)
// has sent, from /proc/net/snmp: over loopback that is every packet both
// ways, what quic-go's per-packet costs scale with.
func udpSent() (int64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		v, ok := strings.CutPrefix(line, "Udp:")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(v)
			continue
		}
		values := strings.Fields(v)
		for i, name := range names {
			if name == "OutDatagrams" && i < len(values) {
				return strconv.ParseInt(values[i], 10, 64)
			}
		}
	}
	return 0, errors.New("no Udp OutDatagrams in /proc/net/snmp")
}

// rss reads a process's resident set size from /proc/PID/status.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read server RSS (Linux /proc needed): %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
