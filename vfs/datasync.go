package vfs

// Datasync makes f's data durable, and of its metadata only what reading
// the data back needs (its size and block allocation): fdatasync(2) when f
// is an *os.File on Linux, f.Sync() for every other file or system. After
// writes that changed neither the file's size nor which blocks it has,
// fdatasync skips the journal commit that Sync pays for the modification
// time, which is what a log writing into space it allocated and synced
// earlier relies on.
func Datasync(f File) error {
	return datasync(f)
}
