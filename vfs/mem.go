package vfs

import (
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MemFS is an in-memory FS that models what survives a crash. It is safe
// for concurrent use.
//
// A file's contents become durable when the file is synced. A directory
// entry (created by Create, MkdirAll, Rename or Link, or removed by Remove,
// RemoveAll or Rename) becomes durable when the parent directory, opened
// with OpenDir, is synced. Crash reverts the filesystem to its durable
// state: unsynced writes and unsynced directory changes are lost, and files
// that were open become invalid (their methods return ErrCrashed). The
// MemFS then behaves as the disk after a reboot.
//
// A file that is synced before its directory entry is durable disappears
// in a crash; a directory entry made durable before the file's contents
// leaves the file as it was at its last sync (empty if never synced).
// The root directory always exists.
type MemFS struct {
	mu struct {
		sync.Mutex
		root *memNode
		// gen counts crashes; a handle opened in an earlier generation
		// is invalid.
		gen uint64
	}
}

var _ FS = (*MemFS)(nil)

// NewMem returns an empty MemFS holding only the root directory "/".
// Relative paths are taken relative to the root.
func NewMem() *MemFS {
	m := &MemFS{}
	m.mu.root = newDirNode(0o755)
	return m
}

// memNode is a file or a directory. Guarded by MemFS.mu.
type memNode struct {
	isDir   bool
	mode    os.FileMode
	modTime time.Time

	// Files. synced is the durable contents. data is the current
	// contents; while shared is true, data[:len(synced)] and synced use
	// the same backing array, so data must be copied before those bytes
	// change (copy on write keeps Sync and Crash O(1)).
	data   []byte
	synced []byte
	shared bool

	// Directories: current and durable entries.
	children       map[string]*memNode
	syncedChildren map[string]*memNode
}

func newDirNode(perm os.FileMode) *memNode {
	return &memNode{
		isDir:          true,
		mode:           os.ModeDir | perm.Perm(),
		modTime:        time.Now(),
		children:       map[string]*memNode{},
		syncedChildren: map[string]*memNode{},
	}
}

func newFileNode() *memNode {
	return &memNode{mode: 0o644, modTime: time.Now()}
}

// prepareWrite makes the bytes [lo, end) of n.data writable and n.data at
// least end bytes long, zero-filling any gap between the old length and lo.
func (n *memNode) prepareWrite(lo, end int64) {
	oldLen := int64(len(n.data))
	touched := lo
	if oldLen < touched {
		touched = oldLen // the gap is zero-filled too
	}
	if n.shared && touched < int64(len(n.synced)) && touched < end {
		c := max(int64(cap(n.data)), end)
		d := make([]byte, oldLen, c)
		copy(d, n.data)
		n.data = d
		n.shared = false
	}
	if end <= oldLen {
		return
	}
	if end <= int64(cap(n.data)) {
		n.data = n.data[:end]
		clear(n.data[oldLen:end])
		return
	}
	d := make([]byte, end, max(end, 2*int64(cap(n.data))))
	copy(d, n.data)
	n.data = d
	// A fresh array never shares with synced.
	n.shared = false
}

func (n *memNode) sync() {
	if n.isDir {
		n.syncedChildren = maps.Clone(n.children)
		return
	}
	n.synced = n.data[:len(n.data):len(n.data)]
	n.shared = true
}

// revert restores n and everything durably below it to the durable state.
func (n *memNode) revert() {
	if !n.isDir {
		n.data = n.synced
		n.shared = true
		return
	}
	n.children = maps.Clone(n.syncedChildren)
	if n.children == nil {
		n.children = map[string]*memNode{}
	}
	for _, c := range n.children {
		c.revert()
	}
}

// Crash simulates a power failure and reboot: every file's contents revert
// to what was last synced, every directory's entries to what was last
// synced through OpenDir, and every File opened before the crash becomes
// invalid.
func (m *MemFS) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.root.revert()
	m.mu.gen++
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// split cleans name into its components below the root.
func split(name string) ([]string, error) {
	p := filepath.ToSlash(filepath.Clean(name))
	p = strings.TrimPrefix(p, "/")
	if p == "." || p == "" {
		return nil, nil
	}
	comps := strings.Split(p, "/")
	if slices.Contains(comps, "..") {
		return nil, syscall.EINVAL
	}
	return comps, nil
}

// lookup returns the node at comps. m.mu must be held.
func (m *MemFS) lookup(comps []string) (*memNode, error) {
	n := m.mu.root
	for _, c := range comps {
		if !n.isDir {
			return nil, syscall.ENOTDIR
		}
		next, ok := n.children[c]
		if !ok {
			return nil, fs.ErrNotExist
		}
		n = next
	}
	return n, nil
}

// lookupParent returns the directory holding name and name's last
// component. The root itself has no parent: base is "" for it.
func (m *MemFS) lookupParent(name string) (dir *memNode, base string, err error) {
	comps, err := split(name)
	if err != nil {
		return nil, "", err
	}
	if len(comps) == 0 {
		return nil, "", nil
	}
	dir, err = m.lookup(comps[:len(comps)-1])
	if err != nil {
		return nil, "", err
	}
	if !dir.isDir {
		return nil, "", syscall.ENOTDIR
	}
	return dir, comps[len(comps)-1], nil
}

func (m *MemFS) node(name string) (*memNode, error) {
	comps, err := split(name)
	if err != nil {
		return nil, err
	}
	return m.lookup(comps)
}

func (m *MemFS) newHandle(n *memNode, name string, read, write, dir bool) *memFile {
	return &memFile{fs: m, node: n, name: name, gen: m.mu.gen, read: read, write: write, dir: dir}
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent(name)
	if err != nil {
		return nil, pathErr("create", name, err)
	}
	if dir == nil {
		return nil, pathErr("create", name, syscall.EISDIR)
	}
	n, ok := dir.children[base]
	switch {
	case ok && n.isDir:
		return nil, pathErr("create", name, syscall.EISDIR)
	case ok:
		n.prepareWrite(0, 0)
		n.data = n.data[:0]
		n.modTime = time.Now()
	default:
		n = newFileNode()
		dir.children[base] = n
		dir.modTime = time.Now()
	}
	return m.newHandle(n, name, true, true, false), nil
}

func (m *MemFS) open(op, name string, write bool) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(name)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	if n.isDir && write {
		return nil, pathErr(op, name, syscall.EISDIR)
	}
	return m.newHandle(n, name, true, write, n.isDir), nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) { return m.open("open", name, false) }

// OpenRW implements FS.
func (m *MemFS) OpenRW(name string) (File, error) { return m.open("open", name, true) }

// OpenDir implements FS. Syncing the returned File makes the directory's
// current entries durable.
func (m *MemFS) OpenDir(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(name)
	if err != nil {
		return nil, pathErr("opendir", name, err)
	}
	if !n.isDir {
		return nil, pathErr("opendir", name, syscall.ENOTDIR)
	}
	return m.newHandle(n, name, false, false, true), nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	if dir == nil {
		return pathErr("remove", name, syscall.EBUSY)
	}
	n, ok := dir.children[base]
	if !ok {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if n.isDir && len(n.children) > 0 {
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	delete(dir.children, base)
	dir.modTime = time.Now()
	return nil
}

// RemoveAll implements FS. A missing path is not an error.
func (m *MemFS) RemoveAll(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent(name)
	if err != nil {
		if err == fs.ErrNotExist {
			return nil
		}
		return pathErr("removeall", name, err)
	}
	if dir == nil {
		return pathErr("removeall", name, syscall.EBUSY)
	}
	if _, ok := dir.children[base]; ok {
		delete(dir.children, base)
		dir.modTime = time.Now()
	}
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	odir, obase, err := m.lookupParent(oldname)
	if err == nil && odir == nil {
		err = syscall.EBUSY
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	n, ok := odir.children[obase]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	ndir, nbase, err := m.lookupParent(newname)
	if err == nil && ndir == nil {
		err = syscall.EBUSY
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	if odir == ndir && obase == nbase {
		return nil
	}
	if n.isDir && m.isBelow(ndir, n) {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.EINVAL}
	}
	if target, ok := ndir.children[nbase]; ok {
		switch {
		case target.isDir && !n.isDir:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.EISDIR}
		case !target.isDir && n.isDir:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.ENOTDIR}
		case target.isDir && len(target.children) > 0:
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.ENOTEMPTY}
		}
	}
	delete(odir.children, obase)
	ndir.children[nbase] = n
	now := time.Now()
	odir.modTime, ndir.modTime = now, now
	return nil
}

// isBelow reports whether d is dir or lies below it.
func (m *MemFS) isBelow(d, dir *memNode) bool {
	var walk func(n *memNode) bool
	walk = func(n *memNode) bool {
		if n == d {
			return true
		}
		for _, c := range n.children {
			if c.isDir && walk(c) {
				return true
			}
		}
		return false
	}
	return walk(dir)
}

// Link implements FS.
func (m *MemFS) Link(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(oldname)
	if err == nil && n.isDir {
		err = syscall.EPERM
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	ndir, nbase, err := m.lookupParent(newname)
	if err == nil && ndir == nil {
		err = fs.ErrExist
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	if _, ok := ndir.children[nbase]; ok {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: fs.ErrExist}
	}
	ndir.children[nbase] = n
	ndir.modTime = time.Now()
	return nil
}

// MkdirAll implements FS.
func (m *MemFS) MkdirAll(name string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	comps, err := split(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	n := m.mu.root
	for _, c := range comps {
		next, ok := n.children[c]
		if !ok {
			next = newDirNode(perm)
			n.children[c] = next
			n.modTime = time.Now()
		} else if !next.isDir {
			return pathErr("mkdir", name, syscall.ENOTDIR)
		}
		n = next
	}
	return nil
}

// Stat implements FS.
func (m *MemFS) Stat(name string) (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(name)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return n.info(name), nil
}

// Lstat implements FS; MemFS has no symbolic links, so it is Stat.
func (m *MemFS) Lstat(name string) (os.FileInfo, error) {
	fi, err := m.Stat(name)
	if pe, ok := err.(*fs.PathError); ok {
		pe.Op = "lstat"
	}
	return fi, err
}

// ReadDir implements FS.
func (m *MemFS) ReadDir(name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.node(name)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	if !n.isDir {
		return nil, pathErr("readdir", name, syscall.ENOTDIR)
	}
	return slices.Sorted(maps.Keys(n.children)), nil
}

func (n *memNode) info(name string) os.FileInfo {
	base := filepath.Base(name)
	if base == string(filepath.Separator) || base == "." {
		base = "/"
	}
	return memInfo{name: base, size: int64(len(n.data)), mode: n.mode, modTime: n.modTime}
}

// memInfo is a snapshot of a memNode's metadata.
type memInfo struct {
	name    string
	size    int64
	mode    os.FileMode
	modTime time.Time
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() os.FileMode  { return i.mode }
func (i memInfo) ModTime() time.Time { return i.modTime }
func (i memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i memInfo) Sys() any           { return nil }

// memFile is an open MemFS file. Its state is guarded by fs.mu.
type memFile struct {
	fs               *MemFS
	node             *memNode
	name             string
	gen              uint64
	read, write, dir bool
	pos              int64
	closed           bool
}

var _ File = (*memFile)(nil)

// check returns why f cannot be used, if it cannot. f.fs.mu must be held.
func (f *memFile) check(op string) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, fs.ErrClosed)
	case f.gen != f.fs.mu.gen:
		return pathErr(op, f.name, ErrCrashed)
	}
	return nil
}

func (f *memFile) readAt(op string, p []byte, off int64) (int, error) {
	if err := f.check(op); err != nil {
		return 0, err
	}
	if f.dir {
		return 0, pathErr(op, f.name, syscall.EISDIR)
	}
	if !f.read {
		return 0, pathErr(op, f.name, syscall.EBADF)
	}
	if off < 0 {
		return 0, pathErr(op, f.name, syscall.EINVAL)
	}
	if off >= int64(len(f.node.data)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) writeAt(op string, p []byte, off int64) (int, error) {
	if err := f.check(op); err != nil {
		return 0, err
	}
	if f.dir || !f.write {
		return 0, pathErr(op, f.name, syscall.EBADF)
	}
	if off < 0 {
		return 0, pathErr(op, f.name, syscall.EINVAL)
	}
	end := off + int64(len(p))
	f.node.prepareWrite(off, end)
	copy(f.node.data[off:end], p)
	f.node.modTime = time.Now()
	return len(p), nil
}

// Read implements File.
func (f *memFile) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n, err := f.readAt("read", p, f.pos)
	f.pos += int64(n)
	return n, err
}

// ReadAt implements File.
func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.readAt("read", p, off)
}

// Write implements File.
func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n, err := f.writeAt("write", p, f.pos)
	f.pos += int64(n)
	return n, err
}

// WriteAt implements File.
func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.writeAt("write", p, off)
}

// Close implements File. Closing a handle invalidated by Crash succeeds.
func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

// Sync implements File: it makes a file's contents, or a directory's
// entries, durable.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("sync"); err != nil {
		return err
	}
	f.node.sync()
	return nil
}

// Truncate implements File.
func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate"); err != nil {
		return err
	}
	if f.dir || !f.write {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	if size <= int64(len(f.node.data)) {
		f.node.data = f.node.data[:size]
	} else {
		f.node.prepareWrite(size, size)
	}
	f.node.modTime = time.Now()
	return nil
}

// Stat implements File.
func (f *memFile) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat"); err != nil {
		return nil, err
	}
	return f.node.info(f.name), nil
}

// Name implements File.
func (f *memFile) Name() string { return f.name }
