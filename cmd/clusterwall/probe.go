package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// probeCommands: `clusterwall probe tcp|udp ADDR:PORT` — a tiny real client
// the demo and tests run inside lab hosts (`lab exec node -- clusterwall
// probe ...`). It prints "ok <first line of the answer>" and exits 0, or
// prints "fail <error>" and exits 1.
func probeCommands() []*cobra.Command {
	var (
		timeout time.Duration
		source  string
		send    string
	)
	cmd := &cobra.Command{
		Use:    "probe tcp|udp|ntp ADDR:PORT",
		Short:  "Connect to ADDR:PORT once and report whether an answer came back (lab helper)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			network := args[0]
			if network == "ntp" {
				// An NTP client request (LI 0, version 3, mode 3).
				network, send = "udp", "\x1b"+strings.Repeat("\x00", 47)
			}
			if network != "tcp" && network != "udp" {
				return &exitError{code: 2, msg: "probe: network must be tcp, udp or ntp"}
			}
			d := net.Dialer{Timeout: timeout}
			if source != "" {
				ip := net.ParseIP(source)
				if ip == nil {
					return &exitError{code: 2, msg: "probe: --source is not an IP"}
				}
				if network == "tcp" {
					d.LocalAddr = &net.TCPAddr{IP: ip}
				} else {
					d.LocalAddr = &net.UDPAddr{IP: ip}
				}
			}
			fail := func(err error) error {
				fmt.Fprintf(cmd.OutOrStdout(), "fail %v\n", err)
				return &exitError{code: 1}
			}
			c, err := d.Dial(network, args[1])
			if err != nil {
				return fail(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(timeout))
			if network == "udp" || send != "" {
				msg := send
				if msg == "" {
					msg = "probe\n"
				}
				if _, err := c.Write([]byte(msg)); err != nil {
					return fail(err)
				}
			}
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			if n == 0 && err != nil {
				return fail(err)
			}
			if args[0] == "ntp" {
				if n < 48 || buf[0]&7 != 4 {
					return fail(fmt.Errorf("not an NTP server reply (%d bytes)", n))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok \"ntp stratum %d\"\n", buf[1])
				return nil
			}
			line, _, _ := strings.Cut(string(buf[:n]), "\n")
			fmt.Fprintf(cmd.OutOrStdout(), "ok %q\n", line)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "give up after this long")
	cmd.Flags().StringVar(&source, "source", "", "source address")
	cmd.Flags().StringVar(&send, "send", "", "bytes to send first (UDP always sends)")
	return []*cobra.Command{cmd}
}
