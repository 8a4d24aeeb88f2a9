//! Random packet loss with nftables netdev hooks, which act like loss on the
//! wire (the kernel here has no `netem`).

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::ns::Netns;

/// The table name used in every namespace that carries loss rules.
const TABLE: &str = "rvs_loss";

/// Installed loss rules: one `netdev` table per namespace that has any.
#[derive(Debug)]
pub(crate) struct Loss {
    tables: Vec<Netns>,
    uses_egress: bool,
}

impl Loss {
    /// Drops `pct` % (resolution 0.01 %) on each of `ports` in `lb`, both
    /// directions. Toward the reals that is the egress hook when the kernel
    /// and `nft` have it (and `allow_egress`), else the ingress hook of each
    /// real's own interface, which sees the same packets one hop later.
    /// `only` narrows the loss to packets matching one of these nft
    /// expressions (a rule and counter each); empty means every packet.
    pub(crate) fn install(
        lb: &Netns,
        ports: &[String],
        reals: &[(Netns, String)],
        pct: f64,
        allow_egress: bool,
        only: &[&str],
    ) -> io::Result<Self> {
        if !(0.0..=100.0).contains(&pct) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "loss must be within 0..=100 %"));
        }
        let per_10k = (pct * 100.0).round() as u32;
        if allow_egress {
            let mut chains =
                ports.iter().map(|p| chain("in", p, "ingress", per_10k, only)).collect::<String>();
            chains.extend(ports.iter().map(|p| chain("out", p, "egress", per_10k, only)));
            if nft_script(lb, &table(&chains)).is_ok() {
                return Ok(Self { tables: vec![lb.clone()], uses_egress: true });
            }
        }
        let chains = ports.iter().map(|p| chain("in", p, "ingress", per_10k, only)).collect::<String>();
        nft_script(lb, &table(&chains))?;
        let mut loss = Self { tables: vec![lb.clone()], uses_egress: false };
        for (ns, dev) in reals {
            nft_script(ns, &table(&chain("in", dev, "ingress", per_10k, only)))?;
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

fn chain(dir: &str, dev: &str, hook: &str, per_10k: u32, only: &[&str]) -> String {
    // nft rejects `< 10000` against `mod 10000` (out of range), so total loss
    // is written without the random draw.
    let draw =
        if per_10k >= 10_000 { String::new() } else { format!("numgen random mod 10000 < {per_10k} ") };
    let rules: String = if only.is_empty() { &[""][..] } else { only }
        .iter()
        .map(|m| format!("    {m}{}{draw}counter drop\n", if m.is_empty() { "" } else { " " }))
        .collect();
    format!(
        "  chain {dir}_{dev} {{ type filter hook {hook} device \"{dev}\" priority 0; policy accept;\n{rules}  }}\n"
    )
}

/// Applies an nft script in `ns` atomically (all of it or none).
fn nft_script(ns: &Netns, script: &str) -> io::Result<()> {
    let mut child = ns
        .cmd("nft", ["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft in {} failed: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
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
        let c = chain("out", "r2", "egress", 250, &[]);
        assert!(
            c.contains("chain out_r2 { type filter hook egress device \"r2\" priority 0; policy accept;")
        );
        assert!(c.contains("numgen random mod 10000 < 250 counter drop"));
        assert!(chain("in", "r1", "ingress", 10_000, &[]).contains("policy accept;\n    counter drop"));
        let syn = chain("in", "r1", "ingress", 500, &["tcp dport 80", "udp dport 53"]);
        assert!(syn.contains("\n    tcp dport 80 numgen random mod 10000 < 500 counter drop\n"), "{syn}");
        assert!(syn.contains("\n    udp dport 53 numgen random mod 10000 < 500 counter drop\n"), "{syn}");
    }
}
