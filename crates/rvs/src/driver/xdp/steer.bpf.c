// SPDX-License-Identifier: Apache-2.0
//
// rvs's XDP program: steers the balancer's own traffic to its AF_XDP sockets
// and passes everything else to the kernel.
//
// Redirected (to the socket of this interface for the chosen worker):
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
// crates/rvs/build.rs with `clang -O2 -target bpf`.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };
enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_XSKMAP = 17 };

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

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

// Keep in step with crates/rvs/src/driver/xdp/mod.rs.
#define MAX_SLOTS 1024

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

// Interface index -> first slot of its sockets in `xsks` (one per worker).
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

static __attribute__((always_inline)) int to_worker(struct xdp_md *ctx, __u32 worker)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!base)
		return XDP_PASS;
	__u32 slot = *base + worker;
	if (slot >= MAX_SLOTS)
		return XDP_PASS;
	// No socket in the slot: the kernel gets the packet (low bits of flags).
	return bpf_redirect_map(&xsks, slot, XDP_PASS);
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
	if (!workers || *workers == 0)
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

char _license[] SEC("license") = "GPL";
