// SPDX-License-Identifier: Apache-2.0
//
// rvs's XDP programs. `steer`, on every interface of the balancer, sends
// the balancer's own traffic to the AF_XDP socket of the worker that owns it
// and passes everything else to the kernel. `deliver`, on the worker end of
// each hand-over veth pair, puts what `steer` handed over into that worker's
// socket.
//
// `tun_steer`, a socket filter set as the TUN device's steering program,
// picks the TUN queue (one per worker) for what the kernel routes to rvs by
// the same rules, so a real's answer that reaches rvs through the kernel
// also meets the worker that owns its port.
//
// An AF_XDP socket takes only frames that arrive on the queue it is bound
// to, and which queue a frame arrives on is up to the sender and the NIC's
// hashing. So a frame that arrived on its worker's queue goes straight to
// that worker's socket on this interface; any other is redirected into the
// worker's hand-over veth (a device map), whose far end runs `deliver`. No
// NIC flow-steering rules are needed.
//
// Steered to a worker:
//   - IPv4 TCP or UDP to a service's VIP:port, to worker
//     hash(src ip, src port) % workers, so a flow always reaches one worker;
//   - IPv4 ICMP to a VIP address (errors about a flow, echo), to worker
//     hash(src ip) % workers;
//   - any IPv4 packet to a LIP: TCP/UDP to worker dst_port % workers (the
//     worker that owns that local port, rvs_core::WorkerSlice::owns), other
//     protocols (ICMP errors from reals) to worker 0.
// Passed to the kernel: ARP (the kernel answers it for VIPs and LIPs), IPv6,
// IPv4 fragments after the first to a VIP, other ports of a VIP address, and
// everything addressed to anyone else (the host's own traffic).
//
// The daemon fills the maps; nothing here needs libbpf's headers. Built by
// scripts/build-bpf with `clang -O2 -target bpf`; the object is committed.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_DEVMAP = 14,
	BPF_MAP_TYPE_XSKMAP = 17,
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

// The legacy map definition aya reads from the "maps" section.
struct bpf_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

struct __sk_buff;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 offset, void *to, __u32 len) = (void *)26;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

// Keep in step with crates/rvs/src/driver/xdp/mod.rs.
#define MAX_SLOTS 1024
#define MAX_WORKERS 16

struct service_key {
	__u32 addr; // network order
	__u16 port; // network order
	__u8 proto;
	__u8 pad;
};

// (VIP, port, protocol) of every service -> 1.
struct bpf_map_def SEC("maps") services = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct service_key),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// VIP addresses (network order) -> 1.
struct bpf_map_def SEC("maps") vips = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// LIP addresses (network order) -> 1.
struct bpf_map_def SEC("maps") laddrs = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// Interface index -> first slot of its sockets in `xsks` (one per worker);
// for a hand-over veth's worker end, the slot of that worker's socket there.
struct bpf_map_def SEC("maps") ifaces = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 256,
};

// [0]: the number of workers; 0 passes everything.
struct bpf_map_def SEC("maps") settings = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

struct bpf_map_def SEC("maps") xsks = {
	.type = BPF_MAP_TYPE_XSKMAP,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = MAX_SLOTS,
};

// Worker -> interface index of the near end of its hand-over veth pair.
struct bpf_map_def SEC("maps") handover = {
	.type = BPF_MAP_TYPE_DEVMAP,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = MAX_WORKERS,
};

// The balancer's frames, per CPU: [0] to a socket on their own queue, [1]
// handed over to another queue's worker, [2] passed to the kernel for want
// of a socket or device, [3] delivered from a hand-over veth, [4] dropped on
// a hand-over veth for want of a socket.
enum {
	STEERED_DIRECT,
	STEERED_HANDOVER,
	STEERED_PASS,
	STEERED_DELIVERED,
	STEERED_DROPPED,
	STEERED_COUNTS,
};
struct bpf_map_def SEC("maps") steered = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = STEERED_COUNTS,
};

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

static __attribute__((always_inline)) __u32 mix(__u32 x)
{
	// murmur3's finaliser: cheap and spreads every input bit.
	x ^= x >> 16;
	x *= 0x85ebca6b;
	x ^= x >> 13;
	x *= 0xc2b2ae35;
	x ^= x >> 16;
	return x;
}

static __attribute__((always_inline)) int count(__u32 what, int action)
{
	__u64 *n = bpf_map_lookup_elem(&steered, &what);
	if (n)
		*n += 1;
	return action;
}

static __attribute__((always_inline)) int to_worker(struct xdp_md *ctx, __u32 worker)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!base)
		return count(STEERED_PASS, XDP_PASS);
	__u32 slot = *base + worker;
	if (slot >= MAX_SLOTS)
		return count(STEERED_PASS, XDP_PASS);
	// No socket or device in the slot: the kernel gets the packet (the low
	// bits of the flags), and it reaches rvs through the TUN device.
	if (ctx->rx_queue_index == worker) {
		int action = bpf_redirect_map(&xsks, slot, XDP_PASS);
		return count(action == XDP_REDIRECT ? STEERED_DIRECT : STEERED_PASS, action);
	}
	int action = bpf_redirect_map(&handover, worker, XDP_PASS);
	return count(action == XDP_REDIRECT ? STEERED_HANDOVER : STEERED_PASS, action);
}

SEC("xdp")
int deliver(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *slot = bpf_map_lookup_elem(&ifaces, &ifindex);
	// Only `steer` sends here; with no socket waiting (the worker is
	// stopping) the kernel could do nothing with the frame either.
	if (!slot || *slot >= MAX_SLOTS)
		return count(STEERED_DROPPED, XDP_DROP);
	int action = bpf_redirect_map(&xsks, *slot, XDP_DROP);
	return count(action == XDP_REDIRECT ? STEERED_DELIVERED : STEERED_DROPPED, action);
}

SEC("xdp")
int steer(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *data_end = (__u8 *)(long)ctx->data_end;
	// Ethernet (14) plus the fixed IPv4 header (20).
	if (data + 34 > data_end)
		return XDP_PASS;
	if (data[12] != 0x08 || data[13] != 0x00)
		return XDP_PASS;
	__u8 *ip = data + 14;
	if ((ip[0] >> 4) != 4)
		return XDP_PASS;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return XDP_PASS;
	__u32 zero = 0;
	__u32 *workers = bpf_map_lookup_elem(&settings, &zero);
	if (!workers || *workers == 0 || *workers > MAX_WORKERS)
		return XDP_PASS;
	__u32 n = *workers;
	__u8 proto = ip[9];
	__u32 saddr = *(__u32 *)(ip + 12);
	__u32 daddr = *(__u32 *)(ip + 16);
	// Only a first (or unfragmented) piece carries the ports.
	int first = ((ip[6] & 0x1f) | ip[7]) == 0;
	__u8 *l4 = ip + ihl;
	int ports = first && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && l4 + 4 <= data_end;
	__u16 sport = 0, dport = 0;
	if (ports) {
		sport = *(__u16 *)l4;
		dport = *(__u16 *)(l4 + 2);
	}

	if (bpf_map_lookup_elem(&laddrs, &daddr)) {
		__u32 port = ((__u32)(dport & 0xff) << 8) | (dport >> 8);
		return to_worker(ctx, ports ? port % n : 0);
	}
	if (ports) {
		struct service_key key = { .addr = daddr, .port = dport, .proto = proto, .pad = 0 };
		if (bpf_map_lookup_elem(&services, &key))
			return to_worker(ctx, mix(saddr ^ mix(sport)) % n);
		return XDP_PASS;
	}
	if (proto == IPPROTO_ICMP && bpf_map_lookup_elem(&vips, &daddr))
		return to_worker(ctx, mix(saddr) % n);
	return XDP_PASS;
}

SEC("socket")
int tun_steer(struct __sk_buff *skb)
{
	// The TUN device is layer 3: the packet starts with its IP header.
	__u8 ip[20];
	if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)) < 0 || (ip[0] >> 4) != 4)
		return 0;
	__u32 zero = 0;
	__u32 *workers = bpf_map_lookup_elem(&settings, &zero);
	if (!workers || *workers == 0 || *workers > MAX_WORKERS)
		return 0;
	__u32 n = *workers;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	__u8 proto = ip[9];
	__u32 saddr, daddr;
	__builtin_memcpy(&saddr, ip + 12, 4);
	__builtin_memcpy(&daddr, ip + 16, 4);
	int first = ((ip[6] & 0x1f) | ip[7]) == 0;
	__u8 l4[4];
	int ports = first && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ihl >= 20 && ihl <= 60 &&
		    bpf_skb_load_bytes(skb, ihl, l4, sizeof(l4)) == 0;
	__u16 sport = 0, dport = 0;
	if (ports) {
		__builtin_memcpy(&sport, l4, 2);
		__builtin_memcpy(&dport, l4 + 2, 2);
	}
	if (bpf_map_lookup_elem(&laddrs, &daddr)) {
		__u32 port = ((__u32)(dport & 0xff) << 8) | (dport >> 8);
		return ports ? port % n : 0;
	}
	if (ports)
		return mix(saddr ^ mix(sport)) % n;
	return mix(saddr) % n;
}

char _license[] SEC("license") = "GPL";
