//! The control plane: the one place commands become changes.
//!
//! Every change — an `rvs adm` command, `-R`, a config reload — goes the same
//! way: compute the new [`Model`] from the current one without touching
//! either, validate it by the engine's own rules, diff, hand the ops to the
//! [`DataPath`], and only then store it. Any error on the way leaves the
//! model and the data path as they were.

use rvs_core::{ConfigError, Engine, EngineConfig, Instant};
use serde::{Deserialize, Serialize};

use crate::adm::{self, Command, ListView};
use crate::health::{Actions, Health, HealthSettings, Probe, ProbeOutcome};
use crate::model::{Model, Op, apply_all};
use crate::snapshot::Snapshot;

/// The workers' engines, as the control plane reaches them.
pub trait DataPath {
    /// Move every worker's engine to `model`, which the control plane has
    /// validated, so every engine accepts it; an error means a bug or a
    /// worker gone. Each worker takes the model whole, between two batches
    /// of packets, so no packet sees half of a change.
    fn install(&mut self, model: &Model) -> Result<(), DataPathError>;

    /// Apply ops that are actions rather than state (`-Z`, a real's
    /// connections reset, an RTT seeded) to every worker's engine.
    fn apply(&mut self, ops: &[Op]) -> Result<(), DataPathError>;

    /// A snapshot of every worker merged into one; `with_conns` includes
    /// every connection.
    fn snapshot(&mut self, with_conns: bool) -> Result<Snapshot, DataPathError>;
}

/// Why the data path did not carry out a request: the operator sees it as
/// the command's reason, so each names the worker it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataPathError {
    /// The worker's thread has ended.
    #[error("data-path worker {worker} has stopped")]
    Stopped {
        /// The worker's index.
        worker: usize,
    },
    /// The worker did not answer a request in time.
    #[error("data-path worker {worker} did not answer")]
    NoAnswer {
        /// The worker's index.
        worker: usize,
    },
    /// The worker did not take a new model in time.
    #[error("data-path worker {worker} did not take the new configuration")]
    NotInstalled {
        /// The worker's index.
        worker: usize,
    },
    /// The worker's engine refused a model the control plane had validated: a bug.
    #[error("worker {worker}: {error}")]
    Refused {
        /// The worker's index.
        worker: usize,
        /// What the engine refused.
        error: ConfigError,
    },
    /// No worker runs.
    #[error("no data-path worker")]
    NoWorker,
}

/// Why a change of the model was not made; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The new model breaks the engine's rules.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The data path did not take the new model.
    #[error("data path: {0}")]
    DataPath(#[from] DataPathError),
}

/// What a command answers: an exit code and the text for stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reply {
    /// 0 success, 1 the command failed, 2 the command line is wrong.
    pub code: i32,
    /// Listing or other output.
    pub stdout: String,
    /// A one-line reason when `code` is not 0.
    pub stderr: String,
}

impl Reply {
    /// Success with `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self { code: 0, stdout: stdout.into(), stderr: String::new() }
    }

    /// Failure with exit `code` and a one-line reason.
    pub fn error(code: i32, reason: impl Into<String>) -> Self {
        let mut stderr = reason.into();
        stderr.push('\n');
        Self { code, stdout: String::new(), stderr }
    }
}

/// A failed command: exit code and reason.
type Failure = (i32, String);

fn failed(reason: impl ToString) -> Failure {
    (1, reason.to_string())
}

/// The desired state, the health checker's verdicts on it, and what
/// `--rate` needs; see the module documentation.
#[derive(Debug, Default)]
pub struct ControlPlane {
    model: Model,
    /// Which reals are up; it scales the model's weights into what the data path runs.
    health: Health,
    /// What the data path runs: `model` with the health checker's weights.
    installed: Model,
    /// The two latest samples of [`Self::sample_rates`], older first.
    samples: (Option<Snapshot>, Option<Snapshot>),
}

impl ControlPlane {
    /// A control plane whose data path already runs `model` (every real up).
    pub fn new(model: Model) -> Self {
        Self::with_health(model, HealthSettings::default())
    }

    /// [`Self::new`], with health checking set by `settings`.
    pub fn with_health(model: Model, settings: HealthSettings) -> Self {
        let mut health = Health::new(settings.clone());
        health.sync(&model, &settings);
        Self { installed: model.clone(), model, health, samples: (None, None) }
    }

    /// The health checker.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Apply new `[health]` settings (a reload); states of reals that stay are kept.
    pub fn set_health_settings(&mut self, settings: &HealthSettings) {
        self.health.sync(&self.model, settings);
    }

    /// One turn of the health checker at `now`: probe outcomes, probers
    /// the runtime reports frozen, and the data path's passive counts per
    /// real endpoint. New weights go to the data path; the rest of what
    /// was decided (transitions to log, resets, RTT seeds) is returned.
    pub fn health_tick(
        &mut self,
        now: Instant,
        outcomes: Vec<(Probe, ProbeOutcome)>,
        stuck: &std::collections::BTreeSet<Probe>,
        passive: Option<&std::collections::BTreeMap<rvs_core::Endpoint, rvs_core::PassiveCounters>>,
        dp: &mut dyn DataPath,
    ) -> Result<Actions, DataPathError> {
        for (probe, outcome) in outcomes {
            self.health.on_probe(now, &probe, outcome);
        }
        self.health.set_stuck(stuck);
        if let Some(counts) = passive {
            self.health.on_passive(now, counts);
        }
        self.health.tick(now);
        let effective = self.health.effective(&self.model);
        if effective != self.installed {
            dp.install(&effective)?;
            self.installed = effective;
        }
        Ok(self.health.take_actions())
    }

    /// A snapshot of the data path with the health checker's view written in.
    pub fn snapshot(&self, dp: &mut dyn DataPath, with_conns: bool) -> Result<Snapshot, DataPathError> {
        let mut snap = dp.snapshot(with_conns)?;
        self.health.annotate(&mut snap);
        Ok(snap)
    }

    /// The desired state in force.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// An `rvs adm` command line (argv without the program name); `stdin` is what -R reads.
    pub fn adm(&mut self, argv: &[String], stdin: &str, dp: &mut dyn DataPath) -> Reply {
        let result = adm::parse(argv).map_err(|e| (2, e)).and_then(|cmd| self.run(&cmd, stdin, dp));
        match result {
            Ok(stdout) => Reply::ok(stdout),
            Err((code, reason)) => Reply::error(code, reason),
        }
    }

    /// Replace the whole model (config reload): validate, diff, apply; on error nothing changes.
    pub fn replace(&mut self, new: Model, dp: &mut dyn DataPath) -> Result<(), ChangeError> {
        self.commit(new, dp)
    }

    /// Called about every 2 s by the daemon with a fresh snapshot; keeps what --rate shows.
    pub fn sample_rates(&mut self, snap: &Snapshot) {
        let mut snap = snap.clone();
        snap.conns = None;
        self.samples = (self.samples.1.take(), Some(snap));
    }

    fn run(&mut self, cmd: &Command, stdin: &str, dp: &mut dyn DataPath) -> Result<String, Failure> {
        match cmd {
            Command::Help => Ok(adm::USAGE.to_owned()),
            Command::Save => Ok(adm::save(&self.model)),
            Command::Zero => dp.apply(&[Op::ZeroCounters]).map(|()| String::new()).map_err(failed),
            Command::List(args) => {
                let snap = self.snapshot(dp, args.view == ListView::Connections).map_err(failed)?;
                let rates = match &self.samples {
                    (Some(old), Some(new)) => adm::rates(old, new),
                    _ => Vec::new(),
                };
                adm::list(&snap, args, &rates).map_err(failed)
            }
            Command::GetLaddr { service, json } => {
                let snap = dp.snapshot(false).map_err(failed)?;
                adm::list_laddrs(&snap, *service, *json).map_err(failed)
            }
            Command::Restore => {
                let new = self.restored(stdin)?;
                self.commit(new, dp).map(|()| String::new()).map_err(failed)
            }
            changing => {
                let new = changing.edit(&self.model).map_err(failed)?;
                self.commit(new, dp).map(|()| String::new()).map_err(failed)
            }
        }
    }

    /// The model after every line of `-R` input, each checked against a
    /// scratch engine as it comes so an error names its line.
    fn restored(&self, input: &str) -> Result<Model, Failure> {
        let commands = adm::parse_restore(input).map_err(|e| (2, e))?;
        let cfg = EngineConfig { max_conns: 1, ..EngineConfig::default() };
        let mut scratch = Engine::new(cfg, [0; 32], Instant::ZERO);
        apply_all(&mut scratch, &Model::default().diff(&self.model))
            .map_err(|e| failed(format!("current rules are invalid: {e}")))?;
        let mut model = self.model.clone();
        for (line, cmd) in commands {
            let next = cmd.edit(&model).map_err(|e| failed(format!("line {line}: {e}")))?;
            apply_all(&mut scratch, &model.diff(&next)).map_err(|e| failed(format!("line {line}: {e}")))?;
            model = next;
        }
        Ok(model)
    }

    fn commit(&mut self, new: Model, dp: &mut dyn DataPath) -> Result<(), ChangeError> {
        new.validate()?;
        let settings = self.health.settings().clone();
        self.health.sync(&new, &settings);
        let effective = self.health.effective(&new);
        if effective != self.installed
            && let Err(e) = dp.install(&effective)
        {
            self.health.sync(&self.model, &settings);
            return Err(e.into());
        }
        self.installed = effective;
        self.model = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adm::parse_endpoint;
    use rvs_core::{Endpoint, Proto, WorkerSlice};

    /// Two workers, as the daemon runs them, each with its own engine.
    struct TestPath {
        engines: Vec<Engine>,
        installed: Model,
        now: Instant,
    }

    impl TestPath {
        fn new() -> Self {
            let engines = (0..2)
                .map(|index| {
                    let cfg =
                        EngineConfig { worker: WorkerSlice { index, count: 2 }, ..EngineConfig::default() };
                    Engine::new(cfg, [7; 32], Instant::ZERO)
                })
                .collect();
            Self { engines, installed: Model::default(), now: Instant::from_secs(1) }
        }

        /// A UDP datagram from `client` to `vip` through worker `w`.
        fn udp(&mut self, w: usize, client: &str, vip: &str) {
            let c: std::net::SocketAddrV4 = client.parse().unwrap();
            let v: std::net::SocketAddrV4 = vip.parse().unwrap();
            let mut pkt = Vec::new();
            etherparse::PacketBuilder::ipv4(c.ip().octets(), v.ip().octets(), 64)
                .udp(c.port(), v.port())
                .write(&mut pkt, b"hello")
                .unwrap();
            let verdict = self.engines[w].handle(self.now, &mut pkt);
            assert!(matches!(verdict, rvs_core::Verdict::Forward { .. }), "{verdict:?}");
        }
    }

    impl DataPath for TestPath {
        fn install(&mut self, model: &Model) -> Result<(), DataPathError> {
            let ops = self.installed.diff(model);
            for (worker, e) in self.engines.iter_mut().enumerate() {
                apply_all(e, &ops).map_err(|error| DataPathError::Refused { worker, error })?;
            }
            self.installed = model.clone();
            Ok(())
        }

        fn apply(&mut self, ops: &[Op]) -> Result<(), DataPathError> {
            for (worker, e) in self.engines.iter_mut().enumerate() {
                apply_all(e, ops).map_err(|error| DataPathError::Refused { worker, error })?;
            }
            Ok(())
        }

        fn snapshot(&mut self, with_conns: bool) -> Result<Snapshot, DataPathError> {
            let mut snaps = self.engines.iter().map(|e| Snapshot::capture(e, self.now, with_conns));
            let mut all = snaps.next().ok_or(DataPathError::NoWorker)?;
            snaps.for_each(|s| all.merge(s));
            Ok(all)
        }
    }

    fn adm(plane: &mut ControlPlane, dp: &mut TestPath, line: &str) -> Reply {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        plane.adm(&argv, "", dp)
    }

    fn ok(plane: &mut ControlPlane, dp: &mut TestPath, line: &str) -> String {
        let r = adm(plane, dp, line);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{line}");
        r.stdout
    }

    fn restore(plane: &mut ControlPlane, dp: &mut TestPath, input: &str) -> Reply {
        plane.adm(&["-R".to_owned()], input, dp)
    }

    fn built() -> (ControlPlane, TestPath) {
        let mut plane = ControlPlane::new(Model::default());
        let mut dp = TestPath::new();
        for line in [
            "-A -t 10.0.0.1:80 -s rr -j enable",
            "-a -t 10.0.0.1:80 -r 10.0.1.1 -b -w 2",
            "-a -t 10.0.0.1:80 -r 10.0.1.2:8080",
            "-P -t 10.0.0.1:80 -z 10.0.2.1",
            "-A -u 10.0.0.1:53 --conn-timeout 30",
            "-a -u 10.0.0.1:53 -r 10.0.1.1:53",
            "-P -u 10.0.0.1:53 -z 10.0.2.1",
        ] {
            ok(&mut plane, &mut dp, line);
        }
        (plane, dp)
    }

    #[test]
    fn build_list_edit_delete() {
        let (mut plane, mut dp) = built();
        let listing = ok(&mut plane, &mut dp, "-L -n");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            listing,
            format!(
                "rvs {version} FullNAT (conns=0)\n\
                 Prot LocalAddress:Port Scheduler Flags\n\
                 \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn State\n\
                 TCP  10.0.0.1:80 rr synproxy\n\
                 \x20 -> 10.0.1.1:80                  FullNat 2      0          0          up\n\
                 \x20 -> 10.0.1.2:8080                FullNat 1      0          0          up\n\
                 UDP  10.0.0.1:53 wrr\n\
                 \x20 -> 10.0.1.1:53                  FullNat 1      0          0          up\n"
            )
        );
        ok(&mut plane, &mut dp, "-e -t 10.0.0.1:80 -r 10.0.1.1:80 -w 5");
        let one = ok(&mut plane, &mut dp, "-L -t 10.0.0.1:80");
        assert!(one.starts_with("Prot LocalAddress:Port"), "{one}");
        assert!(one.contains("  -> 10.0.1.1:80                  FullNat 5 "), "{one}");
        assert!(!one.contains("UDP"));
        ok(&mut plane, &mut dp, "-d -t 10.0.0.1:80 -r 10.0.1.2:8080");
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 -s mh");
        let key = (Proto::Tcp, Endpoint::new("10.0.0.1".parse().unwrap(), 80));
        let spec = &plane.model().services[&key];
        assert_eq!(spec.reals.len(), 1);
        assert_eq!(spec.config.sched, rvs_core::SchedKind::Mh);
        for e in &dp.engines {
            let s = e.service(Proto::Tcp, key.1).unwrap();
            assert_eq!(s.config.sched, rvs_core::SchedKind::Mh);
            assert_eq!(s.reals.iter().filter(|r| r.in_service).count(), 1);
        }
        ok(&mut plane, &mut dp, "-Q -t 10.0.0.1:80 -z 10.0.2.1");
        ok(&mut plane, &mut dp, "-D -t 10.0.0.1:80");
        ok(&mut plane, &mut dp, "--delete-service --udp-service 10.0.0.1:53");
        assert!(plane.model().services.is_empty());
        assert!(dp.engines.iter().all(|e| e.services().count() == 0));
    }

    #[test]
    fn bogus_commands_change_nothing() {
        let (mut plane, mut dp) = built();
        let model = plane.model().clone();
        let listing = ok(&mut plane, &mut dp, "-L -n");
        for (line, code) in [
            ("-A -t 10.0.0.1:80", 1),
            ("-a -t 10.0.0.1:80 -r 10.0.1.1", 1),
            ("-a -t 10.0.0.1:80 -r [::1]:80", 1),
            ("-P -t 10.0.0.1:80 -z ::1", 1),
            ("-P -t 10.0.0.1:80 -z 10.0.2.1", 1),
            ("-Q -t 10.0.0.1:80 -z 10.0.2.9", 1),
            ("-e -t 10.0.0.1:80 -r 10.0.9.9 -w 1", 1),
            ("-d -t 10.0.0.1:80 -r 10.0.9.9", 1),
            ("-D -t 10.0.0.9:80", 1),
            ("-E -t 10.0.0.9:80 -s rr", 1),
            ("-L -t 10.0.0.9:80", 1),
            ("-G -u 10.0.0.9:80", 1),
            ("-a -t 10.0.0.1:80 -r 10.0.1.3 -w 70000", 2),
            ("-a -t 10.0.0.1:80 -r 10.0.1.3 -g", 2),
            ("-A -E -t 10.0.0.1:80", 2),
            ("--frobnicate", 2),
            ("-A -t 10.0.0.1", 2),
            ("-a -t 10.0.0.1:80 -r bogus", 2),
            ("-E -u 10.0.0.1:53 --toa enable", 1),
            ("-E -u 10.0.0.1:53 --proxy-protocol v1", 1),
            ("-A -u 10.0.0.2:53 --proxy-protocol v2", 1),
            ("-E -t 10.0.0.1:80 --proxy-protocol v9", 2),
            ("-E -t 10.0.0.1:80 --toa on", 2),
            ("-E -t 10.0.0.1:80 --toa enable --proxy-protocol v9", 2),
        ] {
            let r = adm(&mut plane, &mut dp, line);
            assert_eq!(r.code, code, "{line}: {r:?}");
            assert!(r.stdout.is_empty(), "{line}");
            assert!(r.stderr.ends_with('\n') && r.stderr.lines().count() == 1, "{line}: {r:?}");
            assert_eq!(plane.model(), &model, "{line}");
        }
        assert_eq!(ok(&mut plane, &mut dp, "-L -n"), listing);
    }

    #[test]
    fn client_address_options_reach_the_engines_and_listings() {
        let (mut plane, mut dp) = built();
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 --toa enable --proxy-protocol v2");
        let key = (Proto::Tcp, Endpoint::new("10.0.0.1".parse().unwrap(), 80));
        for e in &dp.engines {
            let c = &e.service(Proto::Tcp, key.1).unwrap().config;
            assert_eq!((c.toa, c.proxy_protocol, c.synproxy), (true, rvs_core::ProxyProtocol::V2, true));
        }
        let listing = ok(&mut plane, &mut dp, "-L -n -t 10.0.0.1:80");
        assert_eq!(
            listing.lines().nth(2),
            Some("TCP  10.0.0.1:80 rr synproxy toa proxy-protocol v2"),
            "{listing}"
        );
        // -E keeps what it is not given.
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 -s wrr --toa disable");
        let listing = ok(&mut plane, &mut dp, "-L -n -t 10.0.0.1:80");
        assert_eq!(
            listing.lines().nth(2),
            Some("TCP  10.0.0.1:80 wrr synproxy proxy-protocol v2"),
            "{listing}"
        );
        assert!(!plane.model().services[&key].config.toa);
        let snap: Snapshot =
            serde_json::from_str(&ok(&mut plane, &mut dp, "-L --json -t 10.0.0.1:80")).unwrap();
        assert_eq!((snap.services[0].toa, snap.services[0].proxy_protocol.as_str()), (false, "v2"));
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&mut plane, &mut dp, "-L --stats --json")).unwrap();
        assert_eq!(stats["client_addr"]["proxy_headers"], 0);
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 --proxy-protocol disable");
        let listing = ok(&mut plane, &mut dp, "-L -n -t 10.0.0.1:80");
        assert_eq!(listing.lines().nth(2), Some("TCP  10.0.0.1:80 wrr synproxy"), "{listing}");
        for e in &dp.engines {
            let c = &e.service(Proto::Tcp, key.1).unwrap().config;
            assert_eq!((c.toa, c.proxy_protocol), (false, rvs_core::ProxyProtocol::Disabled));
        }
    }

    #[test]
    fn save_restore_round_trip() {
        let (mut plane, mut dp) = built();
        ok(&mut plane, &mut dp, "--set 900 20 0");
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 --toa enable --proxy-protocol v2");
        ok(&mut plane, &mut dp, "-A -t [2001:db8::1]:443 -s sh --proxy-protocol v1");
        ok(&mut plane, &mut dp, "-a -t [2001:db8::1]:443 -r [2001:db8::2] -w 0");
        ok(&mut plane, &mut dp, "-P -t [2001:db8::1]:443 -z 2001:db8::100");
        let saved = ok(&mut plane, &mut dp, "-S -n");
        let mut fresh = ControlPlane::new(Model::default());
        let mut fresh_dp = TestPath::new();
        let r = restore(&mut fresh, &mut fresh_dp, &saved);
        assert_eq!(r, Reply::ok(""));
        assert_eq!(fresh.model(), plane.model());
        assert_eq!(ok(&mut fresh, &mut fresh_dp, "-L -n"), ok(&mut plane, &mut dp, "-L -n"));
        assert_eq!(ok(&mut fresh, &mut fresh_dp, "-S"), saved);
        assert!(
            saved.contains("-A -t 10.0.0.1:80 -s rr -j enable --toa enable --proxy-protocol v2\n"),
            "{saved}"
        );
        assert!(saved.contains("-A -t [2001:db8::1]:443 -s sh --proxy-protocol v1\n"), "{saved}");

        // -S, -C, -R on the same daemon gives back the same rules.
        let listing = ok(&mut plane, &mut dp, "-L -n");
        let model = plane.model().clone();
        ok(&mut plane, &mut dp, "-C");
        assert!(plane.model().services.is_empty());
        assert_eq!(restore(&mut plane, &mut dp, &saved), Reply::ok(""));
        assert_eq!(plane.model(), &model);
        assert_eq!(ok(&mut plane, &mut dp, "-L -n"), listing);
        assert_eq!(ok(&mut plane, &mut dp, "-S"), saved);
        let configs = |e: &Engine| {
            let mut c: Vec<_> = e.services().map(|s| s.config.clone()).collect();
            c.sort_by_key(|c| (c.proto, c.vip));
            c
        };
        for e in &dp.engines {
            assert_eq!(configs(e), configs(&fresh_dp.engines[0]));
        }
    }

    /// IPv6 addresses appear as ipvsadm writes them, `[addr]:port`, in the
    /// listing, `-G`, `--json` and the metrics labels, and read back.
    #[test]
    fn ipv6_addresses_round_trip_in_listings() {
        let mut plane = ControlPlane::new(Model::default());
        let mut dp = TestPath::new();
        for line in [
            "-A -t [2001:db8::1]:80 -s rr",
            "-a -t [2001:db8::1]:80 -r [2001:db8:1::11]:8080 -b",
            "-P -t [2001:db8::1]:80 -z 2001:db8:3::1",
        ] {
            ok(&mut plane, &mut dp, line);
        }
        let listing = ok(&mut plane, &mut dp, "-L -n");
        assert!(listing.contains("\nTCP  [2001:db8::1]:80 rr\n"), "{listing}");
        assert!(listing.contains("\n  -> [2001:db8:1::11]:8080        FullNat 1 "), "{listing}");
        assert_eq!(ok(&mut plane, &mut dp, "-L -n -t [2001:db8::1]:80").lines().count(), 4);
        let laddrs = ok(&mut plane, &mut dp, "-G -t [2001:db8::1]:80");
        assert!(laddrs.contains(" 2001:db8:3::1 ") && laddrs.contains(" [2001:db8:1::11]:8080 "), "{laddrs}");
        let snap: Snapshot = serde_json::from_str(&ok(&mut plane, &mut dp, "-L --json")).unwrap();
        let svc = &snap.services[0];
        assert_eq!(
            (svc.vip.as_str(), svc.reals[0].endpoint.as_str()),
            ("[2001:db8::1]:80", "[2001:db8:1::11]:8080")
        );
        assert_eq!(svc.laddrs, ["2001:db8:3::1"]);
        let vip = parse_endpoint(&svc.vip, 0, "VIP").unwrap();
        assert!(plane.model().services.contains_key(&(Proto::Tcp, vip)));
        let metrics = crate::metrics::render(&dp.snapshot(false).unwrap());
        assert!(
            metrics.contains(
                "rvs_real_weight{proto=\"tcp\",vip=\"[2001:db8::1]:80\",real=\"[2001:db8:1::11]:8080\"} 1"
            ),
            "{metrics}"
        );
    }

    /// NAT64 and NAT46 services go through `rvs adm` to every engine, list
    /// with their families as given, and save and restore to the same rules;
    /// a local address of the other family than the reals' is refused with
    /// the argument named, and changes nothing.
    #[test]
    fn translations_round_trip_through_adm() {
        let mut plane = ControlPlane::new(Model::default());
        let mut dp = TestPath::new();
        for line in [
            "-A -t [2001:db8::1]:80 -j enable",
            "-a -t [2001:db8::1]:80 -r 10.0.0.1:80 -b",
            "-P -t [2001:db8::1]:80 -z 10.0.3.1",
            "-A -u 10.0.0.9:53",
            "-a -u 10.0.0.9:53 -r [fd10:77:1::11]:53 -b",
            "-P -u 10.0.0.9:53 -z fd10:77:3::1",
        ] {
            ok(&mut plane, &mut dp, line);
        }
        let nat64 = (Proto::Tcp, parse_endpoint("[2001:db8::1]:80", 0, "VIP").unwrap());
        for e in &dp.engines {
            let s = e.service(nat64.0, nat64.1).unwrap();
            assert_eq!(s.config.laddrs, ["10.0.3.1".parse::<std::net::IpAddr>().unwrap()]);
        }
        let listing = ok(&mut plane, &mut dp, "-L -n");
        assert!(listing.contains("TCP  [2001:db8::1]:80 wrr synproxy\n  -> 10.0.0.1:80 "), "{listing}");
        assert!(listing.contains("UDP  10.0.0.9:53 wrr\n  -> [fd10:77:1::11]:53 "), "{listing}");
        let model = plane.model().clone();
        for (line, arg) in [
            ("-P -t [2001:db8::1]:80 -z 2001:db8::5", "-z 2001:db8::5: "),
            ("-a -u 10.0.0.9:53 -r 10.0.1.1:53", "-r 10.0.1.1:53: "),
        ] {
            let r = adm(&mut plane, &mut dp, line);
            assert_eq!(r.code, 1, "{line}: {r:?}");
            assert!(r.stderr.starts_with(arg) && r.stderr.contains("share one family"), "{line}: {r:?}");
            assert_eq!(plane.model(), &model);
        }
        let saved = ok(&mut plane, &mut dp, "-S -n");
        let mut fresh = ControlPlane::new(Model::default());
        let mut fresh_dp = TestPath::new();
        assert_eq!(restore(&mut fresh, &mut fresh_dp, &saved), Reply::ok(""));
        assert_eq!(fresh.model(), plane.model());
        assert_eq!(ok(&mut fresh, &mut fresh_dp, "-L -n"), listing);
        let snap: Snapshot = serde_json::from_str(&ok(&mut fresh, &mut fresh_dp, "-L --json")).unwrap();
        let vips: Vec<(&str, &str, &str)> = snap
            .services
            .iter()
            .map(|s| (s.vip.as_str(), s.laddrs[0].as_str(), s.reals[0].endpoint.as_str()))
            .collect();
        assert_eq!(
            vips,
            [
                ("[2001:db8::1]:80", "10.0.3.1", "10.0.0.1:80"),
                ("10.0.0.9:53", "fd10:77:3::1", "[fd10:77:1::11]:53")
            ]
        );
    }

    #[test]
    fn restore_is_all_or_nothing() {
        let (mut plane, mut dp) = built();
        let model = plane.model().clone();
        let input = "-C\n-A -t 10.0.0.5:80\n-a -t 10.0.0.5:80 -r 10.0.1.1\n-a -t 10.0.0.5:80 -r [::1]:80\n";
        let r = restore(&mut plane, &mut dp, input);
        assert_eq!(r.code, 1);
        assert!(r.stderr.starts_with("line 4: "), "{r:?}");
        assert_eq!(plane.model(), &model);
        let r = restore(&mut plane, &mut dp, "-C\n-A -t 10.0.0.5:80\n-x\n");
        assert_eq!(r.code, 2);
        assert!(r.stderr.starts_with("line 3: "), "{r:?}");
        let r = restore(&mut plane, &mut dp, "-A -t 10.0.0.1:80\n");
        assert!(r.stderr.starts_with("line 1: service TCP 10.0.0.1:80 already exists"), "{r:?}");
        assert_eq!(plane.model(), &model);
        for e in &dp.engines {
            assert_eq!(e.services().count(), 2);
        }
        // A good input replaces everything at once.
        let r = restore(&mut plane, &mut dp, "-C\n-A -t 10.0.0.5:80\n-a -t 10.0.0.5:80 -r 10.0.1.1\n");
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(plane.model().services.len(), 1);
    }

    #[test]
    fn traffic_listings_and_zero() {
        let (mut plane, mut dp) = built();
        plane.sample_rates(&dp.snapshot(false).unwrap());
        dp.udp(0, "192.0.2.1:5000", "10.0.0.1:53");
        dp.udp(1, "192.0.2.2:5001", "10.0.0.1:53");
        dp.now = Instant::from_secs(3);
        plane.sample_rates(&dp.snapshot(false).unwrap());
        let stats = ok(&mut plane, &mut dp, "-L -n --stats -u 10.0.0.1:53");
        assert_eq!(
            stats,
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
             \x20 -> RemoteAddress:Port\n\
             UDP  10.0.0.1:53                         2        2        0       66        0\n\
             \x20 -> 10.0.1.1:53                         2        2        0       66        0\n"
        );
        let rate = ok(&mut plane, &mut dp, "-L --rate -u 10.0.0.1:53");
        assert!(
            rate.contains("UDP  10.0.0.1:53                         1        1        0       33        0\n")
        );
        let conns = ok(&mut plane, &mut dp, "-L -c");
        let lines: Vec<&str> = conns.lines().collect();
        assert_eq!(lines[0], "IPVS connection entries");
        assert_eq!(
            lines[1],
            "pro expire state       source             virtual            local              destination"
        );
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].starts_with("UDP 00:28  ESTABLISHED 192.0.2.1:5000     10.0.0.1:53        10.0.2.1:"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(" 10.0.1.1:53"));
        let laddrs = ok(&mut plane, &mut dp, "-G -u 10.0.0.1:53");
        let row = laddrs.lines().nth(2).unwrap();
        assert!(row.contains("10.0.2.1") && row.contains("10.0.1.1:53"), "{laddrs}");
        assert_eq!(row.split_whitespace().nth(2), Some("2"), "{laddrs}");
        ok(&mut plane, &mut dp, "-Z");
        let zeroed = ok(&mut plane, &mut dp, "-L --stats --exact -u 10.0.0.1:53");
        assert!(zeroed.contains("UDP  10.0.0.1:53                         0        0"), "{zeroed}");
        assert_eq!(ok(&mut plane, &mut dp, "-L --timeout"), "Timeout (tcp tcpfin udp): 900 3 300\n");
    }

    #[test]
    fn json_listings_parse() {
        let (mut plane, mut dp) = built();
        dp.udp(0, "192.0.2.1:5000", "10.0.0.1:53");
        for line in [
            "-L --json",
            "-L --stats --json",
            "-L --rate --json",
            "-L -c --json",
            "-L --timeout --json",
            "-G --json",
        ] {
            let out = ok(&mut plane, &mut dp, line);
            serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{line}: {e}\n{out}"));
        }
        let snap: Snapshot =
            serde_json::from_str(&ok(&mut plane, &mut dp, "-L --json -u 10.0.0.1:53")).unwrap();
        assert_eq!(snap.services.len(), 1);
        assert_eq!(snap.services[0].conn_timeout, Some(30));
        let conns: serde_json::Value = serde_json::from_str(&ok(&mut plane, &mut dp, "-Lc --json")).unwrap();
        assert_eq!(conns[0]["client"], "192.0.2.1:5000");
    }

    #[test]
    fn a_probe_seeds_the_rtt_and_a_down_real_is_reset_on_every_engine() {
        let (mut plane, mut dp) = built();
        let settings = HealthSettings { on_down: crate::health::OnDown::Reset, ..HealthSettings::default() };
        plane.set_health_settings(&settings);
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 --check tcp,fall=1");
        let probe = plane.health().wanted().into_iter().find(|p| p.target.port() == 80).unwrap();
        let outcome = |up| ProbeOutcome {
            up,
            latency: core::time::Duration::from_millis(4),
            connect: up.then_some(core::time::Duration::from_millis(3)),
            detail: String::new(),
        };
        let stuck = Default::default();
        let seeds = plane.health_tick(
            Instant::from_secs(2),
            vec![(probe.clone(), outcome(true))],
            &stuck,
            None,
            &mut dp,
        );
        let actions = seeds.unwrap();
        assert_eq!(actions.rtt_seeds.len(), 1);
        apply_actions(&actions, &mut dp);
        let again = plane.health_tick(
            Instant::from_secs(2),
            vec![(probe.clone(), outcome(true))],
            &stuck,
            None,
            &mut dp,
        );
        assert!(again.unwrap().rtt_seeds.is_empty(), "a real is seeded once: its engines measure it after");
        let vip = Endpoint::new("10.0.0.1".parse().unwrap(), 80);
        for e in &dp.engines {
            let srtt = e.service(Proto::Tcp, vip).unwrap().reals[0].handshake.srtt;
            assert_eq!(srtt, Some(core::time::Duration::from_millis(3)), "the first client pays no cold RTO");
        }
        // The RSTs themselves are the core's (crates/sim/tests/passive.rs); here the op reaches every engine.
        let actions = plane
            .health_tick(Instant::from_secs(3), vec![(probe, outcome(false))], &stuck, None, &mut dp)
            .unwrap();
        assert_eq!(actions.resets.len(), 1);
        apply_actions(&actions, &mut dp);
    }

    /// What the daemon's checker does with a tick's actions.
    fn apply_actions(actions: &Actions, dp: &mut TestPath) {
        let mut ops: Vec<Op> = actions.resets.iter().map(|&((p, v), r)| Op::ResetReal(p, v, r)).collect();
        ops.extend(actions.rtt_seeds.iter().map(|&(r, rtt)| Op::SeedRtt(r, rtt)));
        dp.apply(&ops).unwrap();
    }

    #[test]
    fn health_verdicts_reach_every_engine_and_the_listing() {
        let (mut plane, mut dp) = built();
        ok(&mut plane, &mut dp, "-E -t 10.0.0.1:80 --check tcp,fall=1");
        let probe = plane.health().wanted().into_iter().find(|p| p.target.port() == 80).unwrap();
        let failed = ProbeOutcome {
            up: false,
            latency: core::time::Duration::from_millis(3),
            connect: None,
            detail: "connection refused".into(),
        };
        let stuck = Default::default();
        let actions =
            plane.health_tick(Instant::from_secs(2), vec![(probe, failed)], &stuck, None, &mut dp).unwrap();
        assert_eq!(actions.transitions.len(), 1);
        let vip = Endpoint::new("10.0.0.1".parse().unwrap(), 80);
        for e in &dp.engines {
            let weights: Vec<u32> =
                e.service(Proto::Tcp, vip).unwrap().reals.iter().map(|r| r.weight).collect();
            assert_eq!(weights, [0, 1], "down real at weight 0, the other as configured");
        }
        let listing = ok(&mut plane, &mut dp, "-L -n -t 10.0.0.1:80");
        assert!(
            listing.contains("  -> 10.0.1.1:80                  FullNat 0      0          0          down\n"),
            "{listing}"
        );
        let health = ok(&mut plane, &mut dp, "-L --health");
        assert!(health.contains("tcp 10.0.1.1:80") && health.contains("connection refused"), "{health}");
        // The operator's weight is kept: -S and the model say 2.
        assert!(ok(&mut plane, &mut dp, "-S").contains("-r 10.0.1.1:80 -b -w 2"));
        ok(&mut plane, &mut dp, "-e -t 10.0.0.1:80 -r 10.0.1.1:80 --maintenance up");
        let listing = ok(&mut plane, &mut dp, "-L -n -t 10.0.0.1:80");
        assert!(listing.contains("FullNat 2      0          0          maint up\n"), "{listing}");
        let json: serde_json::Value = serde_json::from_str(&ok(&mut plane, &mut dp, "-L --json")).unwrap();
        let real = &json["services"][0]["reals"][0]["health"];
        assert_eq!(
            (real["maintenance"].as_str(), real["last_check"]["up"].as_bool()),
            (Some("up"), Some(false))
        );
        assert!(real["reason"].as_str().unwrap().contains("connection refused"), "{real}");
    }

    #[test]
    fn replace_validates_first() {
        let (mut plane, mut dp) = built();
        let model = plane.model().clone();
        let mut bad = model.clone();
        let spec = bad.services.values_mut().next().unwrap();
        spec.config.laddrs.push("::1".parse().unwrap());
        assert!(plane.replace(bad, &mut dp).is_err());
        assert_eq!(plane.model(), &model);
        assert!(plane.replace(Model::default(), &mut dp).is_ok());
        assert!(dp.engines.iter().all(|e| e.services().count() == 0));
        let help = adm(&mut plane, &mut dp, "-h");
        assert_eq!(help.code, 0);
        assert!(help.stdout.starts_with("Usage:"));
    }
}
