package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcdTransport carries one etcd harness node's raft messages over
// loopback TCP, as etcd's rafthttp streams do: one persistent connection
// per directed pair of nodes, each written by its own goroutine from a
// buffered channel that the raft loop never blocks on (a message that does
// not fit is dropped and the peer reported unreachable), and read by a
// goroutine that hands each message to the receiving node's loop.
//
// A frame is a 4-byte big-endian length and a marshaled raftpb.Message.
// Messages are marshaled in the raft loop (the raft package asks for that:
// entries are shared with its log), so the channels carry finished frames.
type etcdTransport struct {
	lis   net.Listener
	peers map[uint64]*etcdPeer
	recvc chan<- *pb.Message
	stopc <-chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // guarded by mu, both directions
	closed bool                  // guarded by mu
}

// etcdPeer is the sending side of one directed pair.
type etcdPeer struct {
	addr string
	ch   chan []byte
}

// etcdPeerBuffer is how many frames wait for a peer's writer before
// messages to it are dropped (rafthttp's streamBufSize).
const etcdPeerBuffer = 4096

// etcdMaxFrame bounds a frame a reader accepts.
const etcdMaxFrame = 256 << 20

// newEtcdTransport serves lis, delivering received messages to recvc, and
// sends to the peers at addrs (by raft ID) until stopc is closed.
func newEtcdTransport(lis net.Listener, addrs map[uint64]string, recvc chan<- *pb.Message, stopc <-chan struct{}) *etcdTransport {
	t := &etcdTransport{lis: lis, peers: map[uint64]*etcdPeer{}, recvc: recvc, stopc: stopc, conns: map[net.Conn]struct{}{}}
	for id, addr := range addrs {
		p := &etcdPeer{addr: addr, ch: make(chan []byte, etcdPeerBuffer)}
		t.peers[id] = p
		t.wg.Go(func() { t.writeLoop(p) })
	}
	t.wg.Go(t.acceptLoop)
	return t
}

// frame marshals m into a frame.
func etcdFrame(m *pb.Message) ([]byte, error) {
	n := proto.Size(m)
	b := make([]byte, 4, 4+n)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

// send queues a frame for peer to; false if it was dropped (unknown peer
// or full buffer).
func (t *etcdTransport) send(to uint64, frame []byte) bool {
	p := t.peers[to]
	if p == nil {
		return false
	}
	select {
	case p.ch <- frame:
		return true
	default:
		return false
	}
}

// track registers c to be closed by close; false if already closed.
func (t *etcdTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *etcdTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// writeLoop sends the frames queued for p on one connection, dialed on
// the first frame and again after a failure (frames are dropped while
// there is none: raft retransmits).
func (t *etcdTransport) writeLoop(p *etcdPeer) {
	var conn net.Conn
	var bw *bufio.Writer
	var retry time.Time
	defer func() {
		if conn != nil {
			t.untrack(conn)
		}
	}()
	for {
		var frame []byte
		select {
		case <-t.stopc:
			return
		case frame = <-p.ch:
		}
		if conn == nil {
			if time.Now().Before(retry) {
				continue
			}
			c, err := net.DialTimeout("tcp", p.addr, time.Second)
			if err != nil {
				retry = time.Now().Add(100 * time.Millisecond)
				continue
			}
			if !t.track(c) {
				c.Close()
				return
			}
			c.(*net.TCPConn).SetNoDelay(true)
			conn, bw = c, bufio.NewWriterSize(c, 64<<10)
		}
		// Write this frame and whatever else is queued, then flush once.
		_, err := bw.Write(frame)
		for more := true; more && err == nil; {
			select {
			case frame = <-p.ch:
				_, err = bw.Write(frame)
			default:
				more = false
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			t.untrack(conn)
			conn, bw = nil, nil
		}
	}
}

func (t *etcdTransport) acceptLoop() {
	for {
		c, err := t.lis.Accept()
		if err != nil {
			return // closed
		}
		if !t.track(c) {
			c.Close()
			return
		}
		t.wg.Go(func() { t.readLoop(c) })
	}
}

// readLoop hands each message read from c to the node's loop.
func (t *etcdTransport) readLoop(c net.Conn) {
	defer t.untrack(c)
	br := bufio.NewReaderSize(c, 64<<10)
	var hdr [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > etcdMaxFrame {
			return
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(buf, m); err != nil { // copies the bytes it keeps
			return
		}
		select {
		case t.recvc <- m:
		case <-t.stopc:
			return
		}
	}
}

// close stops the listener and every connection and waits for the
// transport's goroutines; stopc must be closed already or concurrently.
func (t *etcdTransport) close() error {
	err := t.lis.Close()
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("etcd transport: %w", err)
	}
	return nil
}
