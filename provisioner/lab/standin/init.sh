#!/bin/sh
# /init of the lab's Talos stand-in initramfs (busybox sh).
#
# Brings the VM to the point where the stand-in agent (Python) can run: kernel
# filesystems, the virtio drivers, loopback and the NIC configured by DHCP from the
# tool's netboot dnsmasq (address and hostname come from the inventory's reservation),
# then runs `python3 -m provisioner.lab.standin.agent` and restarts it if it dies, as
# Talos's machined would. Every line it prints starts with "talos stand-in" so the
# serial log (ttyS0) shows plainly that this is not real Talos.
#
# The same file is udhcpc's event script: udhcpc runs it with $1 = deconfig|bound|renew.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

say() { read -r up _ < /proc/uptime 2>/dev/null; echo "talos stand-in: init: [${up:-?}] $*"; }

if [ "$$" != 1 ] && [ -n "$interface" ]; then
    # --- udhcpc event script mode (udhcpc's own output is discarded: log to the console) ---
    exec >/dev/console 2>&1
    case "$1" in
        deconfig)
            ip -4 addr flush dev "$interface" 2>/dev/null
            ip link set "$interface" up
            ;;
        bound|renew)
            prefix=24
            [ -n "$mask" ] && prefix="$mask"
            ip -4 addr flush dev "$interface" 2>/dev/null
            ip addr add "$ip/$prefix" dev "$interface"
            if [ -n "$router" ]; then
                for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
            fi
            : > /etc/resolv.conf
            for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
            [ -n "$hostname" ] && hostname "$hostname"
            mkdir -p /run/standin
            {
                echo "STANDIN_IFACE=$interface"
                echo "STANDIN_IP=$ip"
                echo "STANDIN_PREFIX=$prefix"
                echo "STANDIN_ROUTER=${router%% *}"
                echo "STANDIN_HOSTNAME=$hostname"
                echo "STANDIN_DNS=\"$dns\""
                echo "STANDIN_MAC=$(cat /sys/class/net/"$interface"/address)"
            } > /run/standin/net.env
            echo "talos stand-in: dhcp: $1 $interface $ip/$prefix router ${router:-none} hostname ${hostname:-none}"
            ;;
        leasefail|nak)
            echo "talos stand-in: dhcp: $1 on $interface"
            ;;
    esac
    exit 0
fi

# --- PID 1 mode ---
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec </dev/console >/dev/console 2>&1

say "starting on $(uname -r), cmdline: $(cat /proc/cmdline)"

for m in virtio_pci virtio_rng virtio_net virtio_blk af_packet ext4 vfat nls_cp437 nls_iso8859_1 crc32c_generic; do
    modprobe "$m" || grep -qw "$m" "/lib/modules/$(uname -r)/modules.builtin" 2>/dev/null \
        || say "module $m not loaded"
done
mdev -s 2>/dev/null

ip link set lo up
hostname talos-standin

# The first NIC that appears (virtio-net probes asynchronously).
nic=""
i=0
while [ -z "$nic" ] && [ "$i" -lt 100 ]; do
    for n in /sys/class/net/*; do
        n=${n##*/}
        [ "$n" = lo ] && continue
        nic=$n
        break
    done
    [ -z "$nic" ] && sleep 0.1
    i=$((i + 1))
done
if [ -z "$nic" ]; then
    say "no network interface found"
else
    ip link set "$nic" up
    say "network interface $nic ($(cat /sys/class/net/"$nic"/address))"
    attempt=1
    until udhcpc -i "$nic" -s /init -O hostname -t 5 -T 2 -n -q -f >/dev/null 2>&1; do
        say "dhcp on $nic failed (attempt $attempt), retrying"
        attempt=$((attempt + 1))
        sleep 2
    done
fi
if [ -f /run/standin/net.env ]; then
    . /run/standin/net.env
    export STANDIN_IFACE STANDIN_IP STANDIN_PREFIX STANDIN_ROUTER STANDIN_HOSTNAME STANDIN_DNS STANDIN_MAC
fi
for d in /sys/block/vd*; do
    [ -e "$d" ] && say "disk /dev/${d##*/} $(($(cat "$d/size") / 2048)) MiB"
done

export HOME=/root PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
run=1
while :; do
    say "starting agent (run $run)"
    python3 -m provisioner.lab.standin.agent
    rc=$?
    say "agent exited with status $rc; restarting in 3 s"
    run=$((run + 1))
    sleep 3
done
