package main

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// wireCounter counts the bytes read from and written to a set of
// connections: the payload a process puts on and takes off its sockets
// (TCP/IP headers are not counted). It also notes when the bytes read
// first reached bulkAt, to tell when a bulk transfer began.
type wireCounter struct {
	read, written atomic.Int64
	bulkAt        int64
	bulkNanos     atomic.Int64 // UnixNano when read first reached bulkAt; 0 before
}

func (c *wireCounter) addRead(n int) {
	if n <= 0 {
		return
	}
	if c.read.Add(int64(n)) >= c.bulkAt && c.bulkAt > 0 && c.bulkNanos.Load() == 0 {
		c.bulkNanos.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// wireConn is a net.Conn whose traffic a wireCounter counts.
type wireConn struct {
	net.Conn
	c *wireCounter
}

func (cc wireConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	cc.c.addRead(n)
	return n, err
}

func (cc wireConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	if n > 0 {
		cc.c.written.Add(int64(n))
	}
	return n, err
}

// wireListener counts the traffic of the connections it accepts. Accept
// blocks until open is called, so that a process can finish starting (and
// measure itself idle) before it serves anyone; connection attempts wait
// in the kernel's backlog meanwhile.
type wireListener struct {
	net.Listener
	c        *wireCounter
	gate     chan struct{}
	openOnce sync.Once
}

func newWireListener(l net.Listener, c *wireCounter) *wireListener {
	return &wireListener{Listener: l, c: c, gate: make(chan struct{})}
}

// open lets Accept return connections.
func (l *wireListener) open() { l.openOnce.Do(func() { close(l.gate) }) }

func (l *wireListener) Accept() (net.Conn, error) {
	<-l.gate
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wireConn{conn, l.c}, nil
}

// Close closes the listener and opens the gate so that a blocked Accept
// returns.
func (l *wireListener) Close() error {
	l.open()
	return l.Listener.Close()
}

// wireDial dials TCP and counts the connection's traffic.
func wireDial(ctx context.Context, c *wireCounter, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return wireConn{conn, c}, nil
}
