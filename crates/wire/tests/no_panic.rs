//! Arbitrary bytes through every view: constructors may refuse them, but no
//! getter, setter, iterator or emitter may panic, whether the view was checked
//! or not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use rvs_wire::tcp::{Flags, TcpOption};
use rvs_wire::{Error, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(4000)
}

/// Random bytes, sometimes with a plausible first byte so that the IP views
/// get past the version check and exercise the length checks.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..120),
        prop_oneof![Just(None), Just(Some(0x45u8)), Just(Some(0x60)), (0x40u8..0x50).prop_map(Some)],
    )
        .prop_map(|(mut bytes, first)| {
            if let (Some(byte), Some(first)) = (bytes.first_mut(), first) {
                *byte = first;
            }
            bytes
        })
}

fn addrs() -> [(IpAddr, IpAddr); 3] {
    [
        (Ipv4Addr::new(10, 0, 0, 1).into(), Ipv4Addr::new(10, 0, 0, 2).into()),
        (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into()),
        (Ipv4Addr::BROADCAST.into(), Ipv6Addr::LOCALHOST.into()),
    ]
}

fn read_ipv4<T: AsRef<[u8]>>(p: &ipv4::Packet<T>) {
    let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident(), p.dont_frag());
    let _ = (p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol(), p.checksum());
    let _ = (p.src_addr(), p.dst_addr(), p.options(), p.header(), p.payload(), p.verify_checksum());
    let _ = ipv4::Repr::parse(p);
}

fn write_ipv4(p: &mut ipv4::Packet<&mut [u8]>) {
    p.set_ttl(1);
    p.set_src_addr(Ipv4Addr::LOCALHOST);
    p.set_dst_addr(Ipv4Addr::BROADCAST);
    p.set_ident(7);
    p.set_dont_frag(true);
    p.set_more_frags(true);
    p.set_frag_offset(0xffff);
    p.set_dscp_ecn(0xff);
    p.set_protocol(6);
    p.options_mut().fill(1);
    p.payload_mut().fill(2);
    p.fill_checksum();
    p.set_header_len(usize::MAX);
    p.set_total_len(u16::MAX);
    read_ipv4(p);
    let _ = p.payload_mut();
    let _ = p.options_mut();
}

fn read_ipv6<T: AsRef<[u8]>>(p: &ipv6::Packet<T>) {
    let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header());
    let _ = (p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload());
    let _ = ipv6::Repr::parse(p);
    if let Ok((_, at)) = p.transport() {
        assert!(at >= ipv6::HEADER_LEN && at <= ipv6::HEADER_LEN + p.payload().len());
    }
}

fn write_ipv6(p: &mut ipv6::Packet<&mut [u8]>) {
    p.set_hop_limit(1);
    p.set_src_addr(Ipv6Addr::LOCALHOST);
    p.set_dst_addr(Ipv6Addr::UNSPECIFIED);
    p.set_traffic_class(0xff);
    p.set_flow_label(u32::MAX);
    p.set_next_header(17);
    p.payload_mut().fill(3);
    p.set_payload_len(u16::MAX);
    read_ipv6(p);
    let _ = p.payload_mut();
}

fn read_tcp<T: AsRef<[u8]>>(p: &tcp::Packet<T>) {
    let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len(), p.flags());
    let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options(), p.payload(), p.segment_len());
    walk_options(p.options());
    for (src, dst) in addrs() {
        let _ = p.verify_checksum(src, dst);
        let _ = tcp::Repr::parse(p, src, dst);
    }
}

fn write_tcp(p: &mut tcp::Packet<&mut [u8]>) {
    for (src, dst) in addrs() {
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_window_len(5);
        p.set_urgent_at(6);
        p.set_flags(Flags::SYN | Flags::ACK);
        p.options_mut().fill(1);
        p.payload_mut().fill(0);
        p.fill_checksum(src, dst);
        p.set_header_len(usize::MAX);
        read_tcp(p);
    }
}

fn walk_options(options: &[u8]) {
    let mut errors = 0;
    let mut last_offset = None;
    for item in tcp::options_iter(options) {
        match item {
            Ok((offset, option)) => {
                assert!(offset < options.len());
                assert!(last_offset.is_none_or(|last| offset > last));
                last_offset = Some(offset);
                if let TcpOption::SackRange(blocks) = option {
                    assert!((1..=4).contains(&blocks.len()));
                    let _ = blocks.iter().count();
                }
                if let TcpOption::Unknown { data, .. } = option {
                    assert!(data.len() + 2 <= options.len() - offset);
                }
            }
            Err(error) => {
                assert_eq!(error, Error::Malformed);
                errors += 1;
            }
        }
    }
    assert!(errors <= 1);
}

fn read_udp<T: AsRef<[u8]>>(p: &udp::Packet<T>) {
    let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.payload());
    for (src, dst) in addrs() {
        let _ = p.verify_checksum(src, dst);
    }
    let _ = udp::Repr::parse(p);
}

fn write_udp(p: &mut udp::Packet<&mut [u8]>) {
    for (src, dst) in addrs() {
        p.set_src_port(1);
        p.set_dst_port(2);
        p.payload_mut().fill(9);
        p.fill_checksum(src, dst);
        p.set_len(u16::MAX);
        p.set_checksum(0);
        read_udp(p);
    }
}

fn read_icmpv4<T: AsRef<[u8]>>(p: &icmpv4::Packet<T>) {
    let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.next_hop_mtu(), p.data());
    let _ = (p.verify_checksum(), icmpv4::is_error(p.msg_type()));
    if let Ok(inner) = ipv4::Packet::new_checked_quoted(p.data()) {
        read_ipv4(&inner);
        read_tcp(&tcp::Packet::new_unchecked(inner.payload()));
        read_udp(&udp::Packet::new_unchecked(inner.payload()));
    }
}

fn write_icmpv4(p: &mut icmpv4::Packet<&mut [u8]>) {
    p.set_msg_type(3);
    p.set_code(4);
    p.set_rest_of_header(1500);
    p.data_mut().fill(0);
    p.fill_checksum();
    read_icmpv4(p);
}

fn read_icmpv6<T: AsRef<[u8]>>(p: &icmpv6::Packet<T>) {
    let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.mtu(), p.pointer(), p.data());
    let _ = (p.verify_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED), icmpv6::is_error(p.msg_type()));
    if let Ok(inner) = ipv6::Packet::new_checked_quoted(p.data()) {
        read_ipv6(&inner);
        if let Ok((_, at)) = inner.transport() {
            let l4 = p.data().get(at..).unwrap_or(&[]);
            read_tcp(&tcp::Packet::new_unchecked(l4));
            read_udp(&udp::Packet::new_unchecked(l4));
        }
    }
}

fn write_icmpv6(p: &mut icmpv6::Packet<&mut [u8]>) {
    p.set_msg_type(2);
    p.set_code(0);
    p.set_mtu(1280);
    p.set_pointer(40);
    p.data_mut().fill(0);
    p.fill_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    read_icmpv6(p);
}

fn read_ethernet<T: AsRef<[u8]>>(f: &ethernet::Frame<T>) {
    let _ = (f.src_addr().to_string(), f.dst_addr().is_multicast(), f.ethertype(), f.payload());
    let _ = ethernet::Repr::parse(f);
}

fn write_ethernet(f: &mut ethernet::Frame<&mut [u8]>) {
    f.set_src_addr(ethernet::EthernetAddress::BROADCAST);
    f.set_dst_addr(ethernet::EthernetAddress([2, 0, 0, 0, 0, 1]));
    f.set_ethertype(ethernet::ethertype::IPV6);
    f.payload_mut().fill(0);
    read_ethernet(f);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn checked_views(data in bytes()) {
        if let Ok(p) = ipv4::Packet::new_checked(&data[..]) {
            read_ipv4(&p);
            prop_assert!(p.header_len() >= ipv4::HEADER_LEN);
            prop_assert_eq!(p.payload().len() + p.header_len(), usize::from(p.total_len()));
        }
        if let Ok(p) = ipv4::Packet::new_checked_quoted(&data[..]) {
            read_ipv4(&p);
        }
        if let Ok(p) = ipv6::Packet::new_checked(&data[..]) {
            read_ipv6(&p);
            prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
        }
        if let Ok(p) = tcp::Packet::new_checked(&data[..]) {
            read_tcp(&p);
            prop_assert_eq!(p.options().len() + tcp::HEADER_LEN, p.header_len());
        }
        if let Ok(p) = udp::Packet::new_checked(&data[..]) {
            read_udp(&p);
            prop_assert_eq!(p.payload().len() + udp::HEADER_LEN, usize::from(p.len()));
        }
        if let Ok(p) = icmpv4::Packet::new_checked(&data[..]) {
            read_icmpv4(&p);
        }
        if let Ok(p) = ipv6::Packet::new_checked_quoted(&data[..]) {
            read_ipv6(&p);
        }
        if let Ok(p) = icmpv6::Packet::new_checked(&data[..]) {
            read_icmpv6(&p);
        }
        if let Ok(f) = ethernet::Frame::new_checked(&data[..]) {
            read_ethernet(&f);
        }
        walk_options(&data);
    }

    #[test]
    fn unchecked_views(data in bytes()) {
        read_ipv4(&ipv4::Packet::new_unchecked(&data[..]));
        read_ipv6(&ipv6::Packet::new_unchecked(&data[..]));
        read_tcp(&tcp::Packet::new_unchecked(&data[..]));
        read_udp(&udp::Packet::new_unchecked(&data[..]));
        read_icmpv4(&icmpv4::Packet::new_unchecked(&data[..]));
        read_icmpv6(&icmpv6::Packet::new_unchecked(&data[..]));
        read_ethernet(&ethernet::Frame::new_unchecked(&data[..]));

        write_ipv4(&mut ipv4::Packet::new_unchecked(&mut data.clone()[..]));
        write_ipv6(&mut ipv6::Packet::new_unchecked(&mut data.clone()[..]));
        write_tcp(&mut tcp::Packet::new_unchecked(&mut data.clone()[..]));
        write_udp(&mut udp::Packet::new_unchecked(&mut data.clone()[..]));
        write_icmpv4(&mut icmpv4::Packet::new_unchecked(&mut data.clone()[..]));
        write_icmpv6(&mut icmpv6::Packet::new_unchecked(&mut data.clone()[..]));
        write_ethernet(&mut ethernet::Frame::new_unchecked(&mut data.clone()[..]));
    }

    #[test]
    fn emitters_into_any_buffer(data in bytes(), room in 0usize..120, payload_len in prop_oneof![0usize..100_000, Just(usize::MAX)]) {
        let mut buf = vec![0u8; room];
        if let Ok(len) = icmpv4::emit_error(&mut buf, 3, 4, 1400, &data) {
            prop_assert!(len <= room);
            let p = icmpv4::Packet::new_checked(&buf[..len]).unwrap();
            prop_assert!(p.verify_checksum());
        }
        let v4 = ipv4::Repr {
            src_addr: Ipv4Addr::LOCALHOST,
            dst_addr: Ipv4Addr::LOCALHOST,
            protocol: 6,
            payload_len,
            ttl: 64,
            ident: 0,
            dont_frag: true,
        };
        v4.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
        let v6 = ipv6::Repr {
            src_addr: Ipv6Addr::LOCALHOST,
            dst_addr: Ipv6Addr::LOCALHOST,
            next_header: 17,
            payload_len,
            hop_limit: 64,
        };
        v6.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..]));
        let (src, dst) = addrs()[0];
        udp::Repr { src_port: 1, dst_port: 2, payload_len }.emit(&mut udp::Packet::new_unchecked(&mut buf[..]), src, dst);
        let repr = tcp::Repr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: Some(4),
            flags: Flags::SYN,
            window_len: 5,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack_ranges: [Some((1, 2)), Some((3, 4)), Some((5, 6))],
            timestamp: Some((7, 8)),
            payload_len,
        };
        repr.emit(&mut tcp::Packet::new_unchecked(&mut buf[..]), src, dst);
        let _ = checksum::update_bytes(0, true, &data, &buf);
    }
}

/// Next-header values an extension header chain is made of: the walked
/// ones, the refused ones, transports, and anything.
fn next_header() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(vec![0u8, 43, 44, 60, 51, 135, 253, 6, 17, 58, 59]), any::<u8>(),]
}

/// An IPv6 packet whose payload is a plausible chain of extension headers
/// (next header, length, segments left), then cut and with a payload length
/// that may disagree with the chain.
fn ipv6_chain() -> impl Strategy<Value = Vec<u8>> {
    (next_header(), prop::collection::vec((next_header(), 0u8..4, 0u8..2), 0..12), 0usize..400, any::<bool>())
        .prop_map(|(first, headers, cut, honest)| {
            let mut bytes = vec![0u8; ipv6::HEADER_LEN];
            bytes[0] = 0x60;
            bytes[6] = first;
            for (next, len, left) in headers {
                let mut header = vec![0u8; (usize::from(len) + 1) * 8];
                header[..4].copy_from_slice(&[next, len, 0, left]);
                bytes.extend_from_slice(&header);
            }
            bytes.extend_from_slice(&[0; 20]);
            bytes.truncate(cut.max(ipv6::HEADER_LEN));
            let payload_len = if honest { bytes.len() - ipv6::HEADER_LEN } else { cut };
            bytes[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn extension_header_chains(data in ipv6_chain()) {
        for p in [ipv6::Packet::new_checked(&data[..]), ipv6::Packet::new_checked_quoted(&data[..])] {
            let Ok(p) = p else { continue };
            read_ipv6(&p);
            if let Ok((protocol, at)) = p.transport() {
                prop_assert!(![0u8, 43, 44, 60, 51, 135, 253].contains(&protocol));
                prop_assert!(at >= ipv6::HEADER_LEN && at <= ipv6::HEADER_LEN + p.payload().len());
                prop_assert!((at - ipv6::HEADER_LEN).is_multiple_of(8));
            }
        }
    }
}
