package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// A slab file holds slotsPer fixed-size series slots of one size, mapped
// into memory with MAP_SHARED: writes go to the page cache, which survives a
// crash of the process, and Sync (at a checkpoint) makes them durable. The
// file is created sparse, so disk blocks are used only as series write rows.
type slab struct {
	path     string
	file     *os.File
	data     []byte
	slotSize int64
	slotsPer int64
}

// slabClass is every slab of one slot size, with its free slots.
type slabClass struct {
	slotSize int64
	slabs    []*slab
	free     []slotRef // stack; the lowest slot is on top
	used     map[slotRef]bool
}

// slotRef locates a slot: slab number within its class and slot index.
type slotRef struct {
	Slab int32
	Slot int32
}

func slabName(slotSize int64, n int) string {
	return fmt.Sprintf("slab-%d-%06d.dat", slotSize, n)
}

func openSlab(path string, slotSize, slotsPer int64) (*slab, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: open slab: %w", err)
	}
	size := slotSize * slotsPer
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("storage: stat slab: %w", err)
	}
	if fi.Size() != size {
		if fi.Size() > size {
			f.Close()
			return nil, fmt.Errorf("storage: slab %s has %d bytes, want %d (SeriesPerSlab changed?)", path, fi.Size(), size)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("storage: size slab: %w", err)
		}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("storage: map slab: %w", err)
	}
	return &slab{path: path, file: f, data: data, slotSize: slotSize, slotsPer: slotsPer}, nil
}

func (s *slab) slot(i int32) []byte {
	off := int64(i) * s.slotSize
	return s.data[off : off+s.slotSize : off+s.slotSize]
}

func (s *slab) sync() error {
	// On Linux fsync writes back the shared mapping's dirty pages too.
	if err := s.file.Sync(); err != nil {
		return fmt.Errorf("storage: sync slab: %w", err)
	}
	return nil
}

func (s *slab) close() error {
	err := syscall.Munmap(s.data)
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// slabStore is every slab class of an engine's data directory.
type slabStore struct {
	dir      string
	slotsPer int64
	classes  map[int64]*slabClass
}

func openSlabStore(dir string, slotsPer int64) (*slabStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	st := &slabStore{dir: dir, slotsPer: slotsPer, classes: map[int64]*slabClass{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: list slabs: %w", err)
	}
	type found struct {
		size int64
		n    int
	}
	var files []found
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".dat")
		if !ok || !strings.HasPrefix(name, "slab-") {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(name, "slab-"), "-")
		if len(parts) != 2 {
			continue
		}
		size, err1 := strconv.ParseInt(parts[0], 10, 64)
		n, err2 := strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil || size <= 0 {
			continue
		}
		files = append(files, found{size, n})
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].size != files[j].size {
			return files[i].size < files[j].size
		}
		return files[i].n < files[j].n
	})
	for _, f := range files {
		c := st.class(f.size)
		if f.n != len(c.slabs) {
			st.close()
			return nil, fmt.Errorf("storage: slab %s missing before %s", slabName(f.size, len(c.slabs)), slabName(f.size, f.n))
		}
		s, err := openSlab(filepath.Join(dir, slabName(f.size, f.n)), f.size, slotsPer)
		if err != nil {
			st.close()
			return nil, err
		}
		c.slabs = append(c.slabs, s)
	}
	return st, nil
}

func (st *slabStore) class(size int64) *slabClass {
	c := st.classes[size]
	if c == nil {
		c = &slabClass{slotSize: size, used: map[slotRef]bool{}}
		st.classes[size] = c
	}
	return c
}

// markUsed records a slot as taken (when loading a checkpoint).
func (st *slabStore) markUsed(size int64, ref slotRef) error {
	c := st.class(size)
	if int(ref.Slab) >= len(c.slabs) || ref.Slot < 0 || int64(ref.Slot) >= st.slotsPer {
		return fmt.Errorf("storage: checkpoint names slot %d/%d of size %d, which no slab holds", ref.Slab, ref.Slot, size)
	}
	if c.used[ref] {
		return fmt.Errorf("storage: checkpoint gives slot %d/%d to two series", ref.Slab, ref.Slot)
	}
	c.used[ref] = true
	return nil
}

// buildFree fills the free lists with every slot not marked used.
func (st *slabStore) buildFree() {
	for _, c := range st.classes {
		c.free = c.free[:0]
		for si := len(c.slabs) - 1; si >= 0; si-- {
			for i := st.slotsPer - 1; i >= 0; i-- {
				ref := slotRef{int32(si), int32(i)}
				if !c.used[ref] {
					c.free = append(c.free, ref)
				}
			}
		}
	}
}

// alloc takes a free slot of the given size, adding a slab when none is free.
func (st *slabStore) alloc(size int64) (slotRef, []byte, error) {
	c := st.class(size)
	if len(c.free) == 0 {
		n := len(c.slabs)
		s, err := openSlab(filepath.Join(st.dir, slabName(size, n)), size, st.slotsPer)
		if err != nil {
			return slotRef{}, nil, err
		}
		c.slabs = append(c.slabs, s)
		for i := st.slotsPer - 1; i >= 0; i-- {
			c.free = append(c.free, slotRef{int32(n), int32(i)})
		}
	}
	ref := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.used[ref] = true
	return ref, c.slabs[ref.Slab].slot(ref.Slot), nil
}

// release returns a slot to its free list.
func (st *slabStore) release(size int64, ref slotRef) {
	c := st.class(size)
	if !c.used[ref] {
		return
	}
	delete(c.used, ref)
	c.free = append(c.free, ref)
}

func (st *slabStore) slot(size int64, ref slotRef) []byte {
	return st.classes[size].slabs[ref.Slab].slot(ref.Slot)
}

func (st *slabStore) sync() error {
	var errs []error
	for _, c := range st.classes {
		for _, s := range c.slabs {
			if err := s.sync(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (st *slabStore) diskBytes() int64 {
	var n int64
	for _, c := range st.classes {
		n += int64(len(c.slabs)) * c.slotSize * st.slotsPer
	}
	return n
}

func (st *slabStore) close() error {
	var errs []error
	for _, c := range st.classes {
		for _, s := range c.slabs {
			if err := s.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
