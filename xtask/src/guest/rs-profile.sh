# /etc/rs-profile: helpers for scenario scripts, sourced by /init, by rs.cmd scripts and
# by every console command.

# Debian's static busybox runs its own applets before PATH (FEATURE_SH_STANDALONE), so
# iproute2's ip (the one that knows nodad, maddr, -j, ...) is named explicitly.
ip() { /usr/sbin/ip "$@"; }

# mrecv GROUP PORT FILE [DEV]: join GROUP (IPv4 or IPv6) on DEV (default eth0) and append
# every datagram received on UDP PORT to FILE, in the background. Prints the pid.
mrecv() {
	case "$1" in
	*:*) socat -u "UDP6-RECV:$2,ipv6-join-group=[$1]:${4:-eth0}" "OPEN:$3,creat,append" \
		</dev/null >/dev/null 2>&1 & ;;
	*) socat -u "UDP4-RECV:$2,ip-add-membership=$1:${4:-eth0}" "OPEN:$3,creat,append" \
		</dev/null >/dev/null 2>&1 & ;;
	esac
	echo $!
}

# msend GROUP PORT MESSAGE [DEV]: send MESSAGE as one datagram to GROUP:PORT out of DEV.
msend() {
	case "$1" in
	*:*) echo "$3" | socat -u - "UDP6-DATAGRAM:[$1]:$2,so-bindtodevice=${4:-eth0}" ;;
	*) echo "$3" | socat -u - "UDP4-DATAGRAM:$1:$2,so-bindtodevice=${4:-eth0}" ;;
	esac
}
