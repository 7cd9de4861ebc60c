// Package kubetest gives tests a real kube-apiserver and etcd
// (controller-runtime's envtest), started once per test binary. The
// binaries come from KUBEBUILDER_ASSETS or the cache that
// scripts/k8s-test-bins.sh fills; without them a test is skipped, except
// under CI=true, where it fails.
package kubetest

import (
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// BinsCache is where scripts/k8s-test-bins.sh keeps the binaries (one
// directory per version).
const BinsCache = "/var/cache/clusterwall/k8s-bins"

// AssetsDir is the directory holding kube-apiserver and etcd:
// KUBEBUILDER_ASSETS, or the newest complete directory of the cache (or
// of the user's cache, for a non-root run); "" when there is none.
func AssetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob(filepath.Join(BinsCache, "*"))
	if home, err := os.UserCacheDir(); err == nil {
		more, _ := filepath.Glob(filepath.Join(home, "clusterwall", "k8s-bins", "*"))
		dirs = append(dirs, more...)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if isExec(filepath.Join(d, "kube-apiserver")) && isExec(filepath.Join(d, "etcd")) {
			return d
		}
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// Env is a kube-apiserver + etcd shared by the tests of one binary: the
// first Config starts it, Stop (from TestMain) ends it.
type Env struct {
	// CRDDirs are installed at start (envtest's CRDDirectoryPaths; a
	// missing directory is an error).
	CRDDirs []string

	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	err  error
	skip string
}

// Config returns the admin config of the running kube-apiserver, starting
// it on first use. Without the binaries it skips t, or fails it under
// CI=true.
func (e *Env) Config(t testing.TB) *rest.Config {
	t.Helper()
	e.once.Do(func() {
		dir := AssetsDir()
		if dir == "" {
			e.skip = "no kube-apiserver/etcd: run scripts/k8s-test-bins.sh and set KUBEBUILDER_ASSETS"
			return
		}
		e.env = &envtest.Environment{BinaryAssetsDirectory: dir, CRDDirectoryPaths: e.CRDDirs, ErrorIfCRDPathMissing: len(e.CRDDirs) > 0}
		start := time.Now()
		e.cfg, e.err = e.env.Start()
		t.Logf("kube-apiserver + etcd from %s up in %s (CRDs: %v)", dir, time.Since(start).Round(time.Millisecond), e.CRDDirs)
	})
	if e.skip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(e.skip)
		}
		t.Skip(e.skip)
	}
	if e.err != nil {
		t.Fatalf("envtest: %v", e.err)
	}
	return e.cfg
}

// Stop stops the kube-apiserver and etcd if they were started.
func (e *Env) Stop() {
	if e.env != nil {
		e.env.Stop()
	}
}
