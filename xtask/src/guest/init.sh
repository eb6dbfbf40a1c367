#!/bin/sh
# ringswitch test guest /init (busybox sh). Built into the initramfs by
# `cargo xtask guest-image`; see docs/design/e2e.md for the protocol.
#
# Kernel command-line parameters (lists are comma-separated, item N is for ethN):
#   rs.ip=198.18.0.1/24[,...]     IPv4 address per interface
#   rs.ip6=2001:db8::1/64[,...]   IPv6 address per interface (no DAD)
#   rs.mac=02:..[,...]            override the MAC QEMU gave the interface
#   rs.mtu=1500[,...]             MTU per interface
#   rs.queues=2[,...]             `ethtool -L ethN combined Q` when Q > 1
#   rs.nics=N                     wait for N interfaces (default 1)
#   rs.wait=30                    seconds a scenario waits for its peer to answer
#   rs.run=STEP[,STEP...]         scenario steps, see run_step below
#   rs.cmd=BASE64                 a shell script to run after the steps
#   rs.stay=1                     do not power off after RS-DONE
# Output lines on ttyS0 (the console): RS-READY, RS-IFACE, RS-RESULT, RS-ERROR, RS-DONE.
# Interactive commands on ttyS1 (announced by "RS-CONSOLE-READY" there):
# "RS-CMD <id> <base64 script>" in, out comes
# "RS-OUT-BEGIN <id>", base64 of stdout+stderr, "RS-OUT-END <id> rc=<rc>".

export PATH=/usr/sbin:/usr/bin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /etc /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s /bin 2>/dev/null
hostname guest

# ip (iproute2, not busybox's), mrecv, msend: see /etc/rs-profile.
. /etc/rs-profile

die() {
	echo "RS-ERROR $*"
	echo "RS-DONE ok=0"
	poweroff -f
}

RS_NICS=1
RS_WAIT=30
for tok in $(cat /proc/cmdline); do
	case "$tok" in
	rs.ip=*) RS_IP=${tok#rs.ip=} ;;
	rs.ip6=*) RS_IP6=${tok#rs.ip6=} ;;
	rs.mac=*) RS_MAC=${tok#rs.mac=} ;;
	rs.mtu=*) RS_MTU=${tok#rs.mtu=} ;;
	rs.queues=*) RS_QUEUES=${tok#rs.queues=} ;;
	rs.nics=*) RS_NICS=${tok#rs.nics=} ;;
	rs.wait=*) RS_WAIT=${tok#rs.wait=} ;;
	rs.run=*) RS_RUN=${tok#rs.run=} ;;
	rs.cmd=*) RS_CMD=${tok#rs.cmd=} ;;
	rs.stay=*) RS_STAY=${tok#rs.stay=} ;;
	esac
done

# item LIST N: the Nth (0-based) comma-separated item of LIST, empty if absent.
item() {
	echo "$1" | awk -F, -v n="$2" '{ print $(n + 1) }'
}

# Interfaces must come up with their addresses usable at once: no DAD delay.
echo 0 >/proc/sys/net/ipv6/conf/default/accept_dad
echo 0 >/proc/sys/net/ipv6/conf/all/accept_dad

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
	failover net_failover virtio_net; do
	insmod /lib/modules/$m.ko || echo "RS-ERROR insmod $m"
done

i=0
while [ $i -lt 100 ]; do
	n=$(ls /sys/class/net | grep -c '^eth')
	[ "$n" -ge "$RS_NICS" ] && break
	sleep 0.1
	i=$((i + 1))
done
[ "$n" -ge "$RS_NICS" ] || die "only $n of $RS_NICS interfaces appeared"

ip link set lo up
n=0
while [ -e /sys/class/net/eth$n ]; do
	dev=eth$n
	v=$(item "$RS_MAC" $n)
	[ -n "$v" ] && { ip link set $dev address "$v" || die "mac $dev $v"; }
	v=$(item "$RS_MTU" $n)
	[ -n "$v" ] && { ip link set $dev mtu "$v" || die "mtu $dev $v"; }
	ip link set $dev up || die "up $dev"
	v=$(item "$RS_QUEUES" $n)
	[ -n "$v" ] && [ "$v" -gt 1 ] && { ethtool -L $dev combined "$v" || die "queues $dev $v"; }
	v=$(item "$RS_IP" $n)
	[ -n "$v" ] && { ip addr add "$v" dev $dev || die "ip $dev $v"; }
	v=$(item "$RS_IP6" $n)
	[ -n "$v" ] && { ip -6 addr add "$v" dev $dev nodad || die "ip6 $dev $v"; }
	echo "RS-IFACE name=$dev mac=$(cat /sys/class/net/$dev/address) mtu=$(cat /sys/class/net/$dev/mtu) queues=$(ls -d /sys/class/net/$dev/queues/rx-* | wc -l)"
	n=$((n + 1))
done

# The command console on ttyS1: one request per line, output base64-framed so that
# nothing a command prints can be mistaken for the framing.
console_loop() {
	exec 3<>/dev/ttyS1
	stty raw -echo <&3 2>/dev/null
	echo "RS-CONSOLE-READY" >&3
	while read -r tag id b64 <&3; do
		[ "$tag" = "RS-CMD" ] || continue
		echo "$b64" | base64 -d >/tmp/cmd.$id 2>/dev/null
		sh -c ". /etc/rs-profile; . /tmp/cmd.$id" </dev/null >/tmp/out.$id 2>&1
		rc=$?
		{
			echo "RS-OUT-BEGIN $id"
			base64 </tmp/out.$id
			echo "RS-OUT-END $id rc=$rc"
		} >&3
		rm -f /tmp/cmd.$id /tmp/out.$id
	done
}
[ -e /dev/ttyS1 ] && console_loop &

# Report ready only once every NIC has carrier (the backend set LINK_UP), at most 10 s:
# a test that starts traffic at RS-READY must not race the link coming up.
i=0
while [ $i -lt 100 ]; do
	down=0
	for c in /sys/class/net/eth*/carrier; do
		[ -e "$c" ] || continue
		[ "$(cat "$c" 2>/dev/null)" = 1 ] || down=1
	done
	[ $down = 0 ] && break
	sleep 0.1
	i=$((i + 1))
done

echo "RS-READY nics=$n"

# ping_step NAME PROG ADDR: wait until ADDR answers (up to rs.wait s), then 5 pings.
ping_step() {
	name=$1 prog=$2 addr=$3
	deadline=$(($(date +%s) + RS_WAIT))
	until $prog -c 1 -W 1 "$addr" >/dev/null 2>&1; do
		sleep 0.2
		if [ "$(date +%s)" -ge $deadline ]; then
			echo "RS-RESULT name=$name ok=0 target=$addr error=unreachable"
			return
		fi
	done
	$prog -c 5 -i 0.2 -W 2 "$addr" >/tmp/ping.out 2>&1
	awk -v name="$name" -v addr="$addr" '
		/packets transmitted/ { tx = $1; rx = $4; loss = $7; sub("%", "", loss) }
		/round-trip/ { split($4, r, "/"); rtt = r[2] }
		END {
			ok = (tx > 0 && tx == rx) ? 1 : 0
			printf "RS-RESULT name=%s ok=%d target=%s sent=%d recv=%d loss=%s rtt_ms=%s\n",
				name, ok, addr, tx, rx, loss, rtt
		}' /tmp/ping.out
}

# iperf3_step ADDR[/SECONDS]: TCP stream to an iperf3 server, receiver rate in Mbit/s.
iperf3_step() {
	addr=${1%/*} secs=3
	[ "$addr" != "$1" ] && secs=${1#*/}
	if iperf3 -c "$addr" -t "$secs" -f m >/tmp/iperf.out 2>&1; then
		awk -v addr="$addr" '/receiver/ { mbit = $7 }
			END { printf "RS-RESULT name=iperf3 ok=%d target=%s mbit_s=%s\n", mbit != "", addr, mbit }' /tmp/iperf.out
	else
		echo "RS-RESULT name=iperf3 ok=0 target=$addr error=$(tail -n 1 /tmp/iperf.out | tr ' ' _)"
	fi
}

run_step() {
	name=${1%%:*} arg=${1#*:}
	case "$name" in
	ping) ping_step ping ping "$arg" ;;
	ping6) ping_step ping6 ping6 "$arg" ;;
	iperf3-server)
		iperf3 -s -D >/dev/null 2>&1
		rc=$?
		echo "RS-RESULT name=iperf3-server ok=$((rc == 0))"
		;;
	iperf3) iperf3_step "$arg" ;;
	sleep)
		sleep "$arg"
		echo "RS-RESULT name=sleep ok=1"
		;;
	*) echo "RS-RESULT name=$name ok=0 error=unknown-step" ;;
	esac
}

for step in $(echo "$RS_RUN" | tr , ' '); do
	run_step "$step"
done

if [ -n "$RS_CMD" ]; then
	echo "$RS_CMD" | base64 -d >/tmp/cmdline.sh 2>/dev/null || echo "RS-ERROR cmd base64"
	sh -c ". /etc/rs-profile; . /tmp/cmdline.sh" </dev/null
	rc=$?
	echo "RS-RESULT name=cmd ok=$((rc == 0)) rc=$rc"
fi

echo "RS-DONE ok=1"
if [ "$RS_STAY" = 1 ]; then
	# Stay up for the command console; PID 1 must never exit.
	while :; do sleep 3600; done
fi
poweroff -f
