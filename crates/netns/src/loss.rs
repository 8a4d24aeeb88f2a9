//! Random packet loss with nftables netdev hooks, which act like loss on the
//! wire (the kernel here has no `netem`). A netdev hook sees every frame
//! whatever its family, so the rules drop IPv4 and IPv6 alike (and, at 100 %,
//! ARP and neighbour discovery too, as a cut wire would).

use std::io;
use std::process::{Command, Stdio};

use crate::ns::Netns;

/// The table name used in every namespace that carries loss rules.
const TABLE: &str = "rvs_loss";

/// Which packets a loss rule drops from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossSelector {
    /// Every packet.
    All,
    /// Only pure SYNs and SYN-ACKs: losing one stalls a connection's
    /// handshake for a retransmission timeout, while established traffic
    /// flows untouched (the seed's experiment).
    SynAndSynAck,
}

impl LossSelector {
    /// The nft matches, one rule each, that pick the selected packets.
    fn matches(self) -> &'static [&'static str] {
        match self {
            Self::All => &[""],
            Self::SynAndSynAck => &["tcp flags & (syn|ack) == syn ", "tcp flags & (syn|ack) == (syn|ack) "],
        }
    }
}

/// Drops `pct` % (resolution 0.01 %, within 0..=100) of the packets `packets` selects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRule {
    /// Which packets.
    pub packets: LossSelector,
    /// Share of them dropped, in percent.
    pub pct: f64,
}

impl LossRule {
    /// `pct` % of every packet.
    pub fn all(pct: f64) -> Self {
        Self { packets: LossSelector::All, pct }
    }

    /// `pct` % of the pure SYNs and SYN-ACKs.
    pub fn syn_and_syn_ack(pct: f64) -> Self {
        Self { packets: LossSelector::SynAndSynAck, pct }
    }

    /// The rule's lines in a chain.
    fn nft(self) -> String {
        let per_10k = (self.pct * 100.0).round() as u32;
        // nft rejects `< 10000` against `mod 10000` (out of range), so total loss
        // is written without the random draw.
        let draw =
            if per_10k >= 10_000 { String::new() } else { format!("numgen random mod 10000 < {per_10k} ") };
        self.packets.matches().iter().map(|m| format!("    {m}{draw}counter drop\n")).collect()
    }
}

/// Installed loss rules: one `netdev` table per namespace that has any.
#[derive(Debug)]
pub(crate) struct Loss {
    tables: Vec<Netns>,
    uses_egress: bool,
}

impl Loss {
    /// Applies `rules` on each of `ports` in `lb`, both directions. Toward
    /// the reals that is the egress hook when the kernel and `nft` have it
    /// (and `allow_egress`), else the ingress hook of each real's own
    /// interface, which sees the same packets one hop later. A packet that
    /// several rules select meets each rule's draw in turn.
    pub(crate) fn install(
        lb: &Netns,
        ports: &[String],
        reals: &[(Netns, String)],
        rules: &[LossRule],
        allow_egress: bool,
    ) -> io::Result<Self> {
        if rules.iter().any(|r| !(0.0..=100.0).contains(&r.pct)) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "loss must be within 0..=100 %"));
        }
        let rules: String = rules.iter().filter(|r| r.pct > 0.0).map(|r| r.nft()).collect();
        if allow_egress {
            let mut chains = ports.iter().map(|p| chain("in", p, "ingress", &rules)).collect::<String>();
            chains.extend(ports.iter().map(|p| chain("out", p, "egress", &rules)));
            if lb.nft(&table(&chains)).is_ok() {
                return Ok(Self { tables: vec![lb.clone()], uses_egress: true });
            }
        }
        let chains = ports.iter().map(|p| chain("in", p, "ingress", &rules)).collect::<String>();
        lb.nft(&table(&chains))?;
        let mut loss = Self { tables: vec![lb.clone()], uses_egress: false };
        for (ns, dev) in reals {
            ns.nft(&table(&chain("in", dev, "ingress", &rules)))?;
            loss.tables.push(ns.clone());
        }
        Ok(loss)
    }

    pub(crate) fn uses_egress(&self) -> bool {
        self.uses_egress
    }

    /// Sum of the drop counters in all tables.
    pub(crate) fn dropped(&self) -> io::Result<u64> {
        let mut total = 0;
        for ns in &self.tables {
            let out = ns.run("nft", ["list", "table", "netdev", TABLE])?;
            total += counter_packets(&out);
        }
        Ok(total)
    }

    /// Leaves the tables in place.
    pub(crate) fn keep(mut self) {
        self.tables.clear();
    }

    /// Deletes the tables; a table whose namespace is already gone counts as
    /// deleted. Stops at nothing: every table is tried.
    pub(crate) fn remove(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for ns in self.tables.drain(..) {
            if ns.exists()
                && let Err(e) = ns.run("nft", ["delete", "table", "netdev", TABLE])
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn table(chains: &str) -> String {
    format!("table netdev {TABLE} {{\n{chains}}}\n")
}

fn chain(dir: &str, dev: &str, hook: &str, rules: &str) -> String {
    format!(
        "  chain {dir}_{dev} {{ type filter hook {hook} device \"{dev}\" priority 0; policy accept;\n{rules}  }}\n"
    )
}

/// Adds up the `counter packets N` figures of an `nft list` output.
fn counter_packets(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

/// Whether the `nft` program can be run here.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_packets_in_listing() {
        let listing = "table netdev rvs_loss {\n chain in_r1 {\n numgen random mod 10000 < 500 counter packets 7 bytes 420 drop\n }\n \
                       chain out_r1 {\n counter packets 5 bytes 300 drop\n }\n}\n";
        assert_eq!(counter_packets(listing), 12);
    }

    #[test]
    fn chain_text() {
        let c = chain("out", "r2", "egress", &LossRule::all(2.5).nft());
        assert!(
            c.contains("chain out_r2 { type filter hook egress device \"r2\" priority 0; policy accept;")
        );
        assert!(c.contains("\n    numgen random mod 10000 < 250 counter drop\n  }"));
        assert!(
            chain("in", "r1", "ingress", &LossRule::all(100.0).nft())
                .contains("policy accept;\n    counter drop")
        );
    }

    #[test]
    fn syn_rules_match_pure_syns_and_syn_acks_only() {
        assert_eq!(
            LossRule::syn_and_syn_ack(5.0).nft(),
            "    tcp flags & (syn|ack) == syn numgen random mod 10000 < 500 counter drop\n    \
             tcp flags & (syn|ack) == (syn|ack) numgen random mod 10000 < 500 counter drop\n"
        );
        assert_eq!(
            LossRule::syn_and_syn_ack(100.0).nft(),
            "    tcp flags & (syn|ack) == syn counter drop\n    tcp flags & (syn|ack) == (syn|ack) counter drop\n"
        );
    }

    #[test]
    fn nft_accepts_the_rules() {
        if !crate::netns_tests_enabled("nft_accepts_the_rules") || !nft_available() {
            return;
        }
        // `nft --check` parses and validates against the kernel without applying.
        let script = table(&chain(
            "in",
            "lo",
            "ingress",
            &[LossRule::all(1.0), LossRule::syn_and_syn_ack(100.0)].map(LossRule::nft).concat(),
        ));
        let mut child =
            Command::new("nft").args(["--check", "-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
        io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "{script}");
    }
}
