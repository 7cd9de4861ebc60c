// Command clusterwall is a perimeter firewall for Kubernetes clusters: policy
// tools (validate, explain, az-style edits, Azure import), the firewall
// daemon, and the network-namespace lab. Subcommands only parse flags and
// wire packages together; decisions live in internal/match.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries an exit code out of a command without printing usage.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "clusterwall:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "clusterwall",
		Short:         "Perimeter firewall for Kubernetes clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newPolicyCmd(),
	)
	// Each file of this package that defines commands registers them here,
	// in plain code (no init side effects).
	for _, add := range commandSets {
		root.AddCommand(add()...)
	}
	return root
}

// commandSets lists the constructors of the other command families; a file
// adds its family by appending one line here.
var commandSets = []func() []*cobra.Command{
	probeCommands,
	explainCommands,
	importCommands,
	labCommands,
	azCommands,
	dataplaneCommands,
	runCommands,
	dnsCommands,
	wafCommands,
	adminCommands,
	controllerCommands, exportCommands,
	logsCommands, suggestCommands,
	haCommands,
}
