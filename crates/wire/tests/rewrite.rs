//! FullNAT-style rewrites done incrementally (RFC 1624) must leave exactly the
//! checksums a full recomputation would: addresses in the IP header and the
//! transport pseudo-header, ports, sequence numbers, and TCP option values at
//! odd or even offsets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{TcpHeader, TcpOptionElement, TcpOptions};
use proptest::prelude::*;
use rvs_wire::tcp::TcpOption;
use rvs_wire::{checksum, ip_protocol, ipv4, tcp, udp};

/// Old and new address pairs, all of one family.
fn addrs() -> impl Strategy<Value = [IpAddr; 4]> {
    prop_oneof![
        any::<[[u8; 4]; 4]>().prop_map(|a| a.map(|a| Ipv4Addr::from(a).into())),
        any::<[[u8; 16]; 4]>().prop_map(|a| a.map(|a| Ipv6Addr::from(a).into())),
    ]
}

fn option_element() -> impl Strategy<Value = TcpOptionElement> {
    prop_oneof![
        Just(TcpOptionElement::Noop),
        any::<u16>().prop_map(TcpOptionElement::MaximumSegmentSize),
        any::<u8>().prop_map(TcpOptionElement::WindowScale),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| TcpOptionElement::Timestamp(a, b)),
    ]
}

/// A TCP segment whose options, thanks to random NOPs, sit at odd and even
/// offsets.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<(u16, u16, u32, u32, u16)>(),
        prop::collection::vec(option_element(), 0..6),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|((sp, dp, seq, ack, win), mut elements, payload)| {
            let options = loop {
                match TcpOptions::try_from_elements(&elements) {
                    Ok(options) => break options,
                    Err(_) => {
                        elements.pop();
                    }
                }
            };
            let mut header = TcpHeader::new(sp, dp, seq, win);
            header.acknowledgment_number = ack;
            header.ack = true;
            header.options = options;
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn tcp_fullnat_rewrite(
        mut bytes in segment(),
        [src, dst, new_src, new_dst] in addrs(),
        new_ports in any::<(u16, u16)>(),
        seq_delta in any::<u32>(),
        new_option_bytes in any::<[u8; 8]>(),
    ) {
        let mut packet = tcp::Packet::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum(src, dst);
        let mut sum = packet.checksum();

        // Addresses only live in the pseudo-header.
        sum = checksum::update_addr(sum, src, new_src);
        sum = checksum::update_addr(sum, dst, new_dst);

        let old_ports = (packet.src_port(), packet.dst_port());
        packet.set_src_port(new_ports.0);
        packet.set_dst_port(new_ports.1);
        sum = checksum::update16(sum, old_ports.0, new_ports.0);
        sum = checksum::update16(sum, old_ports.1, new_ports.1);

        let (old_seq, old_ack) = (packet.seq_number(), packet.ack_number());
        let (new_seq, new_ack) = (old_seq.wrapping_add(seq_delta), old_ack.wrapping_sub(seq_delta));
        packet.set_seq_number(new_seq);
        packet.set_ack_number(new_ack);
        sum = checksum::update32(sum, old_seq, new_seq);
        sum = checksum::update32(sum, old_ack, new_ack);

        // Rewrite the values of MSS and timestamp options in place.
        let targets: Vec<(usize, usize)> = packet
            .options_iter()
            .filter_map(|item| match item.unwrap() {
                (at, TcpOption::MaxSegmentSize(_)) => Some((at + 2, 2)),
                (at, TcpOption::Timestamps { .. }) => Some((at + 2, 8)),
                _ => None,
            })
            .collect();
        for (at, len) in targets {
            let old = packet.options()[at..at + len].to_vec();
            let new = &new_option_bytes[..len];
            packet.options_mut()[at..at + len].copy_from_slice(new);
            // Options start at offset 20 of the segment, so parity carries over.
            sum = checksum::update_bytes(sum, at % 2 == 1, &old, new);
        }

        packet.set_checksum(sum);
        prop_assert!(packet.verify_checksum(new_src, new_dst));
        let mut copy = bytes.clone();
        let mut full = tcp::Packet::new_unchecked(&mut copy[..]);
        full.fill_checksum(new_src, new_dst);
        prop_assert_eq!(full.checksum(), sum);
    }

    #[test]
    fn udp_fullnat_rewrite(
        payload in prop::collection::vec(any::<u8>(), 0..64),
        [src, dst, new_src, new_dst] in addrs(),
        ports in any::<(u16, u16, u16, u16)>(),
    ) {
        let repr = udp::Repr { src_port: ports.0, dst_port: ports.1, payload_len: payload.len() };
        let mut bytes = vec![0u8; repr.buffer_len()];
        bytes[udp::HEADER_LEN..].copy_from_slice(&payload);
        let mut packet = udp::Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet, src, dst);

        let mut sum = packet.checksum();
        sum = checksum::update_addr(sum, src, new_src);
        sum = checksum::update_addr(sum, dst, new_dst);
        packet.set_src_port(ports.2);
        packet.set_dst_port(ports.3);
        sum = checksum::update16(sum, ports.0, ports.2);
        sum = checksum::update16(sum, ports.1, ports.3);
        packet.update_checksum(sum);

        prop_assert!(packet.verify_checksum(new_src, new_dst));
        prop_assert_ne!(packet.checksum(), 0);
        let mut copy = bytes.clone();
        let mut full = udp::Packet::new_unchecked(&mut copy[..]);
        full.fill_checksum(new_src, new_dst);
        prop_assert_eq!(full.checksum(), udp::Packet::new_unchecked(&bytes[..]).checksum());
    }

    #[test]
    fn ipv4_header_rewrite(
        addrs in any::<[[u8; 4]; 4]>(),
        ttl in 1u8..=255,
        ident in any::<u16>(),
        payload_len in 0usize..100,
    ) {
        let [src, dst, new_src, new_dst] = addrs.map(Ipv4Addr::from);
        let repr = ipv4::Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: ip_protocol::TCP,
            payload_len,
            ttl,
            ident,
            dont_frag: true,
        };
        let mut bytes = vec![0u8; repr.buffer_len()];
        let mut packet = ipv4::Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);

        let mut sum = packet.checksum();
        packet.set_src_addr(new_src);
        packet.set_dst_addr(new_dst);
        sum = checksum::update_addr(sum, src.into(), new_src.into());
        sum = checksum::update_addr(sum, dst.into(), new_dst.into());
        // TTL shares a word with the protocol.
        let old_word = u16::from_be_bytes([ttl, ip_protocol::TCP]);
        packet.set_ttl(ttl - 1);
        sum = checksum::update16(sum, old_word, u16::from_be_bytes([ttl - 1, ip_protocol::TCP]));
        packet.set_checksum(sum);

        prop_assert!(packet.verify_checksum());
        packet.fill_checksum();
        prop_assert_eq!(packet.checksum(), sum);
    }
}
