package faults

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer accepts connections and echoes what they send.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func newTestProxy(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p, err := NewProxy("127.0.0.1:0", echoServer(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

// roundTrip sends msg and reads it back within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func TestProxyForwards(t *testing.T) {
	p, c := newTestProxy(t)
	if err := roundTrip(c, []byte("hello"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The proxy counts a chunk after its write returns, so the echo can
	// reach the client before the down counter moves: wait for the count.
	deadline := time.Now().Add(5 * time.Second)
	for p.Bytes(Up) != 5 || p.Bytes(Down) != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("bytes up %d down %d, want 5 and 5", p.Bytes(Up), p.Bytes(Down))
		}
		time.Sleep(time.Millisecond) // poll interval, not synchronisation
	}
}

// A blocked direction holds bytes and keeps the connection open; they
// arrive once it is unblocked.
func TestProxyBlockHoldsBytes(t *testing.T) {
	for _, d := range []Direction{Up, Down} {
		t.Run(d.String(), func(t *testing.T) {
			p, c := newTestProxy(t)
			p.Set(d, Shape{Blocked: true})
			err := roundTrip(c, []byte("held"), 300*time.Millisecond)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("through a blocked %v direction: %v, want a timeout", d, err)
			}
			p.Set(d, Shape{})
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
				t.Fatalf("after unblocking: %q, %v; want the held bytes", got, err)
			}
		})
	}
}

func TestProxyReset(t *testing.T) {
	p, c := newTestProxy(t)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n != 1 {
		t.Errorf("Reset closed %d connections, want 1", n)
	}
	if err := roundTrip(c, []byte("y"), 5*time.Second); err == nil {
		t.Fatal("a reset connection still echoes")
	}
	p.Refuse(true)
	// A refused connection is accepted and reset at once: the dial itself
	// may already see the reset, or the first round trip does.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c2.Close()
		if err := roundTrip(c2, []byte("z"), 5*time.Second); err == nil {
			t.Fatal("a refused connection echoes")
		}
	}
	p.Refuse(false)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := roundTrip(c3, []byte("w"), 5*time.Second); err != nil {
		t.Fatalf("after Refuse(false): %v", err)
	}
}

func TestProxyDelayAndBandwidth(t *testing.T) {
	p, c := newTestProxy(t)
	p.Set(Up, Shape{Delay: 100 * time.Millisecond, Jitter: 50 * time.Millisecond})
	start := time.Now()
	if err := roundTrip(c, []byte("slow"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("a round trip with 100ms of delay took %v", took)
	}
	p.Set(Up, Shape{})
	p.Set(Down, Shape{BytesPerSec: 256 << 10})
	start = time.Now()
	if err := roundTrip(c, make([]byte, 64<<10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 64 KiB at 256 KiB/s: a quarter of a second.
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("64 KiB at 256 KiB/s took %v", took)
	}
}
