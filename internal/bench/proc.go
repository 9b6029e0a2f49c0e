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
	at  time.Time
	cpu time.Duration // user + system time used so far
	rss int64         // bytes
}

func (p *serverProc) sample() (sample, error) {
	pid := p.cmd.Process.Pid
	s := sample{at: time.Now()}
	var err error
	if s.cpu, err = cpuTime(pid); err != nil {
		return s, err
	}
	s.rss, err = rss(pid)
	return s, err
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
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, errors.New("cannot parse /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("cannot parse /proc/PID/stat")
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
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
