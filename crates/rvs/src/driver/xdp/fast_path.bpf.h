// SPDX-License-Identifier: Apache-2.0
//
// The fast path of `steer`: packets of established connections that the
// engine installed in `flows` are rewritten here and sent on at once, with
// the bytes the engine would have produced (crates/core/src/nat.rs
// `forward`, crates/core/src/packet.rs `rewrite`): the same fields, the same
// incremental checksum updates in the same order (RFC 1624 equation 3, as
// rvs_wire::checksum's update_addr, update16, update32 and update_bytes).
//
// Only what can be done exactly is forwarded: IPv4 without options and not
// a fragment, IPv6 without extension headers, TTL or hop limit above 1 when
// it is decremented; TCP with ACK and without SYN, FIN or RST, whose options
// are none, NOP NOP TS, NOP NOP SACK (1 to 4 blocks) or NOP NOP TS NOP NOP
// SACK (1 to 3 blocks); UDP. Everything else of an installed flow goes to
// the engine (FP_ENGINE), which stays the one place where connection state
// changes.
//
// A sender with checksum offload (a veth's peer, generic XDP) leaves only
// the pseudo-header sum in the TCP or UDP checksum; the AF_XDP driver
// completes it before the engine sees the packet
// (rvs_wire::checksum::complete_partial_ipv4), and the program does the same
// over the whole segment. Segments longer than FP_SUM_MAX bytes (merged by
// GRO before generic XDP) are the engine's. (Generic XDP sends such an skb
// on still marked for offload: a veth's receiver then trusts it, but a NIC
// that finishes checksums would add the segment again. Offloading senders
// are local or virtual, so only a lab's veths meet this.)
//
// Included by steer.bpf.c after its own definitions.

// fast_path()'s answers other than an XDP action.
#define FP_MISS -1
#define FP_ENGINE -2

// struct flow_rule.kind
enum { FLOW_FORWARD = 1, FLOW_ENGINE = 2 };
// struct flow_rule.flags
#define FLOW_DECREMENT_TTL 1
#define FLOW_RESCALE 2
// struct flow_rule.seen
#define FLOW_SEEN_SEQ 1
#define FLOW_SEEN_ACK 2
#define FLOW_SEEN_TSVAL 4

#define MAX_FLOWS (1 << 20)
#define LIVE_REALS 65536

// One direction of an offloaded connection, keyed by the packet's `struct
// flow` as steer() parses it. Keep in step with fast_path.rs (BpfFlowRule).
struct flow_rule {
	__u32 saddr[4], daddr[4]; // new addresses, network order (IPv4: [0])
	__u16 sport, dport; // new ports, network order
	__u32 seq_add; // added to SEQ
	__u32 ack_sub; // subtracted from ACK and SACK block edges
	__u32 tsval_add; // added to TSval
	__u32 tsecr_sub; // subtracted from TSecr
	__u8 kind;
	__u8 real_wscale, client_wscale;
	__u8 flags;
	__u32 real_gen; // live iff live_reals[real_gen % LIVE_REALS] == real_gen != 0
	__u32 ifindex; // egress: XDP_TX when it is the ingress interface
	__u8 dmac[6], smac[6];
	__u64 packets, bytes; // IP packet bytes, as the engine counts them
	__u64 last_seen; // bpf_ktime_get_ns()
	// Where the last TCP segment forwarded ended (SEQ + payload) and what
	// it acknowledged, as received, and its TSval as sent: the engine's
	// view of how far each side got (its RSTs, its close, PAWS) follows
	// these while the connection's packets pass here. Plain stores: a
	// race leaves one segment's values, as good as the other's.
	__u32 seq_end, ack, tsval;
	__u32 seen; // FLOW_SEEN_* of the fields above
};

struct bpf_map_def SEC("maps") flows = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct flow),
	.value_size = sizeof(struct flow_rule),
	.max_entries = MAX_FLOWS,
};

// A real's generation in its slot while the real is live; the driver zeroes
// the slot (one 4-byte write) to take all its flows off the fast path at once.
struct bpf_map_def SEC("maps") live_reals = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = LIVE_REALS,
};

// Per-CPU counters of both stages, by these indexes (fast_path.rs names them
// too); room is left for more.
enum {
	FP_FORWARDED,
	FP_BYTES,
	FP_TO_ENGINE,
	SC_SYNACKS,
	SC_ACKS_PASSED,
	SC_BAD_COOKIE,
	SC_NO_KEY,
	SC_RST_PASSED,
	FAST_STATS = 16,
};
struct bpf_map_def SEC("maps") fast_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = FAST_STATS,
};

// Segment bytes a partial checksum is completed over, FP_CHUNK at a time.
#define FP_CHUNK 512
#define FP_SUM_MAX 2048

// Per CPU: one chunk of a segment whose checksum is being completed.
struct bpf_map_def SEC("maps") fp_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = FP_CHUNK,
	.max_entries = 1,
};


#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define fp_ntohs(x) __builtin_bswap16(x)
#define fp_ntohl(x) __builtin_bswap32(x)
#else
#define fp_ntohs(x) (x)
#define fp_ntohl(x) (x)
#endif

static __attribute__((always_inline)) void fp_count(__u32 what, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&fast_stats, &what);
	if (c)
		*c += n;
}

static __attribute__((always_inline)) long fp_engine(void)
{
	fp_count(FP_TO_ENGINE, 1);
	return FP_ENGINE;
}

// Folds a sum to 16 bits with end-around carry, as rvs_wire::checksum's
// fold64 (four rounds reach 16 bits from below 2^34, and a folded value
// stays as it is).
static __attribute__((always_inline)) __u16 fp_fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

// RFC 1624 equation 3 with folded sums of the old and new data:
// rvs_wire::checksum::update16 (and, with folded inputs, the others).
static __attribute__((always_inline)) __u16 fp_update(__u16 check, __u16 old, __u16 new)
{
	return ~fp_fold((__u32)(__u16)~check + (__u32)(__u16)~old + (__u32) new);
}

// update32: a 32-bit field, host order.
static __attribute__((always_inline)) __u16 fp_update32(__u16 check, __u32 old, __u32 new)
{
	return fp_update(check, fp_fold(old), fp_fold(new));
}

// update_bytes of 8 bytes at an even offset: two 32-bit words, host order.
static __attribute__((always_inline)) __u16 fp_update64(__u16 check, __u32 old_a, __u32 old_b, __u32 new_a,
							 __u32 new_b)
{
	return fp_update(check, fp_fold((__u64)old_a + old_b), fp_fold((__u64)new_a + new_b));
}

// The folded sum of an address (network-order words; IPv4 in the first).
static __attribute__((always_inline)) __u16 fp_addr_sum(const __u32 *a, int v6)
{
	__u64 s = fp_ntohl(a[0]);
	if (v6)
		s += (__u64)fp_ntohl(a[1]) + fp_ntohl(a[2]) + fp_ntohl(a[3]);
	return fp_fold(s);
}

// update_addr of the source and then the destination address.
static __attribute__((always_inline)) __u16 fp_update_addrs(__u16 check, const struct flow *f,
							     const struct flow_rule *r)
{
	check = fp_update(check, fp_addr_sum(f->saddr, f->v6), fp_addr_sum(r->saddr, f->v6));
	return fp_update(check, fp_addr_sum(f->daddr, f->v6), fp_addr_sum(r->daddr, f->v6));
}

static __attribute__((always_inline)) __u16 fp_get16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __attribute__((always_inline)) __u32 fp_get32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __attribute__((always_inline)) void fp_put16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __attribute__((always_inline)) void fp_put32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __attribute__((always_inline)) int fp_live(__u32 gen)
{
	__u32 slot = gen & (LIVE_REALS - 1);
	__u32 *live = bpf_map_lookup_elem(&live_reals, &slot);
	return gen != 0 && live && *live == gen;
}

// The folded pseudo-header sum of the packet's segment of `len` bytes.
static __attribute__((always_inline)) __u16 fp_pseudo(const struct flow *f, __u32 len)
{
	return fp_fold((__u64)fp_addr_sum(f->saddr, f->v6) + fp_addr_sum(f->daddr, f->v6) + f->proto + (len >> 16) +
		       (len & 0xffff));
}

// The folded sum of the `len` bytes of the frame from `off` (the segment,
// at an even offset of the checksummed data); -1 when it cannot be read.
static __attribute__((always_inline)) long fp_sum(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u32 zero = 0;
	__u8 *buf = bpf_map_lookup_elem(&fp_scratch, &zero);
	if (!buf || len > FP_SUM_MAX)
		return -1;
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < FP_SUM_MAX / FP_CHUNK; i++) {
		__u32 done = i * FP_CHUNK;
		if (done >= len)
			break;
		__u32 n = len - done;
		if (n > FP_CHUNK)
			n = FP_CHUNK;
		if (n < 1)
			break;
		// The bytes past the segment in its last word count as zeros.
		*(__u32 *)(buf + ((n - 1) & (FP_CHUNK - 4))) = 0;
		if (bpf_xdp_load_bytes(ctx, off + done, buf, n) < 0)
			return -1;
		__u64 size = (n + 3) & ~3;
		// The compiler knows this bound already and would drop the check;
		// the verifier's arithmetic does not, so it must see it.
		asm volatile("" : "+r"(size));
		if (size > FP_CHUNK)
			size = FP_CHUNK;
		sum += (__u32)bpf_csum_diff(0, 0, (__u32 *)buf, size, 0);
	}
	// bpf_csum_diff adds words as the CPU loads them: byte-swapped sums
	// on a little-endian one.
	return fp_ntohs(fp_fold(sum));
}

// The checksum the engine would rewrite: the stored one, or, when it holds
// only the pseudo-header sum and does not verify, the whole checksum over
// the segment of `len` bytes at frame offset `off` (as
// rvs_wire::checksum::complete_segment; a UDP zero becomes 0xffff). -1 when
// the program cannot tell.
static __attribute__((always_inline)) long fp_checksum(struct xdp_md *ctx, const struct flow *f, __u32 off,
						       __u32 len, __u16 stored)
{
	__u16 pseudo = fp_pseudo(f, len);
	if (stored != pseudo)
		return stored;
	long data = fp_sum(ctx, off, len);
	if (data < 0)
		return -1;
	if (fp_fold((__u64)pseudo + data) == 0xffff)
		return stored;
	__u16 check = ~(__u16)data;
	return check == 0 && f->proto == IPPROTO_UDP ? 0xffff : check;
}

// Where the TCP options the program translates sit, as offsets into the
// options area; 0 for none.
struct fp_options {
	__u32 ts; // the TSval field
	__u32 sack; // the first SACK block
	__u32 blocks;
};

// The layout of a TCP options area of `len` bytes at `o`; -1 when it is not
// one the program translates.
static __attribute__((always_inline)) long fp_layout(const __u8 *o, const __u8 *end, __u32 len,
						     struct fp_options *l)
{
	if (len == 0)
		return 0;
	if (o + 4 > end || o[0] != 1 || o[1] != 1)
		return -1;
	// A SACK option is 2 + 8n bytes, n from 1 to 4 (what fits).
	if (o[2] == 8 && o[3] == 10) {
		l->ts = 4;
		if (len == 12)
			return 0;
		if (len < 24 || (len - 16) % 8 || o + 16 > end || o[12] != 1 || o[13] != 1 || o[14] != 5 ||
		    o[15] != len - 14)
			return -1;
		l->sack = 16;
		l->blocks = (len - 16) / 8;
		return 0;
	}
	if (o[2] == 5 && len >= 12 && len <= 36 && (len - 4) % 8 == 0 && o[3] == len - 2) {
		l->sack = 4;
		l->blocks = (len - 4) / 8;
		return 0;
	}
	return -1;
}

// Translate the SACK blocks at `o` + l->sack; the checksum.
static __attribute__((always_inline)) __u16 fp_sack(__u8 *o, const __u8 *end, const struct fp_options *l,
						     __u32 ack_sub, __u16 check)
{
#pragma unroll
	for (__u32 i = 0; i < 4; i++) {
		if (i >= l->blocks)
			break;
		__u8 *b = o + l->sack + 8 * i;
		if (b + 8 > end)
			break;
		__u32 left = fp_get32(b), right = fp_get32(b + 4);
		check = fp_update64(check, left, right, left - ack_sub, right - ack_sub);
		fp_put32(b, left - ack_sub);
		fp_put32(b + 4, right - ack_sub);
	}
	return check;
}

// The engine's rewrite_options for the layouts fp_layout accepts, of a
// segment with ACK set; the checksum.
static __attribute__((always_inline)) __u16 fp_options(__u8 *o, const __u8 *end, const struct fp_options *l,
							const struct flow_rule *r, __u16 check)
{
	int ts = l->ts && (r->tsval_add || r->tsecr_sub);
	if (ts && o + 12 <= end) {
		__u32 val = fp_get32(o + 4), ecr = fp_get32(o + 8);
		__u32 new_val = val + r->tsval_add, new_ecr = ecr - r->tsecr_sub;
		// NOP NOP TS alone is updated word by word, the rest as 8-byte runs.
		if (!l->sack) {
			check = fp_update32(check, val, new_val);
			check = fp_update32(check, ecr, new_ecr);
		} else {
			check = fp_update64(check, val, ecr, new_val, new_ecr);
		}
		fp_put32(o + 4, new_val);
		fp_put32(o + 8, new_ecr);
	}
	if (l->sack && r->ack_sub)
		check = fp_sack(o, end, l, r->ack_sub, check);
	return check;
}

// Rewrite the TCP segment at `t` (`len` bytes, checked); FP_ENGINE when the
// program cannot. Nothing is written before everything is checked.
static __attribute__((always_inline)) long fp_tcp(struct xdp_md *ctx, __u8 *t, __u8 *end, const struct flow *f,
						  struct flow_rule *r, __u32 off, __u32 len)
{
	if (len < 20 || t + 20 > end)
		return FP_ENGINE;
	__u32 header = (t[12] >> 4) * 4;
	__u8 flags = t[13];
	// ACK, and neither SYN, FIN nor RST.
	if (header < 20 || header > len || (flags & 0x17) != 0x10)
		return FP_ENGINE;
	struct fp_options l = {};
	if (fp_layout(t + 20, end, header - 20, &l) < 0)
		return FP_ENGINE;
	long whole = fp_checksum(ctx, f, off, len, fp_get16(t + 16));
	if (whole < 0)
		return FP_ENGINE;
	__u32 seen = FLOW_SEEN_SEQ | FLOW_SEEN_ACK;
	r->seq_end = fp_get32(t + 4) + (len - header);
	r->ack = fp_get32(t + 8);
	if (l.ts && t + 32 <= end) {
		r->tsval = fp_get32(t + 24) + r->tsval_add;
		seen |= FLOW_SEEN_TSVAL;
	}
	r->seen = seen;
	__u16 check = fp_update_addrs(whole, f, r);
	check = fp_update(check, fp_ntohs(f->sport), fp_ntohs(r->sport));
	check = fp_update(check, fp_ntohs(f->dport), fp_ntohs(r->dport));
	*(__u16 *)t = r->sport;
	*(__u16 *)(t + 2) = r->dport;
	if (r->seq_add) {
		__u32 seq = fp_get32(t + 4);
		check = fp_update32(check, seq, seq + r->seq_add);
		fp_put32(t + 4, seq + r->seq_add);
	}
	if (r->ack_sub) {
		__u32 ack = fp_get32(t + 8);
		check = fp_update32(check, ack, ack - r->ack_sub);
		fp_put32(t + 8, ack - r->ack_sub);
	}
	if (header > 20 && (r->ack_sub || r->tsval_add || r->tsecr_sub))
		check = fp_options(t + 20, end, &l, r, check);
	fp_put16(t + 16, check);
	if (r->flags & FLOW_RESCALE) {
		__u16 old = fp_get16(t + 14);
		__u64 bytes = (__u64)old << (r->real_wscale & 15);
		__u64 scaled = bytes >> (r->client_wscale & 15);
		__u16 new = scaled > 0xffff ? 0xffff : scaled;
		fp_put16(t + 16, fp_update(check, old, new));
		fp_put16(t + 14, new);
	}
	return 0;
}

// Rewrite the UDP datagram at `u` (`len` bytes, checked); FP_ENGINE when
// the program cannot.
static __attribute__((always_inline)) long fp_udp(struct xdp_md *ctx, __u8 *u, __u8 *end, const struct flow *f,
						  const struct flow_rule *r, __u32 off, __u32 len)
{
	if (len < 8 || u + 8 > end)
		return FP_ENGINE;
	__u32 field = fp_get16(u + 4);
	__u16 stored = fp_get16(u + 6);
	// Over IPv6 a zero checksum is invalid (the engine drops it).
	if (field < 8 || field > len || (stored == 0 && f->v6))
		return FP_ENGINE;
	long whole = stored ? fp_checksum(ctx, f, off, len, stored) : 0;
	if (whole < 0)
		return FP_ENGINE;
	*(__u16 *)u = r->sport;
	*(__u16 *)(u + 2) = r->dport;
	// RFC 768: over IPv4 a zero checksum means none; it stays so.
	if (stored == 0)
		return 0;
	__u16 check = fp_update_addrs(whole, f, r);
	check = fp_update(check, fp_ntohs(f->sport), fp_ntohs(r->sport));
	check = fp_update(check, fp_ntohs(f->dport), fp_ntohs(r->dport));
	fp_put16(u + 6, check ? check : 0xffff);
	return 0;
}

// The IP header's checks; the IP packet's length (from its header), or
// FP_ENGINE.
static __attribute__((always_inline)) long fp_ip_len(struct xdp_md *ctx, const __u8 *ip, const __u8 *end,
						     const struct flow *f, const struct flow_rule *r)
{
	__u32 room = ctx->data_end - ctx->data - 14;
	int decrement = r->flags & FLOW_DECREMENT_TTL;
	if (f->v6) {
		if (ip + 40 > end || ip[6] != f->proto || (decrement && ip[7] <= 1))
			return FP_ENGINE;
		long len = 40 + fp_get16(ip + 4);
		return len <= room ? len : FP_ENGINE;
	}
	// Version 4 with no options; neither more fragments nor an offset.
	if (ip + 20 > end || ip[0] != 0x45 || (ip[6] & 0x3f) || ip[7] || (decrement && ip[8] <= 1))
		return FP_ENGINE;
	long len = fp_get16(ip + 2);
	return len >= 20 && len <= room ? len : FP_ENGINE;
}

// New addresses (and TTL) in the IP header, as rewrite_ip_header.
static __attribute__((always_inline)) void fp_ip(__u8 *ip, __u8 *end, const struct flow *f,
						  const struct flow_rule *r)
{
	int decrement = r->flags & FLOW_DECREMENT_TTL;
	if (f->v6) {
		if (ip + 40 > end)
			return;
		__builtin_memcpy(ip + 8, r->saddr, 16);
		__builtin_memcpy(ip + 24, r->daddr, 16);
		if (decrement)
			ip[7] -= 1;
		return;
	}
	if (ip + 20 > end)
		return;
	__u16 check = fp_update_addrs(fp_get16(ip + 10), f, r);
	__builtin_memcpy(ip + 12, r->saddr, 4);
	__builtin_memcpy(ip + 16, r->daddr, 4);
	if (decrement) {
		__u8 ttl = ip[8];
		check = fp_update(check, ((__u16)ttl << 8) | ip[9], ((__u16)(ttl - 1) << 8) | ip[9]);
		ip[8] = ttl - 1;
	}
	fp_put16(ip + 10, check);
}

// Mark the entry `r` of `f` and the other direction's as the engine's.
static __attribute__((always_inline)) void fp_hand_back(const struct flow *f, struct flow_rule *r)
{
	struct flow back = {};
	__builtin_memcpy(back.saddr, r->daddr, sizeof(back.saddr));
	__builtin_memcpy(back.daddr, r->saddr, sizeof(back.daddr));
	back.sport = r->dport;
	back.dport = r->sport;
	back.v6 = f->v6;
	back.proto = f->proto;
	back.ports = 1;
	r->kind = FLOW_ENGINE;
	struct flow_rule *other = bpf_map_lookup_elem(&flows, &back);
	if (other)
		other->kind = FLOW_ENGINE;
}

// The fast path for a packet whose flow `f` steer() parsed (TCP or UDP, the
// first or only fragment): an XDP action, FP_MISS (no entry: steering as
// before) or FP_ENGINE (the packet goes to the engine).
static __attribute__((always_inline)) long fast_path(struct xdp_md *ctx, struct flow *f, __u8 *l4, __u8 *end)
{
	__u32 one = 1;
	__u32 *on = bpf_map_lookup_elem(&settings, &one);
	if (!on || !(*on & FAST_PATH_ON))
		return FP_MISS;
	struct flow_rule *r = bpf_map_lookup_elem(&flows, f);
	if (!r)
		return FP_MISS;
	if (r->kind != FLOW_FORWARD || !fp_live(r->real_gen))
		return fp_engine();
	// A FIN or RST ends the connection's time here at once, both ways: the
	// rest of the close (the peer's ACK of it too) reaches the engine even
	// before the engine takes the entries out.
	if (f->proto == IPPROTO_TCP && l4 + 14 <= end && (l4[13] & 0x05)) {
		fp_hand_back(f, r);
		return fp_engine();
	}
	__u8 *data = (__u8 *)(long)ctx->data;
	end = (__u8 *)(long)ctx->data_end;
	if (data + 14 > end)
		return fp_engine();
	__u8 *ip = data + 14;
	long len = fp_ip_len(ctx, ip, end, f, r);
	__u32 header = f->v6 ? 40 : 20;
	// Longer than a frame of an Ethernet MTU: an skb generic XDP merged
	// (GRO), which the engine handles as before.
	if (len < 0 || len - header > FP_SUM_MAX)
		return fp_engine();
	l4 = ip + header;
	__u32 off = 14 + header;
	long done = f->proto == IPPROTO_TCP ? fp_tcp(ctx, l4, end, f, r, off, len - header)
					    : fp_udp(ctx, l4, end, f, r, off, len - header);
	if (done < 0)
		return fp_engine();
	fp_ip(ip, end, f, r);
	__builtin_memcpy(data, r->dmac, 6);
	__builtin_memcpy(data + 6, r->smac, 6);
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, len);
	r->last_seen = bpf_ktime_get_ns();
	fp_count(FP_FORWARDED, 1);
	fp_count(FP_BYTES, len);
	if (r->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(r->ifindex, 0);
}
