//! Differential tests against etherparse: headers it builds must read the
//! same through our views, and headers we emit must read the same through its
//! parsers, checksums included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Ecn,
    Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header, TcpHeader, TcpOptionElement, TcpOptions, UdpHeader,
    icmpv4::DestUnreachableHeader,
};
use proptest::prelude::*;
use rvs_wire::tcp::{Flags, TcpOption};
use rvs_wire::{checksum, ethernet, icmpv4, ipv4, ipv6, tcp, udp};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(1000)
}

/// A pair of addresses of the same family.
fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>())
            .prop_map(|(s, d)| (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into())),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(s, d)| (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into())),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

fn tcp_checksum(header: &TcpHeader, src: IpAddr, dst: IpAddr, payload: &[u8]) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => header.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => header.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => unreachable!("same family"),
    }
    .unwrap()
}

fn udp_checksum(header: &UdpHeader, src: IpAddr, dst: IpAddr, payload: &[u8]) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => header.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => header.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => unreachable!("same family"),
    }
    .unwrap()
}

// ---------------------------------------------------------------- IPv4

prop_compose! {
    fn ipv4_header()(
        dscp in 0u8..64,
        ecn in 0u8..4,
        identification in any::<u16>(),
        dont_fragment in any::<bool>(),
        more_fragments in any::<bool>(),
        offset in 0u16..8192,
        time_to_live in any::<u8>(),
        protocol in any::<u8>(),
        source in any::<[u8; 4]>(),
        destination in any::<[u8; 4]>(),
        mut options in prop::collection::vec(any::<u8>(), 0..=40),
        payload_len in 0usize..100,
    ) -> Ipv4Header {
        options.truncate(options.len() / 4 * 4);
        let mut header = Ipv4Header {
            dscp: Ipv4Dscp::try_new(dscp).unwrap(),
            ecn: Ipv4Ecn::try_new(ecn).unwrap(),
            total_len: 0,
            identification,
            dont_fragment,
            more_fragments,
            fragment_offset: IpFragOffset::try_new(offset).unwrap(),
            time_to_live,
            protocol: IpNumber(protocol),
            header_checksum: 0,
            source,
            destination,
            options: Ipv4Options::try_from(&options[..]).unwrap(),
        };
        header.set_payload_len(payload_len).unwrap();
        header.header_checksum = header.calc_header_checksum();
        header
    }
}

prop_compose! {
    fn ipv4_repr()(
        src in any::<[u8; 4]>(),
        dst in any::<[u8; 4]>(),
        protocol in any::<u8>(),
        payload_len in 0usize..200,
        ttl in any::<u8>(),
        ident in any::<u16>(),
        dont_frag in any::<bool>(),
    ) -> ipv4::Repr {
        ipv4::Repr { src_addr: src.into(), dst_addr: dst.into(), protocol, payload_len, ttl, ident, dont_frag }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ipv4_theirs_to_ours(header in ipv4_header(), padding in prop::collection::vec(any::<u8>(), 0..8)) {
        let payload_len = usize::from(header.total_len) - header.header_len();
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend((0..payload_len).map(|i| i as u8));
        bytes.extend_from_slice(&padding);

        let packet = ipv4::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.version(), 4);
        prop_assert_eq!(packet.header_len(), header.header_len());
        prop_assert_eq!(packet.dscp_ecn(), (header.dscp.value() << 2) | header.ecn.value());
        prop_assert_eq!(packet.total_len(), header.total_len);
        prop_assert_eq!(packet.ident(), header.identification);
        prop_assert_eq!(packet.dont_frag(), header.dont_fragment);
        prop_assert_eq!(packet.more_frags(), header.more_fragments);
        prop_assert_eq!(packet.frag_offset(), header.fragment_offset.value() * 8);
        prop_assert_eq!(packet.is_fragment(), header.is_fragmenting_payload());
        prop_assert_eq!(packet.ttl(), header.time_to_live);
        prop_assert_eq!(packet.protocol(), header.protocol.0);
        prop_assert_eq!(packet.checksum(), header.header_checksum);
        prop_assert_eq!(packet.src_addr(), Ipv4Addr::from(header.source));
        prop_assert_eq!(packet.dst_addr(), Ipv4Addr::from(header.destination));
        prop_assert_eq!(packet.options(), header.options.as_slice());
        prop_assert_eq!(packet.payload().len(), payload_len);
        prop_assert!(packet.verify_checksum());

        let repr = ipv4::Repr::parse(&packet).unwrap();
        prop_assert_eq!(repr.payload_len, payload_len);
        prop_assert_eq!(repr.protocol, header.protocol.0);

        let mut copy = bytes.clone();
        let mut packet = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
        packet.set_checksum(0x1234);
        packet.fill_checksum();
        prop_assert_eq!(packet.checksum(), header.header_checksum);
    }

    #[test]
    fn ipv4_ours_to_theirs(repr in ipv4_repr()) {
        let mut bytes = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut bytes[..]));
        let (header, rest) = Ipv4Header::from_slice(&bytes).unwrap();
        prop_assert_eq!(header.header_len(), ipv4::HEADER_LEN);
        prop_assert_eq!(usize::from(header.total_len), repr.buffer_len());
        prop_assert_eq!(rest.len(), repr.payload_len);
        prop_assert_eq!(Ipv4Addr::from(header.source), repr.src_addr);
        prop_assert_eq!(Ipv4Addr::from(header.destination), repr.dst_addr);
        prop_assert_eq!(header.protocol.0, repr.protocol);
        prop_assert_eq!(header.time_to_live, repr.ttl);
        prop_assert_eq!(header.identification, repr.ident);
        prop_assert_eq!(header.dont_fragment, repr.dont_frag);
        prop_assert!(!header.more_fragments);
        prop_assert_eq!(header.fragment_offset.value(), 0);
        prop_assert_eq!(header.dscp.value(), 0);
        prop_assert_eq!(header.ecn.value(), 0);
        prop_assert_eq!(header.header_checksum, header.calc_header_checksum());
    }
}

// ---------------------------------------------------------------- IPv6

prop_compose! {
    fn ipv6_header()(
        traffic_class in any::<u8>(),
        flow_label in 0u32..(1 << 20),
        payload_length in 0u16..100,
        next_header in any::<u8>(),
        hop_limit in any::<u8>(),
        source in any::<[u8; 16]>(),
        destination in any::<[u8; 16]>(),
    ) -> Ipv6Header {
        Ipv6Header {
            traffic_class,
            flow_label: Ipv6FlowLabel::try_new(flow_label).unwrap(),
            payload_length,
            next_header: IpNumber(next_header),
            hop_limit,
            source,
            destination,
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ipv6_theirs_to_ours(header in ipv6_header(), padding in 0usize..8) {
        let mut bytes = header.to_bytes().to_vec();
        bytes.resize(bytes.len() + usize::from(header.payload_length) + padding, 0x3c);
        let packet = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.version(), 6);
        prop_assert_eq!(packet.traffic_class(), header.traffic_class);
        prop_assert_eq!(packet.flow_label(), header.flow_label.value());
        prop_assert_eq!(packet.payload_len(), header.payload_length);
        prop_assert_eq!(packet.next_header(), header.next_header.0);
        prop_assert_eq!(packet.hop_limit(), header.hop_limit);
        prop_assert_eq!(packet.src_addr(), Ipv6Addr::from(header.source));
        prop_assert_eq!(packet.dst_addr(), Ipv6Addr::from(header.destination));
        prop_assert_eq!(packet.payload().len(), usize::from(header.payload_length));
        let repr = ipv6::Repr::parse(&packet).unwrap();
        prop_assert_eq!(repr.payload_len, usize::from(header.payload_length));
    }

    #[test]
    fn ipv6_ours_to_theirs(header in ipv6_header()) {
        let repr = ipv6::Repr {
            src_addr: header.source.into(),
            dst_addr: header.destination.into(),
            next_header: header.next_header.0,
            payload_len: usize::from(header.payload_length),
            hop_limit: header.hop_limit,
        };
        let mut bytes = vec![0xffu8; repr.buffer_len()];
        let mut packet = ipv6::Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.set_traffic_class(header.traffic_class);
        packet.set_flow_label(header.flow_label.value());
        let (parsed, rest) = Ipv6Header::from_slice(&bytes).unwrap();
        prop_assert_eq!(&parsed, &header);
        prop_assert_eq!(rest.len(), repr.payload_len);
    }
}

// ---------------------------------------------------------------- TCP

fn tcp_option_element() -> impl Strategy<Value = TcpOptionElement> {
    let block = (any::<u32>(), any::<u32>());
    prop_oneof![
        Just(TcpOptionElement::Noop),
        any::<u16>().prop_map(TcpOptionElement::MaximumSegmentSize),
        any::<u8>().prop_map(TcpOptionElement::WindowScale),
        Just(TcpOptionElement::SelectiveAcknowledgementPermitted),
        (block, prop::array::uniform3(prop::option::of(block))).prop_map(|(first, mut rest)| {
            // etherparse stops at the first absent block.
            if let Some(hole) = rest.iter().position(Option::is_none) {
                rest[hole..].fill(None);
            }
            TcpOptionElement::SelectiveAcknowledgement(first, rest)
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| TcpOptionElement::Timestamp(a, b)),
    ]
}

prop_compose! {
    fn tcp_header()(
        ports in any::<(u16, u16)>(),
        numbers in any::<(u32, u32)>(),
        bits in any::<(u8, bool)>(),
        window_size in any::<u16>(),
        urgent_pointer in any::<u16>(),
        mut elements in prop::collection::vec(tcp_option_element(), 0..8),
    ) -> TcpHeader {
        let options = loop {
            match TcpOptions::try_from_elements(&elements) {
                Ok(options) => break options,
                Err(_) => {
                    elements.pop();
                }
            }
        };
        let (flags, ns) = bits;
        let flag = |bit: u8| flags & bit != 0;
        TcpHeader {
            source_port: ports.0,
            destination_port: ports.1,
            sequence_number: numbers.0,
            acknowledgment_number: numbers.1,
            ns,
            fin: flag(0x01),
            syn: flag(0x02),
            rst: flag(0x04),
            psh: flag(0x08),
            ack: flag(0x10),
            urg: flag(0x20),
            ece: flag(0x40),
            cwr: flag(0x80),
            window_size,
            checksum: 0,
            urgent_pointer,
            options,
        }
    }
}

fn their_flags(header: &TcpHeader) -> u8 {
    [header.fin, header.syn, header.rst, header.psh, header.ack, header.urg, header.ece, header.cwr]
        .iter()
        .enumerate()
        .map(|(bit, &set)| u8::from(set) << bit)
        .sum()
}

/// Our option as etherparse's element, for comparison.
fn as_element(option: TcpOption<'_>) -> Option<TcpOptionElement> {
    Some(match option {
        TcpOption::EndOfList => return None,
        TcpOption::NoOperation => TcpOptionElement::Noop,
        TcpOption::MaxSegmentSize(mss) => TcpOptionElement::MaximumSegmentSize(mss),
        TcpOption::WindowScale(shift) => TcpOptionElement::WindowScale(shift),
        TcpOption::SackPermitted => TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOption::SackRange(blocks) => {
            let mut rest = [None; 3];
            for (slot, block) in rest.iter_mut().zip(blocks.iter().skip(1)) {
                *slot = Some(*block);
            }
            TcpOptionElement::SelectiveAcknowledgement(blocks.as_slice()[0], rest)
        }
        TcpOption::Timestamps { tsval, tsecr } => TcpOptionElement::Timestamp(tsval, tsecr),
        TcpOption::Unknown { kind, .. } => panic!("unexpected unknown option {kind}"),
    })
}

fn tcp_repr() -> impl Strategy<Value = tcp::Repr> {
    let block = (any::<u32>(), any::<u32>());
    (
        any::<(u16, u16, u32)>(),
        prop::option::of(any::<u32>()),
        any::<u8>(),
        any::<u16>(),
        (prop::option::of(any::<u16>()), prop::option::of(any::<u8>()), any::<bool>()),
        prop::array::uniform3(prop::option::of(block)),
        prop::option::of(block),
        0usize..64,
    )
        .prop_map(
            |((src_port, dst_port, seq_number), ack_number, flags, window_len, opts, sack, ts, len)| {
                tcp::Repr {
                    src_port,
                    dst_port,
                    seq_number,
                    ack_number,
                    flags: Flags::from_bits(flags),
                    window_len,
                    max_seg_size: opts.0,
                    window_scale: opts.1,
                    sack_permitted: opts.2,
                    sack_ranges: sack,
                    timestamp: ts,
                    payload_len: len,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tcp_theirs_to_ours(mut header in tcp_header(), (src, dst) in addr_pair(), payload in payload()) {
        header.checksum = tcp_checksum(&header, src, dst, &payload);
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);

        let packet = tcp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.src_port(), header.source_port);
        prop_assert_eq!(packet.dst_port(), header.destination_port);
        prop_assert_eq!(packet.seq_number(), header.sequence_number);
        prop_assert_eq!(packet.ack_number(), header.acknowledgment_number);
        prop_assert_eq!(packet.header_len(), header.header_len());
        prop_assert_eq!(packet.flags().bits(), their_flags(&header));
        prop_assert_eq!(packet.window_len(), header.window_size);
        prop_assert_eq!(packet.checksum(), header.checksum);
        prop_assert_eq!(packet.urgent_at(), header.urgent_pointer);
        prop_assert_eq!(packet.options(), header.options.as_slice());
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert_eq!(
            packet.segment_len(),
            payload.len() + usize::from(header.syn) + usize::from(header.fin)
        );
        prop_assert!(packet.verify_checksum(src, dst));

        let ours: Vec<TcpOptionElement> =
            packet.options_iter().filter_map(|o| as_element(o.unwrap().1)).collect();
        let theirs: Vec<TcpOptionElement> =
            header.options_iterator().map(Result::unwrap).collect();
        prop_assert_eq!(&ours, &theirs);

        let repr = tcp::Repr::parse(&packet, src, dst).unwrap();
        prop_assert_eq!(repr.ack_number, header.ack.then_some(header.acknowledgment_number));
        prop_assert_eq!(repr.flags.bits(), their_flags(&header));
        prop_assert_eq!(repr.payload_len, payload.len());
        let mut mss = None;
        let mut ws = None;
        let mut sack_permitted = false;
        let mut sack_ranges = [None; 3];
        let mut timestamp = None;
        for element in &theirs {
            match *element {
                TcpOptionElement::Noop => {}
                TcpOptionElement::MaximumSegmentSize(v) => mss = Some(v),
                TcpOptionElement::WindowScale(v) => ws = Some(v),
                TcpOptionElement::SelectiveAcknowledgementPermitted => sack_permitted = true,
                TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                    sack_ranges = [Some(first), rest[0], rest[1]];
                }
                TcpOptionElement::Timestamp(a, b) => timestamp = Some((a, b)),
            }
        }
        prop_assert_eq!(repr.max_seg_size, mss);
        prop_assert_eq!(repr.window_scale, ws);
        prop_assert_eq!(repr.sack_permitted, sack_permitted);
        prop_assert_eq!(repr.sack_ranges, sack_ranges);
        prop_assert_eq!(repr.timestamp, timestamp);

        let mut copy = bytes.clone();
        let mut packet = tcp::Packet::new_checked(&mut copy[..]).unwrap();
        packet.fill_checksum(src, dst);
        prop_assert_eq!(packet.checksum(), header.checksum);
    }

    #[test]
    fn tcp_ours_to_theirs(repr in tcp_repr(), (src, dst) in addr_pair(), fill in any::<u8>()) {
        let mut bytes = vec![fill; repr.buffer_len()];
        repr.emit(&mut tcp::Packet::new_unchecked(&mut bytes[..]), src, dst);
        let (header, payload) = TcpHeader::from_slice(&bytes).unwrap();
        prop_assert_eq!(header.header_len(), repr.header_len());
        prop_assert!(repr.header_len() <= tcp::MAX_HEADER_LEN);
        prop_assert_eq!(payload.len(), repr.payload_len);
        prop_assert_eq!(header.source_port, repr.src_port);
        prop_assert_eq!(header.destination_port, repr.dst_port);
        prop_assert_eq!(header.sequence_number, repr.seq_number);
        prop_assert_eq!(header.acknowledgment_number, repr.ack_number.unwrap_or(0));
        prop_assert_eq!(header.ack, repr.ack_number.is_some());
        prop_assert_eq!(their_flags(&header) & !0x10, repr.flags.bits() & !0x10);
        prop_assert!(!header.ns);
        prop_assert_eq!(header.window_size, repr.window_len);
        prop_assert_eq!(header.urgent_pointer, 0);
        prop_assert_eq!(header.checksum, tcp_checksum(&header, src, dst, payload));

        let mut mss = None;
        let mut ws = None;
        let mut sack_permitted = false;
        let mut blocks = Vec::new();
        let mut timestamp = None;
        for element in header.options_iterator() {
            match element.unwrap() {
                TcpOptionElement::Noop => {}
                TcpOptionElement::MaximumSegmentSize(v) => mss = Some(v),
                TcpOptionElement::WindowScale(v) => ws = Some(v),
                TcpOptionElement::SelectiveAcknowledgementPermitted => sack_permitted = true,
                TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                    blocks.push(first);
                    blocks.extend(rest.iter().flatten());
                }
                TcpOptionElement::Timestamp(a, b) => timestamp = Some((a, b)),
            }
        }
        prop_assert_eq!(mss, repr.max_seg_size);
        prop_assert_eq!(ws, repr.window_scale);
        prop_assert_eq!(sack_permitted, repr.sack_permitted);
        prop_assert_eq!(timestamp, repr.timestamp);
        let wanted: Vec<(u32, u32)> = repr.sack_ranges.iter().flatten().copied().collect();
        prop_assert!(wanted.starts_with(&blocks));
        // Every block is emitted unless the options area is full.
        if blocks.len() < wanted.len() {
            prop_assert!(repr.header_len() + 8 > tcp::MAX_HEADER_LEN);
        }
    }
}

// ---------------------------------------------------------------- UDP

proptest! {
    #![proptest_config(config())]

    #[test]
    fn udp_theirs_to_ours(ports in any::<(u16, u16)>(), (src, dst) in addr_pair(), payload in payload(), trailing in 0usize..8) {
        let mut header = UdpHeader {
            source_port: ports.0,
            destination_port: ports.1,
            length: (udp::HEADER_LEN + payload.len()) as u16,
            checksum: 0,
        };
        header.checksum = udp_checksum(&header, src, dst, &payload);
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        bytes.resize(bytes.len() + trailing, 0x99);

        let packet = udp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.src_port(), header.source_port);
        prop_assert_eq!(packet.dst_port(), header.destination_port);
        prop_assert_eq!(packet.len(), header.length);
        prop_assert_eq!(packet.checksum(), header.checksum);
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert!(packet.verify_checksum(src, dst));
        let repr = udp::Repr::parse(&packet).unwrap();
        prop_assert_eq!(repr.payload_len, payload.len());

        let mut copy = bytes.clone();
        let mut packet = udp::Packet::new_checked(&mut copy[..]).unwrap();
        packet.fill_checksum(src, dst);
        prop_assert_eq!(packet.checksum(), header.checksum);
    }

    #[test]
    fn udp_ours_to_theirs(ports in any::<(u16, u16)>(), (src, dst) in addr_pair(), payload in payload()) {
        let repr = udp::Repr { src_port: ports.0, dst_port: ports.1, payload_len: payload.len() };
        let mut bytes = vec![0u8; repr.buffer_len()];
        bytes[udp::HEADER_LEN..].copy_from_slice(&payload);
        repr.emit(&mut udp::Packet::new_unchecked(&mut bytes[..]), src, dst);
        let (header, rest) = UdpHeader::from_slice(&bytes).unwrap();
        prop_assert_eq!(header.source_port, repr.src_port);
        prop_assert_eq!(header.destination_port, repr.dst_port);
        prop_assert_eq!(usize::from(header.length), repr.buffer_len());
        prop_assert_eq!(rest, &payload[..]);
        prop_assert_eq!(header.checksum, udp_checksum(&header, src, dst, &payload));
    }
}

// ---------------------------------------------------------------- ICMPv4, Ethernet

proptest! {
    #![proptest_config(config())]

    #[test]
    fn icmpv4_checksum(type_u8 in any::<u8>(), code_u8 in any::<u8>(), bytes5to8 in any::<[u8; 4]>(), payload in payload()) {
        let header = Icmpv4Header::with_checksum(Icmpv4Type::Unknown { type_u8, code_u8, bytes5to8 }, &payload);
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let mut packet = icmpv4::Packet::new_checked(&mut bytes[..]).unwrap();
        prop_assert_eq!(packet.msg_type(), type_u8);
        prop_assert_eq!(packet.code(), code_u8);
        prop_assert_eq!(packet.rest_of_header(), u32::from_be_bytes(bytes5to8));
        prop_assert_eq!(packet.data(), &payload[..]);
        prop_assert!(packet.verify_checksum());
        packet.fill_checksum();
        prop_assert_eq!(packet.checksum(), header.checksum);
    }

    #[test]
    fn icmpv4_frag_needed_ours_to_theirs(ip in ipv4_header(), mtu in any::<u16>(), room in 0usize..700) {
        let mut original = ip.to_bytes().to_vec();
        original.resize(usize::from(ip.total_len), 0x42);
        let mut buf = vec![0u8; room];
        let result = icmpv4::emit_error(
            &mut buf,
            icmpv4::msg_type::DEST_UNREACHABLE,
            icmpv4::FRAG_NEEDED,
            u32::from(mtu),
            &original,
        );
        let minimum = original.len().min(ip.header_len() + 8);
        let Ok(len) = result else {
            prop_assert!(room < icmpv4::HEADER_LEN + minimum);
            return Ok(());
        };
        let (header, quoted) = Icmpv4Header::from_slice(&buf[..len]).unwrap();
        prop_assert_eq!(
            &header.icmp_type,
            &Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu })
        );
        prop_assert_eq!(header.checksum, Icmpv4Header::with_checksum(header.icmp_type.clone(), quoted).checksum);
        prop_assert!(quoted.len() >= minimum);
        prop_assert!(len <= icmpv4::MAX_ERROR_LEN);
        prop_assert_eq!(quoted, &original[..quoted.len()]);
    }

    #[test]
    fn ethernet_both_ways(source in any::<[u8; 6]>(), destination in any::<[u8; 6]>(), ether_type in any::<u16>(), payload in payload()) {
        let header = Ethernet2Header { source, destination, ether_type: EtherType(ether_type) };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let frame = ethernet::Frame::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(frame.src_addr().0, source);
        prop_assert_eq!(frame.dst_addr().0, destination);
        prop_assert_eq!(frame.ethertype(), ether_type);
        prop_assert_eq!(frame.payload(), &payload[..]);

        let repr = ethernet::Repr::parse(&frame).unwrap();
        let mut out = vec![0u8; ethernet::HEADER_LEN];
        repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
        let (parsed, _) = Ethernet2Header::from_slice(&out).unwrap();
        prop_assert_eq!(parsed, header);
    }

    #[test]
    fn checksum_sum_matches_theirs(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        // etherparse sums native-endian words and leaves the byte order to
        // its callers, which convert with `to_be`.
        let theirs = etherparse::checksum::Sum16BitWords::new().add_slice(&data).ones_complement().to_be();
        prop_assert_eq!(checksum::finish(checksum::sum(&data)), theirs);
    }
}

// ---------------------------------------------------------------- IPv6 extension headers

/// A chain of hop-by-hop (first only), routing (no segments left) and
/// destination options headers of random lengths and contents, then an
/// upper-layer protocol, possibly cut short.
fn ipv6_chain() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec((prop::sample::select(vec![43u8, 60]), 0u8..4, any::<u8>()), 0..7),
        prop::sample::select(vec![6u8, 17, 58, 59, 50, 132]),
        0usize..8,
    )
        .prop_map(|(hop_by_hop, rest, upper, cut)| {
            let mut kinds: Vec<(u8, u8, u8)> = rest;
            if hop_by_hop {
                kinds.insert(0, (0, 0, 0x5a));
            }
            let mut payload = Vec::new();
            for (i, &(kind, len, fill)) in kinds.iter().enumerate() {
                let next = kinds.get(i + 1).map_or(upper, |k| k.0);
                let mut header = vec![fill; (usize::from(len) + 1) * 8];
                header[0] = next;
                header[1] = len;
                if kind == 43 {
                    header[3] = 0; // segments left
                }
                payload.extend_from_slice(&header);
            }
            payload.extend_from_slice(&[0u8; 8]);
            let first = kinds.first().map_or(upper, |k| k.0);
            if cut > 0 {
                payload.truncate(payload.len().saturating_sub(8 + cut));
            }
            let mut bytes = vec![0x60, 0, 0, 0, 0, 0, first, 64];
            bytes.extend_from_slice(&[0u8; 32]);
            bytes[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&payload);
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ipv6_extension_chain_theirs_to_ours(bytes in ipv6_chain()) {
        let packet = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        let theirs = etherparse::Ipv6ExtensionsSlice::from_slice(IpNumber(bytes[6]), packet.payload());
        match (packet.transport(), theirs) {
            (Ok((protocol, at)), Ok((exts, next, _))) => {
                prop_assert_eq!(protocol, next.0);
                prop_assert_eq!(at, ipv6::HEADER_LEN + exts.slice().len());
            }
            (Err(ipv6::ChainError::Truncated), Err(_)) => {}
            (ours, theirs) => prop_assert!(false, "ours {:?}, theirs {:?}", ours, theirs.map(|t| t.1)),
        }
    }
}
