// SPDX-License-Identifier: Apache-2.0
//
// SYN cookies for SYNProxy services, answered in XDP. Not yet: every packet
// is left to steering.

// An XDP action, or -1: not this stage's business.
static __attribute__((always_inline)) long syn_cookie(struct xdp_md *ctx, struct flow *f, __u8 *l4, __u8 *end)
{
	return -1;
}
