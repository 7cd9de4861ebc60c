#!/bin/bash
# bench/l7prio.sh PID [COMM...]: while process PID (a bench/l7 run) lives,
# give its session and the sessions of the processes it measures (by
# command name: the daemon binaries, haproxy, squid) autogroup nice -19.
#
# With kernel.sched_autogroup_enabled=1 the kernel shares the CPUs between
# sessions first, and the benchmark starts every proxy in a session of its
# own (like the lab), so `nice` on the benchmark does not give it the
# machine; /proc/PID/autogroup does. On a machine shared with other work
# this gives the benchmark's processes what they would get on a quiet one
# (the other work fills their idle time instead). Every set-up gets the
# same, so ratios stay comparable; it is still a measurement under load
# (docs/benchmarks.md, "l7idle").
#
#   bench-l7 -exe cw-a -exe-b cw-b ... & bench/l7prio.sh $! cw-a cw-b
set -u
pid=$1
shift
names="haproxy|squid|$(basename "$(readlink /proc/"$pid"/exe)")"
for c in "$@"; do names="$names|$(basename "$c")"; done
while kill -0 "$pid" 2>/dev/null; do
	for p in $pid $(pgrep -x "$names"); do
		grep -q "nice -19" /proc/"$p"/autogroup 2>/dev/null || { echo -19 >/proc/"$p"/autogroup; } 2>/dev/null
	done
	sleep 0.2
done
