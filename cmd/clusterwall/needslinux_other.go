//go:build !linux

package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// The commands that run or inspect the firewall need Linux (nftables,
// conntrack, network namespaces: run.go, dataplane.go, dns.go, lab.go);
// elsewhere they exist, so that `clusterwall --help` lists the same
// commands everywhere, and say so. The offline commands — explain, policy
// validate, import, export, the az-style edits, logs, suggest — work on
// every system.

func runCommands() []*cobra.Command {
	return needsLinux("run --config FILE", "Run the firewall (Linux only)")
}

func dataplaneCommands() []*cobra.Command {
	return needsLinux("dataplane show|flush|compile", "Inspect, remove or preview the kernel data plane (Linux only)")
}

func dnsCommands() []*cobra.Command {
	return needsLinux("dns serve", "DNS proxy (Linux only)")
}

func labCommands() []*cobra.Command {
	return needsLinux("lab up|down|status|exec|ca|demo", "The network-namespace lab (Linux only)")
}

func haCommands() []*cobra.Command {
	return needsLinux("ha config|check", "High availability: keepalived and conntrackd configs, readiness check (Linux only)")
}

// needsLinux is a command that only reports that it needs Linux.
func needsLinux(use, short string) []*cobra.Command {
	return []*cobra.Command{{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: 1, msg: errNeedsLinux("clusterwall " + cmd.Name()).Error()}
		},
	}}
}

// errNeedsLinux says that what needs Linux.
func errNeedsLinux(what string) error {
	return fmt.Errorf("%s needs Linux (nftables, conntrack, network namespaces); this clusterwall is built for %s/%s. "+
		"These commands work here: explain, policy validate, import, export, network-rule / application-rule / nat-rule, logs (--file), suggest (--file, --policy)",
		what, runtime.GOOS, runtime.GOARCH)
}
