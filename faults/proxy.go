package faults

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction is one way of a proxied connection.
type Direction int

const (
	// Up carries bytes from the dialer (the client side) to the target.
	Up Direction = iota
	// Down carries bytes from the target back to the dialer.
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Shape is what a Proxy does to the bytes of one direction.
type Shape struct {
	// Blocked holds the bytes back: connections stay open and silent, as
	// behind a blackholing firewall, and what was held is delivered (in
	// order) once the direction is unblocked.
	Blocked bool
	// Delay holds every chunk of bytes this long, plus a random part of
	// Jitter, keeping their order.
	Delay, Jitter time.Duration
	// BytesPerSec limits the throughput of each connection in this
	// direction. 0: unlimited.
	BytesPerSec int64
}

// chunkSize is the most a pump reads at once.
const chunkSize = 32 << 10

// Proxy is a TCP proxy that injects faults into the connections it
// forwards to one target: blocking, delay with jitter and bandwidth limits
// per direction, connection resets, and refusal of new connections.
//
// A Proxy is safe for concurrent use.
type Proxy struct {
	lis    net.Listener
	target string
	wg     sync.WaitGroup
	bytes  [2]atomic.Int64 // forwarded, by direction
	conns  atomic.Int64    // accepted over the proxy's lifetime

	mu struct {
		sync.Mutex
		shape   [2]Shape
		refuse  bool
		closed  bool
		changed chan struct{} // closed and replaced whenever a shape changes
		open    map[*proxyConn]struct{}
		rng     *rand.Rand
	}
}

// NewProxy listens on listenAddr (host:port, port 0 for any) and forwards
// every connection to target. seed drives the jitter.
func NewProxy(listenAddr, target string, seed uint64) (*Proxy, error) {
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: lis, target: target}
	p.mu.changed = make(chan struct{})
	p.mu.open = make(map[*proxyConn]struct{})
	p.mu.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Bytes returns how many bytes the proxy has delivered in direction d.
func (p *Proxy) Bytes(d Direction) int64 { return p.bytes[d].Load() }

// Accepted returns how many connections the proxy has accepted.
func (p *Proxy) Accepted() int64 { return p.conns.Load() }

// Set shapes direction d of every connection, open and future.
func (p *Proxy) Set(d Direction, s Shape) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.shape[d] = s
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
}

// Shape returns the shape of direction d.
func (p *Proxy) Shape(d Direction) Shape {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.shape[d]
}

// Refuse makes the proxy reset every new connection at once (on) or
// forward it again (off), like a port with nothing behind it.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.refuse = on
}

// Heal removes every fault: both directions unshaped, no refusal.
func (p *Proxy) Heal() {
	p.Set(Up, Shape{})
	p.Set(Down, Shape{})
	p.Refuse(false)
}

// Reset closes every open connection with a TCP reset on both sides; what
// either side sends afterwards fails. New connections are accepted as
// usual (see Refuse).
func (p *Proxy) Reset() int {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.mu.open))
	for c := range p.mu.open {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close(true)
	}
	return len(conns)
}

// Close stops accepting, resets every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.mu.closed = true
	p.mu.Unlock()
	err := p.lis.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.mu.Lock()
		refuse, closed := p.mu.refuse, p.mu.closed
		p.mu.Unlock()
		if refuse || closed {
			resetConn(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards one accepted connection until either side closes it.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: time.Second}
	server, err := d.DialContext(context.Background(), "tcp", p.target)
	if err != nil {
		resetConn(client)
		return
	}
	c := &proxyConn{p: p, client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		c.close(true)
		return
	}
	p.mu.open[c] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { c.pump(Up, client, server) })
	wg.Go(func() { c.pump(Down, server, client) })
	wg.Wait()
	c.close(false)
	p.mu.Lock()
	delete(p.mu.open, c)
	p.mu.Unlock()
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	p              *Proxy
	client, server net.Conn
	once           sync.Once
	done           chan struct{} // closed when the connection is torn down
}

// close tears the connection down, with a reset if rst.
func (c *proxyConn) close(rst bool) {
	c.once.Do(func() {
		close(c.done)
		if rst {
			resetConn(c.client)
			resetConn(c.server)
			return
		}
		c.client.Close()
		c.server.Close()
	})
}

// resetConn closes c so that the peer sees a reset rather than an orderly
// end of stream.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// chunk is bytes read from one side, and when.
type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst in direction d, applying the direction's shape.
// A reader goroutine takes bytes off src as they come; this goroutine
// delivers them when the shape allows.
func (c *proxyConn) pump(d Direction, src, dst net.Conn) {
	ch := make(chan chunk, 16)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, chunkSize)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case ch <- chunk{b[:n], time.Now()}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var last time.Time // delivery times never go back: TCP keeps order
	for ck := range ch {
		b := ck.b
		for len(b) > 0 {
			s, changed := c.p.state(d)
			if s.Blocked {
				select {
				case <-changed:
					continue
				case <-c.done:
					return
				}
			}
			at := ck.at.Add(s.Delay)
			if s.Jitter > 0 {
				at = at.Add(c.p.jitter(s.Jitter))
			}
			at = later(at, last)
			if wait := time.Until(at); wait > 0 {
				if !c.sleep(wait, changed) {
					continue // the shape changed while waiting: look again
				}
			}
			last = at
			n := len(b)
			if s.BytesPerSec > 0 {
				// Deliver at most 1/50 s worth at a time, then pause for it.
				n = min(n, max(int(s.BytesPerSec/50), 512))
			}
			w, err := dst.Write(b[:n])
			c.p.bytes[d].Add(int64(w))
			if err != nil {
				c.close(true)
				return
			}
			b = b[n:]
			if s.BytesPerSec > 0 {
				pause := time.Duration(float64(n) / float64(s.BytesPerSec) * float64(time.Second))
				// The bandwidth limit is the fault: this wait is its schedule.
				if !c.sleep(pause, nil) {
					return
				}
			}
		}
	}
	// src ended: pass the end of stream on, half-closing if possible.
	select {
	case <-c.done:
		return
	default:
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// sleep waits for d, or until changed is closed (false) or the connection
// ends (false).
func (c *proxyConn) sleep(d time.Duration, changed <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
		return false
	case <-c.done:
		return false
	}
}

func (p *Proxy) state(d Direction) (Shape, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.shape[d], p.mu.changed
}

func (p *Proxy) jitter(j time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Duration(p.mu.rng.Int64N(int64(j)))
}

func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
