// SPDX-License-Identifier: Apache-2.0
//
// SYN cookies for SYNProxy services, in XDP: a client's SYN is answered here
// with the SYN-ACK the engine would send (crates/core/src/synproxy/
// handshake.rs `answer_syn`, built as crates/core/src/emit `Segment::emit`
// builds it), and the ACK that returns a cookie is checked here as
// crates/core/src/synproxy/cookie.rs `CookieJar::check` checks it: a bad one
// dies here, counted as the engine's `bad_cookie` drop, a good one goes on
// to the engine, which checks it again and opens the real's handshake. When
// the engine answers bad cookies with an RST, as many as its RST rate allows
// go on to it for that (`rst_limit`); the rest die here all the same.
//
// The cookie is SipHash-2-4 over the bytes `CookieJar::hash` feeds (both
// addresses as IPv6, IPv4 ones mapped; both ports; the client's ISN; the
// layout; the 32 s count as 8 little-endian bytes), keyed with the key of
// the count's 256 s period. The driver keeps the keys of the periods around
// now in `cookie_keys` (one map update: readers see all three or none of a
// change), each SYNProxy service's SYN-ACK template in `syn_templates`
// (`syn_templates6`), the clock offset in `cookie_clock`, so that
// bpf_ktime_get_ns() + offset is the engine's `now`, and each CPU's share of
// the engine's RST rate in `rst_limit`.
//
// Answered or checked here: IPv4 without options and not a fragment, IPv6
// without extension headers, TTL above 1, TCP whose length fields agree with
// the frame, SYN or ACK alone (no RST or FIN), with at most 10 TCP options
// (NOPs included) of the kinds the engine reads (MSS, window scale, SACK
// permitted, SACK, timestamps). Anything else, and a cookie of a period
// whose key the map does not hold, is left to steering (and so to the
// engine). A flow with an entry in `flows` never gets here.
//
// Included by steer.bpf.c after its own definitions and fast_path.bpf.h
// (the counters, `flows`).

// syn_template.flags
#define SC_SACK 1
#define SC_TIMESTAMPS 2
#define SC_RST_ON_BAD_COOKIE 4

// One SYNProxy service's SYN-ACK, for clients of its VIP's family. Keep in
// step with syn_cookie.rs (BpfSynTemplate).
struct syn_template {
	__u16 mss; // announced (host order)
	__u16 mss_max; // a client's MSS counts as at most this
	__u8 wscale; // announced when the client offers one
	__u8 ttl;
	__u8 flags;
	__u8 max_age; // 32 s steps a cookie stays valid
};

// The keys of periods `period - 1`, `period` and `period + 1` (k0, k1).
struct cookie_keys {
	__u64 period;
	__u64 key[3][2];
};

struct bpf_map_def SEC("maps") syn_templates = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct service_key),
	.value_size = sizeof(struct syn_template),
	.max_entries = 65536,
};

struct bpf_map_def SEC("maps") syn_templates6 = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct service6_key),
	.value_size = sizeof(struct syn_template),
	.max_entries = 65536,
};

// [0] -> the keys. A hash map: an update replaces the whole value at once.
struct bpf_map_def SEC("maps") cookie_keys = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct cookie_keys),
	.max_entries = 1,
};

// [0]: the engine's clock less CLOCK_MONOTONIC, in nanoseconds.
struct bpf_map_def SEC("maps") cookie_clock = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

// Each CPU's share of the RSTs the engine sends for bad cookies
// (`EngineConfig.reset_rate`): it passes one bad-cookie ACK to the engine
// every `interval_ns`, up to `burst` at once; none when `burst` is 0. Keep
// in step with syn_cookie.rs (BpfRstLimit).
struct rst_limit {
	__u64 interval_ns;
	__u64 burst;
};

// A CPU's bucket: the tokens it holds, earned up to `filled_to` (the
// engine's clock), as the engine's own bucket (crates/core/src/emit/reset.rs).
struct rst_bucket {
	__u64 tokens;
	__u64 filled_to;
};

// [0] -> the share, written by the driver.
struct bpf_map_def SEC("maps") rst_limit = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct rst_limit),
	.max_entries = 1,
};

// [0] -> this CPU's bucket.
struct bpf_map_def SEC("maps") rst_buckets = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct rst_bucket),
	.max_entries = 1,
};

// The cookie clock: seconds per step, steps per key period.
#define SC_COUNT_NS 32000000000ULL
#define SC_COUNT_WRAP 8
#define SC_TS_NO_WSCALE 15

static __attribute__((always_inline)) long sc_count(__u32 what, long action)
{
	fp_count(what, 1);
	return action;
}

static __attribute__((always_inline)) __u16 sc_get16(const __u8 *p)
{
	return (__u16)p[0] << 8 | p[1];
}

static __attribute__((always_inline)) __u32 sc_get32(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __attribute__((always_inline)) void sc_put16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __attribute__((always_inline)) void sc_put32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

// The MSS tables of cookie.rs, for IPv4 and IPv6 clients; the index of the
// largest entry not above `mss` (0 when none is).
static __attribute__((always_inline)) __u32 sc_mss_index(int v6, __u16 mss)
{
	const __u16 v4t[8] = { 536, 1220, 1300, 1360, 1400, 1440, 1452, 1460 };
	const __u16 v6t[8] = { 1220, 1280, 1340, 1380, 1400, 1420, 1432, 1440 };
	__u32 index = 0;
#pragma unroll
	for (int i = 1; i < 8; i++)
		if ((v6 ? v6t[i] : v4t[i]) <= mss)
			index = i;
	return index;
}

// The no-timestamp layout's window scales (cookie.rs WSCALE_TABLE): the
// index of the largest not above `ws`, at least 1.
static __attribute__((always_inline)) __u32 sc_wscale_index(__u8 ws)
{
	const __u8 table[8] = { 0, 1, 2, 4, 6, 7, 8, 14 };
	__u32 index = 1;
#pragma unroll
	for (int i = 2; i < 8; i++)
		if (table[i] <= ws)
			index = i;
	return index;
}

#define SC_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SC_SIPROUND                                                                                                   \
	do {                                                                                                          \
		v0 += v1;                                                                                             \
		v1 = SC_ROTL(v1, 13);                                                                                 \
		v1 ^= v0;                                                                                             \
		v0 = SC_ROTL(v0, 32);                                                                                 \
		v2 += v3;                                                                                             \
		v3 = SC_ROTL(v3, 16);                                                                                 \
		v3 ^= v2;                                                                                             \
		v0 += v3;                                                                                             \
		v3 = SC_ROTL(v3, 21);                                                                                 \
		v3 ^= v0;                                                                                             \
		v2 += v1;                                                                                             \
		v1 = SC_ROTL(v1, 17);                                                                                 \
		v1 ^= v2;                                                                                             \
		v2 = SC_ROTL(v2, 32);                                                                                 \
	} while (0)

// What CookieJar::hash hashes: 49 bytes.
union sc_message {
	__u8 b[56];
	__u64 w[7];
};

// CookieJar::hash: the top 32 bits of SipHash-2-4 keyed with `key` over the
// flow, the client's ISN, `count` and `layout`.
static __attribute__((always_inline)) __u32 sc_hash(const __u64 *key, const struct flow *f, __u32 client_isn,
						   __u64 count, __u8 layout)
{
	union sc_message m = {};
	if (f->v6) {
		__builtin_memcpy(m.b, f->saddr, 16);
		__builtin_memcpy(m.b + 18, f->daddr, 16);
	} else {
		m.b[10] = m.b[11] = 0xff;
		__builtin_memcpy(m.b + 12, f->saddr, 4);
		m.b[28] = m.b[29] = 0xff;
		__builtin_memcpy(m.b + 30, f->daddr, 4);
	}
	__builtin_memcpy(m.b + 16, &f->sport, 2);
	__builtin_memcpy(m.b + 34, &f->dport, 2);
	sc_put32(m.b + 36, client_isn);
	m.b[40] = layout;
	// write_u64: little-endian, as the words themselves are read.
#pragma unroll
	for (int i = 0; i < 8; i++)
		m.b[41 + i] = count >> (8 * i);
	__u64 v0 = key[0] ^ 0x736f6d6570736575ULL;
	__u64 v1 = key[1] ^ 0x646f72616e646f6dULL;
	__u64 v2 = key[0] ^ 0x6c7967656e657261ULL;
	__u64 v3 = key[1] ^ 0x7465646279746573ULL;
#pragma unroll
	for (int i = 0; i < 6; i++) {
		__u64 word = m.w[i];
		v3 ^= word;
		SC_SIPROUND;
		SC_SIPROUND;
		v0 ^= word;
	}
	__u64 last = (49ULL << 56) | m.b[48];
	v3 ^= last;
	SC_SIPROUND;
	SC_SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SC_SIPROUND;
	SC_SIPROUND;
	SC_SIPROUND;
	SC_SIPROUND;
	return (v0 ^ v1 ^ v2 ^ v3) >> 32;
}

// The key of `period`, or 0 when the map holds none for it.
static __attribute__((always_inline)) const __u64 *sc_key(const struct cookie_keys *keys, __u64 period)
{
	__u64 i = period + 1 - keys->period;
	if (i > 2)
		return 0;
	return keys->key[i];
}

// What rvs_wire::tcp_options::Summary reads of an options area, read the
// same way: up to the first malformed option, later ones winning.
struct sc_options {
	__u16 mss;
	__u8 has_mss;
	__u8 wscale;
	__u8 has_wscale;
	__u8 sack_permitted;
	__u8 has_timestamps;
	__u32 tsval, tsecr;
	__u32 len; // of the options area
	__u32 at; // where sc_parse is
};

// Where sc_parse writes, per CPU. The verifier does not follow what a map
// value holds, so the paths through the parse (one per layout) meet again
// after it instead of each going through the rest of the stage on its own.
struct bpf_map_def SEC("maps") cookie_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct sc_options),
	.max_entries = 1,
};

// Options (NOPs included) read before giving up: every common layout has
// fewer. An option of unknown kind gives up too; the packet then goes to
// the engine, which reads everything.
#define SC_MAX_OPTIONS 10
// Room for an option's bytes read at any offset below 64.
#define SC_OPTIONS_BUF 80

// Byte `i` of `o`. The barrier keeps clang from turning the index addition
// into an OR on the stack pointer (it knows the buffer's alignment), which
// the verifier refuses.
static __attribute__((always_inline)) __u8 sc_byte(const __u8 *o, __u32 i)
{
	asm volatile("" : "+r"(i));
	return o[i];
}

// The options area's length and the offset reached, read again from the
// map value each time: the verifier then follows one path per option
// kind, not one per offset and range of lengths through all later ones.
#define SC_LEN (*(volatile __u32 *)&s->len)
#define SC_AT (*(volatile __u32 *)&s->at)

// Read the `s->len` bytes of options at `o` (SC_OPTIONS_BUF bytes, zero
// past the options) into `s`; -1 if they are not all read.
static __attribute__((always_inline)) int sc_parse(const __u8 *o, struct sc_options *s)
{
	SC_AT = 0;
#pragma unroll
	for (int n = 0; n < SC_MAX_OPTIONS; n++) {
		__u32 i = SC_AT & 63;
		// The first test repeats the second (the area holds at most 40
		// bytes) for the verifier, which cannot tell.
		if (i >= 40 || i >= SC_LEN)
			return 0;
		__u8 kind = sc_byte(o, i);
		if (kind == 0)
			return 0;
		if (kind == 1) {
			SC_AT = i + 1;
			continue;
		}
		// Malformed (no length, or one too short or past the end): Summary
		// stops here, with what it read so far.
		if (i + 1 >= SC_LEN)
			return 0;
		__u32 olen = sc_byte(o, i + 1);
		if (olen < 2 || i + olen > 40 || i + olen > SC_LEN)
			return 0;
		if (kind == 2) {
			if (olen != 4)
				return 0;
			s->mss = (__u16)sc_byte(o, i + 2) << 8 | sc_byte(o, i + 3);
			s->has_mss = 1;
		} else if (kind == 3) {
			if (olen != 3)
				return 0;
			__u8 ws = sc_byte(o, i + 2);
			s->wscale = ws > 14 ? 14 : ws;
			s->has_wscale = 1;
		} else if (kind == 4) {
			if (olen != 2)
				return 0;
			s->sack_permitted = 1;
		} else if (kind == 8) {
			if (olen != 10)
				return 0;
			s->tsval = (__u32)sc_byte(o, i + 2) << 24 | (__u32)sc_byte(o, i + 3) << 16 |
				   (__u32)sc_byte(o, i + 4) << 8 | sc_byte(o, i + 5);
			s->tsecr = (__u32)sc_byte(o, i + 6) << 24 | (__u32)sc_byte(o, i + 7) << 16 |
				   (__u32)sc_byte(o, i + 8) << 8 | sc_byte(o, i + 9);
			s->has_timestamps = 1;
		} else if (kind == 5) {
			if (olen != 10 && olen != 18 && olen != 26 && olen != 34)
				return 0;
		} else {
			return -1;
		}
		SC_AT = i + olen;
	}
	return SC_AT >= SC_LEN ? 0 : -1;
}

// Ones' complement sum of `n` bytes (n even) as big-endian 16-bit words.
static __attribute__((always_inline)) __u32 sc_sum(const __u8 *p, __u32 n)
{
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 40; i += 2)
		if (i < n)
			sum += sc_get16(p + i);
	return sum;
}

static __attribute__((always_inline)) __u16 sc_finish(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

// Answer the SYN of flow `f` in place with the engine's cookie SYN-ACK.
// `hl` is the IP header's length, `isn` the client's ISN.
static __attribute__((always_inline)) long sc_answer(struct xdp_md *ctx, struct flow *f, const struct syn_template *t,
						    const struct sc_options *o, __u32 hl, __u32 isn, __u64 now)
{
	__u32 zero = 0;
	struct cookie_keys *keys = bpf_map_lookup_elem(&cookie_keys, &zero);
	__u64 count = now / SC_COUNT_NS;
	const __u64 *key = keys ? sc_key(keys, count / SC_COUNT_WRAP) : 0;
	if (!key)
		return sc_count(SC_NO_KEY, -1);
	__u16 mss = o->has_mss ? o->mss : (f->v6 ? 1220 : 536);
	if (mss > t->mss_max)
		mss = t->mss_max;
	int sack = o->sack_permitted && (t->flags & SC_SACK);
	int ts = o->has_timestamps && (t->flags & SC_TIMESTAMPS);
	__u32 mi = sc_mss_index(f->v6, mss);
	__u32 c = count % SC_COUNT_WRAP;
	__u32 cookie, ts_bits = 0;
	if (ts) {
		__u32 h = sc_hash(key, f, isn, count, 1);
		cookie = (h & ~0x3fU) | (c << 3) | mi;
		ts_bits = (o->has_wscale ? o->wscale : SC_TS_NO_WSCALE) | ((__u32)sack << 4);
	} else {
		__u32 h = sc_hash(key, f, isn, count, 0);
		__u32 ws = o->has_wscale ? sc_wscale_index(o->wscale) : 0;
		cookie = (h & ~0x3ffU) | (c << 7) | (mi << 4) | ((__u32)sack << 3) | ws;
	}
	__u32 tsval = ((__u32)(now / 1000000) & ~0x3fU) | ts_bits;

	// The segment: header, then MSS; SACK permitted (or NOP NOP) and
	// timestamps, or NOP NOP SACK permitted; NOP window scale.
	__u8 seg[40] = {};
	__u32 len = 24;
	__builtin_memcpy(seg, &f->dport, 2);
	__builtin_memcpy(seg + 2, &f->sport, 2);
	sc_put32(seg + 4, cookie);
	sc_put32(seg + 8, isn + 1);
	seg[13] = 0x12;
	sc_put16(seg + 14, 0xffff);
	seg[20] = 2;
	seg[21] = 4;
	sc_put16(seg + 22, t->mss);
	if (ts) {
		seg[24] = sack ? 4 : 1;
		seg[25] = sack ? 2 : 1;
		seg[26] = 8;
		seg[27] = 10;
		sc_put32(seg + 28, tsval);
		sc_put32(seg + 32, o->tsval);
		len = 36;
		if (o->has_wscale) {
			seg[36] = 1;
			seg[37] = 3;
			seg[38] = 3;
			seg[39] = t->wscale;
			len = 40;
		}
	} else if (sack) {
		seg[24] = 1;
		seg[25] = 1;
		seg[26] = 4;
		seg[27] = 2;
		len = 28;
		if (o->has_wscale) {
			seg[28] = 1;
			seg[29] = 3;
			seg[30] = 3;
			seg[31] = t->wscale;
			len = 32;
		}
	} else if (o->has_wscale) {
		seg[24] = 1;
		seg[25] = 3;
		seg[26] = 3;
		seg[27] = t->wscale;
		len = 28;
	}
	seg[12] = (len / 4) << 4;
	// Pseudo-header: the addresses (their sum is the same either way round),
	// protocol and length.
	__u32 sum = sc_sum((const __u8 *)f->saddr, f->v6 ? 16 : 4) + sc_sum((const __u8 *)f->daddr, f->v6 ? 16 : 4);
	sum += IPPROTO_TCP + len + sc_sum(seg, len);
	sc_put16(seg + 16, sc_finish(sum));

	__u8 ip[40] = {};
	if (f->v6) {
		ip[0] = 0x60;
		sc_put16(ip + 4, len);
		ip[6] = IPPROTO_TCP;
		ip[7] = t->ttl;
		__builtin_memcpy(ip + 8, f->daddr, 16);
		__builtin_memcpy(ip + 24, f->saddr, 16);
	} else {
		ip[0] = 0x45;
		sc_put16(ip + 2, 20 + len);
		ip[6] = 0x40; // DF; the ident stays 0
		ip[8] = t->ttl;
		ip[9] = IPPROTO_TCP;
		__builtin_memcpy(ip + 12, f->daddr, 4);
		__builtin_memcpy(ip + 16, f->saddr, 4);
		sc_put16(ip + 10, sc_finish(sc_sum(ip, 20)));
	}

	__u8 mac[12];
	if (bpf_xdp_load_bytes(ctx, 0, mac, 12) < 0)
		return -1;
	int old = ctx->data_end - ctx->data;
	int delta = (int)(14 + hl + len) - old;
	// Nothing was written yet: on failure the frame goes on unchanged.
	if (delta && bpf_xdp_adjust_tail(ctx, delta) < 0)
		return -1;
	__u8 swapped[12];
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	if (bpf_xdp_store_bytes(ctx, 0, swapped, 12) < 0 || bpf_xdp_store_bytes(ctx, 14, ip, f->v6 ? 40 : 20) < 0 ||
	    bpf_xdp_store_bytes(ctx, 14 + (f->v6 ? 40 : 20), seg, len & 63) < 0)
		return XDP_DROP;
	return sc_count(SC_SYNACKS, XDP_TX);
}

// Whether this CPU may pass one more bad-cookie ACK to the engine at `now`
// (taking the token if so). A clock seen running back earns nothing.
static __attribute__((always_inline)) int sc_rst_token(__u64 now)
{
	__u32 zero = 0;
	struct rst_limit *l = bpf_map_lookup_elem(&rst_limit, &zero);
	struct rst_bucket *b = bpf_map_lookup_elem(&rst_buckets, &zero);
	if (!l || !b || !l->burst || !l->interval_ns)
		return 0;
	__u64 burst = l->burst, interval = l->interval_ns;
	if (b->tokens > burst)
		b->tokens = burst;
	if (now < b->filled_to)
		b->filled_to = now;
	__u64 earned = (now - b->filled_to) / interval;
	if (earned >= burst - b->tokens) {
		b->tokens = burst;
		b->filled_to = now;
	} else if (earned) {
		b->tokens += earned;
		b->filled_to += earned * interval;
	}
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

// Check the cookie the ACK of flow `f` returns, as CookieJar::check does.
static __attribute__((always_inline)) long sc_check(struct flow *f, const struct syn_template *t,
						   const struct sc_options *o, __u32 seq, __u32 ack, __u64 now, __u32 stages)
{
	__u32 client_isn = seq - 1, cookie = ack - 1;
	__u64 now_count = now / SC_COUNT_NS;
	__u8 layout = o->has_timestamps ? 1 : 0;
	__u32 c = layout ? (cookie >> 3) & 7 : (cookie >> 7) & 7;
	__u64 age = (now_count % SC_COUNT_WRAP + SC_COUNT_WRAP - c) % SC_COUNT_WRAP;
	int good = 0;
	if (age <= t->max_age && age <= now_count) {
		__u64 count = now_count - age;
		__u32 zero = 0;
		struct cookie_keys *keys = bpf_map_lookup_elem(&cookie_keys, &zero);
		const __u64 *key = keys ? sc_key(keys, count / SC_COUNT_WRAP) : 0;
		if (!key)
			return sc_count(SC_NO_KEY, -1);
		__u32 mask = layout ? ~0x3fU : ~0x3ffU;
		good = (sc_hash(key, f, client_isn, count, layout) & mask) == (cookie & mask);
	}
	if (!good) {
		if ((t->flags & SC_RST_ON_BAD_COOKIE) && sc_rst_token(now))
			return sc_count(SC_RST_PASSED, -1);
		return sc_count(SC_BAD_COOKIE, XDP_DROP);
	}
	// The client's next segments (a SYN sent again among them) reach the
	// engine even before it has installed anything for the connection.
	if (stages & FAST_PATH_ON) {
		struct flow_rule engine = { .kind = FLOW_ENGINE };
		bpf_map_update_elem(&flows, f, &engine, 1 /* BPF_NOEXIST */);
	}
	return sc_count(SC_ACKS_PASSED, -1);
}

// The SYN-cookie stage for a TCP packet of flow `f` (steer() parsed it; the
// fast path holds no entry for it), whose TCP header starts at `l4`: an XDP
// action, or -1 for steering to go on.
static __attribute__((always_inline)) long syn_cookie(struct xdp_md *ctx, struct flow *f, __u8 *l4, __u8 *end)
{
	__u32 one = 1;
	__u32 *on = bpf_map_lookup_elem(&settings, &one);
	if (!on || !(*on & SYN_COOKIES_ON))
		return -1;
	__u32 stages = *on;
	struct syn_template *t;
	if (f->v6) {
		struct service6_key key = { .port = f->dport, .proto = IPPROTO_TCP, .pad = 0 };
		__builtin_memcpy(key.addr, f->daddr, 16);
		t = bpf_map_lookup_elem(&syn_templates6, &key);
	} else {
		struct service_key key = { .addr = f->daddr[0], .port = f->dport, .proto = IPPROTO_TCP, .pad = 0 };
		t = bpf_map_lookup_elem(&syn_templates, &key);
	}
	if (!t)
		return -1;
	__u8 *ip = (__u8 *)(long)ctx->data + 14;
	__u32 hl, seg_len;
	if (f->v6) {
		// No extension headers; hop limit above 1.
		if (ip + 40 > end || ip[6] != IPPROTO_TCP || ip[7] <= 1)
			return -1;
		hl = 40;
		seg_len = sc_get16(ip + 4);
	} else {
		// No options, not a fragment, TTL above 1.
		if (ip + 20 > end || ip[0] != 0x45 || (ip[6] & 0x3f) || ip[7] || ip[8] <= 1)
			return -1;
		hl = 20;
		__u32 total = sc_get16(ip + 2);
		if (total < 20)
			return -1;
		seg_len = total - 20;
	}
	if (l4 != ip + hl || seg_len < 20 || l4 + 20 > end || l4 + seg_len > end)
		return -1;
	__u32 doff = (l4[12] >> 4) * 4;
	__u8 flags = l4[13];
	if (doff < 20 || doff > seg_len)
		return -1;
	// SYN without ACK, RST, FIN; or ACK without SYN, RST, FIN.
	int syn = (flags & 0x17) == 0x02;
	int ack = (flags & 0x17) == 0x10;
	if (!syn && !ack)
		return -1;
	__u32 seq = sc_get32(l4 + 4), ack_number = sc_get32(l4 + 8);
	__u32 zero = 0;
	struct sc_options *o = bpf_map_lookup_elem(&cookie_scratch, &zero);
	if (!o)
		return -1;
	__builtin_memset(o, 0, sizeof(*o));
	__u32 olen = doff - 20;
	if (olen > 0) {
		__u8 buf[SC_OPTIONS_BUF] = {};
		if (olen > 40 || bpf_xdp_load_bytes(ctx, 14 + hl + 20, buf, olen) < 0)
			return -1;
		o->len = olen;
		int parsed = sc_parse(buf, o);
		// One way on from here for every layout (clang would otherwise
		// copy the rest of the stage into each).
		asm volatile("" : "+r"(parsed));
		if (parsed < 0)
			return -1;
	}
	__u64 *offset = bpf_map_lookup_elem(&cookie_clock, &zero);
	__u64 now = bpf_ktime_get_ns() + (offset ? *offset : 0);
	if (syn)
		return sc_answer(ctx, f, t, o, hl, seq, now);
	return sc_check(f, t, o, seq, ack_number, now, stages);
}
