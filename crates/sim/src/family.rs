//! The address families a scenario runs in, so one test body covers IPv4,
//! IPv6 and both translations.
//!
//! A scenario is written with IPv4 addresses; [`Family`] gives each node
//! the address it has in the family under test. Nodes on the client side
//! (clients, the VIP) take the client family, nodes on the backend side
//! (local addresses, reals) the backend family. An IPv6 address mirrors
//! its IPv4 one: `10.A.B.C` ↔ `fd10:A:B::C` (the decimal digits read as
//! hex groups), and the documentation networks `192.0.2.C` ↔
//! `2001:db8::C`.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client↔VIP family and the backend family of a load-balanced service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 everywhere.
    V4,
    /// IPv6 everywhere.
    V6,
    /// IPv6 clients and VIP, IPv4 local addresses and reals.
    Nat64,
    /// IPv4 clients and VIP, IPv6 local addresses and reals.
    Nat46,
}

impl Family {
    /// Every family.
    pub const ALL: [Self; 4] = [Self::V4, Self::V6, Self::Nat64, Self::Nat46];

    /// Whether clients and the VIP speak IPv6.
    pub fn client_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat64)
    }

    /// Whether local addresses and reals speak IPv6.
    pub fn backend_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Nat46)
    }

    /// Whether the balancer translates between the two sides.
    pub fn translated(self) -> bool {
        self.client_v6() != self.backend_v6()
    }

    /// The address of a client-side node (a client, the VIP) written as `v4`.
    /// Panics if `v4` is not an IPv4 address of the plan.
    pub fn client(self, v4: &str) -> IpAddr {
        in_family(v4, self.client_v6())
    }

    /// The address of a backend node (a local address, a real) written as `v4`.
    pub fn backend(self, v4: &str) -> IpAddr {
        in_family(v4, self.backend_v6())
    }

    /// IP header bytes of a packet on the client side.
    pub fn client_ip_header(self) -> usize {
        if self.client_v6() { 40 } else { 20 }
    }

    /// IP header bytes of a packet on the backend side.
    pub fn backend_ip_header(self) -> usize {
        if self.backend_v6() { 40 } else { 20 }
    }

    /// Short lowercase name, for file and test names.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
            Self::Nat64 => "nat64",
            Self::Nat46 => "nat46",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn in_family(v4: &str, v6: bool) -> IpAddr {
    let a: Ipv4Addr = v4.parse().unwrap_or_else(|_| panic!("{v4} is not an IPv4 address"));
    if v6 { IpAddr::V6(mirror(a)) } else { IpAddr::V4(a) }
}

/// The IPv6 address mirroring `a` in the address plan. Panics for an
/// address outside `10.0.0.0/8` and `192.0.2.0/24`.
pub fn mirror(a: Ipv4Addr) -> Ipv6Addr {
    // Decimal digits reused as hex digits: 77 → 0x77.
    let hex = |d: u8| u16::from_str_radix(&d.to_string(), 16).unwrap_or(0);
    match a.octets() {
        [10, x, y, z] => Ipv6Addr::new(0xfd10, hex(x), hex(y), 0, 0, 0, 0, hex(z)),
        [192, 0, 2, z] => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, hex(z)),
        _ => panic!("{a} has no IPv6 mirror in the address plan"),
    }
}

/// One `#[test]` per family for each listed scenario `fn name(family: Family)`:
/// `name::V4`, `name::V6`, `name::Nat64`, `name::Nat46` (or only the
/// families given in brackets), so `cargo test Nat64` runs one family.
///
/// ```
/// use rvs_sim::Family;
///
/// fn sides_have_their_families(family: Family) {
///     assert_eq!(family.client("10.0.0.1").is_ipv6(), family.client_v6());
/// }
///
/// fn without_translation(family: Family) {
///     assert!(!family.translated());
/// }
///
/// rvs_sim::family_tests! {
///     sides_have_their_families,
///     without_translation: [V4, V6],
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! family_tests {
    ($($name:ident $(: [$($family:ident),+])?),+ $(,)?) => {
        $($crate::family_tests!(@one $name $(: [$($family),+])?);)+
    };
    (@one $name:ident) => {
        $crate::family_tests!(@one $name: [V4, V6, Nat64, Nat46]);
    };
    (@one $name:ident: [$($family:ident),+]) => {
        mod $name {
            $(
                #[test]
                #[allow(non_snake_case)]
                fn $family() {
                    super::$name($crate::Family::$family);
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_mirror_the_plan() {
        assert_eq!(mirror("10.77.0.2".parse().unwrap()), "fd10:77::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mirror("10.77.1.12".parse().unwrap()), "fd10:77:1::12".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mirror("192.0.2.3".parse().unwrap()), "2001:db8::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(Family::Nat64.client("10.0.0.1"), "fd10::1".parse::<IpAddr>().unwrap());
        assert_eq!(Family::Nat64.backend("10.2.0.1"), "10.2.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(Family::Nat46.backend("10.2.0.1"), "fd10:2::1".parse::<IpAddr>().unwrap());
        assert!(Family::ALL.iter().filter(|f| f.translated()).count() == 2);
    }
}
