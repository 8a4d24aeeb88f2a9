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
// Steered to a worker (IPv4 and IPv6 alike):
//   - TCP or UDP to a service's VIP:port, to worker
//     hash(src ip, src port) % workers, so a flow always reaches one worker;
//   - any packet to a LIP: TCP/UDP to worker dst_port % workers (the worker
//     that owns that local port, rvs_core::WorkerSlice::owns), other
//     protocols to worker 0;
//   - an ICMP or ICMPv6 error to a VIP or LIP, by the packet it quotes (ours,
//     so its source is the VIP or LIP): to the worker its flow's own packets
//     go to; when the quote cannot be read, to a VIP by hash(src ip), to a
//     LIP to worker 0. Other ICMP to a VIP (echo) by hash(src ip).
// Passed to the kernel: ARP, and ICMPv6 other than errors (neighbour and
// router discovery, echo: the kernel answers solicitations for VIPs and LIPs
// from its proxy entries), fragments after the first to a VIP, other ports
// of a VIP address, and everything addressed to anyone else (the host's own
// traffic). IPv6 extension headers (hop-by-hop, routing, destination
// options, fragment) are walked to the transport header, up to
// MAX_EXT_HEADERS of them.
//
// Before steering, two stages may take a TCP or UDP packet, each switched by
// a bit of settings[1] (both off: steering is all there is): the fast path
// (fast_path.bpf.h) rewrites and sends on the packets of established
// connections the engine installed, exactly as the engine would; SYN
// cookies (syn_cookie.bpf.h) answer a SYNProxy service's SYNs and check
// their ACKs. What they leave goes on to steering.
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
	BPF_MAP_TYPE_LRU_HASH = 9,
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
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_csum_diff)(__u32 *from, __u32 from_size, __u32 *to, __u32 to_size, __u32 seed) = (void *)28;
static long (*bpf_xdp_load_bytes)(struct xdp_md *ctx, __u32 offset, void *buf, __u32 len) = (void *)189;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_xdp_adjust_tail)(struct xdp_md *ctx, int delta) = (void *)65;
static long (*bpf_xdp_store_bytes)(struct xdp_md *ctx, __u32 off, void *buf, __u32 len) = (void *)190;

// Keep in step with crates/rvs/src/driver/xdp/mod.rs.
#define MAX_SLOTS 1024
#define MAX_WORKERS 16

struct service_key {
	__u32 addr; // network order
	__u16 port; // network order
	__u8 proto;
	__u8 pad;
};

struct service6_key {
	__u32 addr[4]; // network order
	__u16 port; // network order
	__u8 proto;
	__u8 pad;
};

// (VIP, port, protocol) of every IPv4 service -> 1.
struct bpf_map_def SEC("maps") services = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct service_key),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// IPv4 VIP addresses (network order) -> 1.
struct bpf_map_def SEC("maps") vips = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// IPv4 LIP addresses (network order) -> 1.
struct bpf_map_def SEC("maps") laddrs = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

// The same three for IPv6.
struct bpf_map_def SEC("maps") services6 = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct service6_key),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

struct bpf_map_def SEC("maps") vips6 = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 16,
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

struct bpf_map_def SEC("maps") laddrs6 = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 16,
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

// [0]: the number of workers; 0 passes everything. [1]: which stages run
// before steering; with none, steering is all there is.
#define FAST_PATH_ON 1
#define SYN_COOKIES_ON 2
struct bpf_map_def SEC("maps") settings = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 2,
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

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60
// Extension headers walked to the transport header; behind more, a packet
// counts as having no ports.
#define MAX_EXT_HEADERS 4
// The worker for a packet that goes to the kernel instead.
#define PASS -1

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

// What steering reads of a packet, addresses and ports in network order.
struct flow {
	__u32 saddr[4]; // IPv4: [0] only
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 v6;
	__u8 proto;
	// sport and dport were read: TCP or UDP, the first (or only) fragment.
	__u8 ports;
	__u8 icmp;
};

enum { ICMP_NONE, ICMP_ERROR, ICMP_OTHER };

static __attribute__((always_inline)) int is_ext_header(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT;
}

// Whether an ICMP (IPv4) or ICMPv6 type is an error that quotes a packet:
// destination unreachable, time exceeded, parameter problem; for ICMPv6
// also packet too big (every type below 128).
static __attribute__((always_inline)) int icmp_kind(const struct flow *f, __u8 type)
{
	if (f->v6)
		return type < 128 ? ICMP_ERROR : ICMP_OTHER;
	return type == 3 || type == 11 || type == 12 ? ICMP_ERROR : ICMP_OTHER;
}

// The flow's hash: hash(src ip, src port), over all of an IPv6 source.
static __attribute__((always_inline)) __u32 flow_hash(const struct flow *f)
{
	__u32 h = mix(f->sport);
	if (f->v6)
		h = mix(f->saddr[3] ^ mix(f->saddr[2] ^ mix(f->saddr[1] ^ h)));
	return mix(f->saddr[0] ^ h);
}

static __attribute__((always_inline)) int is_lip(const struct flow *f)
{
	return f->v6 ? bpf_map_lookup_elem(&laddrs6, f->daddr) != 0 : bpf_map_lookup_elem(&laddrs, f->daddr) != 0;
}

static __attribute__((always_inline)) int is_vip(const struct flow *f)
{
	return f->v6 ? bpf_map_lookup_elem(&vips6, f->daddr) != 0 : bpf_map_lookup_elem(&vips, f->daddr) != 0;
}

static __attribute__((always_inline)) int is_service(const struct flow *f)
{
	if (f->v6) {
		struct service6_key key = { .port = f->dport, .proto = f->proto, .pad = 0 };
		__builtin_memcpy(key.addr, f->daddr, 16);
		return bpf_map_lookup_elem(&services6, &key) != 0;
	}
	struct service_key key = { .addr = f->daddr[0], .port = f->dport, .proto = f->proto, .pad = 0 };
	return bpf_map_lookup_elem(&services, &key) != 0;
}

// The worker that owns local port `port` (network order).
static __attribute__((always_inline)) __u32 port_owner(__u16 port, __u32 n)
{
	return (((__u32)(port & 0xff) << 8) | (port >> 8)) % n;
}

// An ICMP error is steered like the packets of the flow it quotes: the
// quoted packet went from us (a VIP or LIP) to the peer, so its
// destination is the flow's source and its source port ours.
static __attribute__((always_inline)) void take_quoted(struct flow *f, const struct flow *quoted)
{
	__builtin_memcpy(f->saddr, quoted->daddr, 16);
	f->sport = quoted->dport;
	f->dport = quoted->sport;
	f->proto = quoted->proto;
	f->ports = 1;
	f->icmp = ICMP_NONE;
}

// The worker `steer` sends a packet to, or PASS.
static __attribute__((always_inline)) int pick(const struct flow *f, __u32 n)
{
	// Neighbour and router discovery are the kernel's, to a LIP as well.
	if (f->v6 && f->icmp == ICMP_OTHER)
		return PASS;
	if (is_lip(f))
		return f->ports ? port_owner(f->dport, n) : 0;
	if (f->ports)
		return is_service(f) ? flow_hash(f) % n : PASS;
	if (f->icmp != ICMP_NONE && is_vip(f))
		return flow_hash(f) % n;
	return PASS;
}

// Read the IPv4 header at `ip` into `f`; the transport header's start, or
// 0 for a later fragment; -1 when `ip` holds no IPv4 header.
static __attribute__((always_inline)) long xdp_ipv4(__u8 *ip, __u8 *end, struct flow *f, __u8 **l4)
{
	if (ip + 20 > end || (ip[0] >> 4) != 4)
		return -1;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return -1;
	f->v6 = 0;
	f->proto = ip[9];
	f->saddr[0] = *(__u32 *)(ip + 12);
	f->daddr[0] = *(__u32 *)(ip + 16);
	// Only a first (or unfragmented) piece carries the ports.
	*l4 = ((ip[6] & 0x1f) | ip[7]) == 0 ? ip + ihl : 0;
	return 0;
}

// The same for an IPv6 header and its extension headers.
static __attribute__((always_inline)) long xdp_ipv6(__u8 *ip, __u8 *end, struct flow *f, __u8 **l4)
{
	if (ip + 40 > end || (ip[0] >> 4) != 6)
		return -1;
	f->v6 = 1;
	__builtin_memcpy(f->saddr, ip + 8, 16);
	__builtin_memcpy(f->daddr, ip + 24, 16);
	__u8 nh = ip[6];
	__u8 *p = ip + 40;
	int first = 1;
#pragma unroll
	for (int i = 0; i < MAX_EXT_HEADERS; i++) {
		if (!is_ext_header(nh))
			break;
		if (p + 8 > end)
			return -1;
		// The fragment header is 8 bytes; the others give theirs in 8-byte
		// units, not counting the first 8.
		__u32 len = nh == IPPROTO_FRAGMENT ? 8 : ((__u32)p[1] + 1) * 8;
		if (nh == IPPROTO_FRAGMENT && (((__u32)p[2] << 8 | p[3]) & 0xfff8))
			first = 0;
		nh = p[0];
		p += len;
	}
	f->proto = nh;
	*l4 = first ? p : 0;
	return 0;
}

static __attribute__((always_inline)) long xdp_ip(__u8 *ip, __u8 *end, int v6, struct flow *f, __u8 **l4)
{
	return v6 ? xdp_ipv6(ip, end, f, l4) : xdp_ipv4(ip, end, f, l4);
}

#include "fast_path.bpf.h" // established flows
#include "syn_cookie.bpf.h" // SYN cookies for SYNProxy services

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
	if (data + 14 > data_end)
		return XDP_PASS;
	int v6;
	if (data[12] == 0x08 && data[13] == 0x00)
		v6 = 0;
	else if (data[12] == 0x86 && data[13] == 0xdd)
		v6 = 1;
	else
		return XDP_PASS;
	struct flow f = {};
	__u8 *l4;
	if (xdp_ip(data + 14, data_end, v6, &f, &l4) < 0)
		return XDP_PASS;
	__u32 zero = 0;
	__u32 *workers = bpf_map_lookup_elem(&settings, &zero);
	if (!workers || *workers == 0 || *workers > MAX_WORKERS)
		return XDP_PASS;
	__u32 n = *workers;
	if (l4 && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP) && l4 + 4 <= data_end) {
		f.sport = *(__u16 *)l4;
		f.dport = *(__u16 *)(l4 + 2);
		f.ports = 1;
		long r = fast_path(ctx, &f, l4, data_end);
		if (r >= 0)
			return r;
		if (r == FP_MISS && f.proto == IPPROTO_TCP) {
			r = syn_cookie(ctx, &f, l4, data_end);
			if (r >= 0)
				return r;
		}
	} else if (l4 && f.proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP) && l4 + 1 <= data_end) {
		f.icmp = icmp_kind(&f, l4[0]);
		struct flow quoted = {};
		__u8 *ql4;
		// The quoted packet follows the 8-byte ICMP header.
		if (f.icmp == ICMP_ERROR && xdp_ip(l4 + 8, data_end, v6, &quoted, &ql4) == 0 && ql4 &&
		    (quoted.proto == IPPROTO_TCP || quoted.proto == IPPROTO_UDP) && ql4 + 4 <= data_end) {
			quoted.sport = *(__u16 *)ql4;
			quoted.dport = *(__u16 *)(ql4 + 2);
			take_quoted(&f, &quoted);
		}
	}
	int worker = pick(&f, n);
	return worker == PASS ? XDP_PASS : to_worker(ctx, worker);
}

// Read the IPv4 header at `off` into `f`; the transport header's offset, or
// 0 for a later fragment; -1 when there is no IPv4 header.
static __attribute__((always_inline)) long skb_ipv4(struct __sk_buff *skb, __u32 off, struct flow *f, __u32 *l4)
{
	__u8 ip[20];
	if (bpf_skb_load_bytes(skb, off, ip, sizeof(ip)) < 0 || (ip[0] >> 4) != 4)
		return -1;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return -1;
	f->v6 = 0;
	f->proto = ip[9];
	__builtin_memcpy(&f->saddr[0], ip + 12, 4);
	__builtin_memcpy(&f->daddr[0], ip + 16, 4);
	*l4 = ((ip[6] & 0x1f) | ip[7]) == 0 ? off + ihl : 0;
	return 0;
}

// The same for an IPv6 header and its extension headers.
static __attribute__((always_inline)) long skb_ipv6(struct __sk_buff *skb, __u32 off, struct flow *f, __u32 *l4)
{
	__u8 ip[40];
	if (bpf_skb_load_bytes(skb, off, ip, sizeof(ip)) < 0 || (ip[0] >> 4) != 6)
		return -1;
	f->v6 = 1;
	__builtin_memcpy(f->saddr, ip + 8, 16);
	__builtin_memcpy(f->daddr, ip + 24, 16);
	__u8 nh = ip[6];
	__u32 p = off + 40;
	int first = 1;
#pragma unroll
	for (int i = 0; i < MAX_EXT_HEADERS; i++) {
		if (!is_ext_header(nh))
			break;
		__u8 ext[4];
		if (bpf_skb_load_bytes(skb, p, ext, sizeof(ext)) < 0)
			return -1;
		__u32 len = nh == IPPROTO_FRAGMENT ? 8 : ((__u32)ext[1] + 1) * 8;
		if (nh == IPPROTO_FRAGMENT && (((__u32)ext[2] << 8 | ext[3]) & 0xfff8))
			first = 0;
		nh = ext[0];
		p += len;
	}
	f->proto = nh;
	*l4 = first ? p : 0;
	return 0;
}

static __attribute__((always_inline)) long skb_ip(struct __sk_buff *skb, __u32 off, int v6, struct flow *f, __u32 *l4)
{
	return v6 ? skb_ipv6(skb, off, f, l4) : skb_ipv4(skb, off, f, l4);
}

SEC("socket")
int tun_steer(struct __sk_buff *skb)
{
	// The TUN device is layer 3: the packet starts with its IP header.
	__u8 version;
	if (bpf_skb_load_bytes(skb, 0, &version, 1) < 0)
		return 0;
	int v6 = (version >> 4) == 6;
	struct flow f = {};
	__u32 l4;
	if (skb_ip(skb, 0, v6, &f, &l4) < 0)
		return 0;
	__u32 zero = 0;
	__u32 *workers = bpf_map_lookup_elem(&settings, &zero);
	if (!workers || *workers == 0 || *workers > MAX_WORKERS)
		return 0;
	__u32 n = *workers;
	__u8 head[4];
	if (l4 && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP) &&
	    bpf_skb_load_bytes(skb, l4, head, sizeof(head)) == 0) {
		__builtin_memcpy(&f.sport, head, 2);
		__builtin_memcpy(&f.dport, head + 2, 2);
		f.ports = 1;
	} else if (l4 && f.proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP) &&
		   bpf_skb_load_bytes(skb, l4, head, 1) == 0) {
		f.icmp = icmp_kind(&f, head[0]);
		struct flow quoted = {};
		__u32 ql4;
		if (f.icmp == ICMP_ERROR && skb_ip(skb, l4 + 8, v6, &quoted, &ql4) == 0 && ql4 &&
		    (quoted.proto == IPPROTO_TCP || quoted.proto == IPPROTO_UDP) &&
		    bpf_skb_load_bytes(skb, ql4, head, sizeof(head)) == 0) {
			__builtin_memcpy(&quoted.sport, head, 2);
			__builtin_memcpy(&quoted.dport, head + 2, 2);
			take_quoted(&f, &quoted);
		}
	}
	// Everything here was routed to rvs: no service check.
	if (is_lip(&f))
		return f.ports ? port_owner(f.dport, n) : 0;
	return flow_hash(&f) % n;
}

char _license[] SEC("license") = "GPL";
