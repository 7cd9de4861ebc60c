//go:build !linux

package ha

import (
	"context"
	"errors"
	"net/netip"
)

// errNeedsLinux: keepalived, conntrackd and netlink are Linux's.
var errNeedsLinux = errors.New("high availability needs Linux (keepalived, conntrackd)")

type procs struct{}

func (*procs) keepalivedRunning() bool              { return false }
func (*procs) status() (ProcStatus, ProcStatus)     { return ProcStatus{}, ProcStatus{} }
func (m *Manager) startProcs(context.Context) error { return errNeedsLinux }
func (m *Manager) stopProcs()                       {}
func (m *Manager) held() map[netip.Addr]bool        { return nil }
func (m *Manager) conntrackdCtl(context.Context, ...string) (string, error) {
	return "", errNeedsLinux
}
