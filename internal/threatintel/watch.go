package threatintel

import (
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fileWatchSettle is how long a watched feed file must stay quiet before it
// is read: a writer's several writes make one reload, not a reload of a
// half-written file each.
const fileWatchSettle = 100 * time.Millisecond

// fileWatch tells Engine.Run which feed files changed. It watches their
// directories (a file replaced by rename keeps being seen) and sends the
// set of changed paths once they have been quiet for fileWatchSettle.
type fileWatch struct {
	log     *slog.Logger
	w       *fsnotify.Watcher // nil when watching is not available
	changed chan map[string]bool
	done    chan struct{}
	stopped chan struct{} // closed when run returns

	mu    sync.Mutex
	files map[string]bool // watched feed paths
	dirs  map[string]bool // watched directories
}

func newFileWatch(log *slog.Logger) *fileWatch {
	fw := &fileWatch{log: log, changed: make(chan map[string]bool), done: make(chan struct{}), stopped: make(chan struct{}),
		files: map[string]bool{}, dirs: map[string]bool{}}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("threat intel: cannot watch feed files; checking them every FileInterval", "err", err)
		return fw
	}
	fw.w = w
	go fw.run()
	return fw
}

// watch sets the files to watch. The directories are watched when it
// returns: a change made after it is seen. It reports whether a file was
// not watched before (a change before this call is not seen: the caller
// checks those files once).
func (fw *fileWatch) watch(paths []string) (added bool) {
	if fw.w == nil {
		return false
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, p := range paths {
		added = added || !fw.files[p]
	}
	fw.files = map[string]bool{}
	wantDirs := map[string]bool{}
	for _, p := range paths {
		fw.files[p] = true
		wantDirs[filepath.Dir(p)] = true
	}
	for d := range fw.dirs {
		if !wantDirs[d] {
			fw.w.Remove(d)
			delete(fw.dirs, d)
		}
	}
	for d := range wantDirs {
		if !fw.dirs[d] {
			if err := fw.w.Add(d); err != nil {
				fw.log.Warn("threat intel: cannot watch a feed directory; its files are checked every FileInterval", "dir", d, "err", err)
				continue
			}
			fw.dirs[d] = true
		}
	}
	return added
}

func (fw *fileWatch) watched(p string) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.files[p]
}

func (fw *fileWatch) close() {
	if fw.w == nil {
		return
	}
	close(fw.done)
	fw.w.Close()
	<-fw.stopped
}

func (fw *fileWatch) run() {
	defer close(fw.stopped)
	pending := map[string]bool{}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	var out chan map[string]bool // non-nil when pending is ready to send
	for {
		select {
		case <-fw.done:
			return
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if p := filepath.Clean(ev.Name); fw.watched(p) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
				pending[p] = true
				out = nil
				settle.Reset(fileWatchSettle)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			fw.log.Warn("threat intel: watching feed files", "err", err)
		case <-settle.C:
			if len(pending) > 0 {
				out = fw.changed
			}
		case out <- pending:
			pending = map[string]bool{}
			out = nil
		}
	}
}
