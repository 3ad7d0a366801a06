//! Seeded network impairment for simulated worlds: what one direction of a
//! link does to the datagrams that cross it (loss, random or in bursts,
//! jitter, reordering, duplication, outages), decided sans-IO per packet
//! from the world's seed, and [`Impairments`], the hook that applies
//! those decisions to the datagrams of a [`HookedNet`] (SIP over UDP,
//! RTP/SRTP, STUN).
//!
//! Streams (TCP, TLS) are not touched here: a lost segment on a real
//! network is a retransmission, which the far end sees as delay; the world
//! gives them delay and outages through turmoil's links instead.
//!
//! Burst loss is the Gilbert–Elliott model (Gilbert 1960, Elliott 1963),
//! as ITU-T G.1050 and RFC 3611 §4.7.2 describe loss bursts: a good and a
//! bad state, a packet lost with one probability in each, the state
//! changing before each packet with `p_enter` (good → bad) and `p_leave`
//! (bad → good). With no loss in the good state and every packet lost in
//! the bad one (Gilbert's simple model), bursts last 1/`p_leave` packets on
//! average and the long-run loss rate is `p_enter / (p_enter + p_leave)`.

use super::hooked::{DatagramHook, HookedNet, Outgoing};
use crate::sip::rng::SeededRng;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How packets are lost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Loss {
    #[default]
    None,
    /// Each packet lost with this probability, independently (Bernoulli).
    Random(f64),
    /// Gilbert–Elliott (see the module doc).
    Bursts {
        p_enter: f64,
        p_leave: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

impl Loss {
    /// Gilbert's model for a long-run loss `rate` in bursts of
    /// `mean_burst` packets on average (`mean_burst` ≥ 1). Not every pair
    /// can be had: the chance of entering a burst, `rate / (1 − rate) /
    /// mean_burst`, must be at most 1, so `rate` ≤ `mean_burst / (mean_burst
    /// + 1)` (at most 50 % in bursts of 1, 75 % in bursts of 3).
    pub fn bursts(rate: f64, mean_burst: f64) -> Result<Loss, String> {
        if !(1.0..=1e6).contains(&mean_burst) {
            return Err(format!(
                "bursts of {mean_burst}: a burst is at least one packet"
            ));
        }
        let p_leave = 1.0 / mean_burst;
        let p_enter = if rate < 1.0 {
            rate * p_leave / (1.0 - rate)
        } else {
            f64::INFINITY
        };
        if !(0.0..=1.0).contains(&p_enter) {
            let most = mean_burst / (mean_burst + 1.0) * 100.0;
            return Err(format!(
                "{:.1} % in bursts of {mean_burst} cannot be: in bursts of {mean_burst} at most {most:.1} % of packets are lost",
                rate * 100.0
            ));
        }
        Ok(Loss::Bursts {
            p_enter,
            p_leave,
            loss_good: 0.0,
            loss_bad: 1.0,
        })
    }

    /// The long-run share of packets lost.
    pub fn rate(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Random(p) => p,
            Loss::Bursts {
                p_enter,
                p_leave,
                loss_good,
                loss_bad,
            } => {
                let bad = if p_enter + p_leave > 0.0 {
                    p_enter / (p_enter + p_leave)
                } else {
                    0.0
                };
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// How the extra delay of each packet is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Jitter {
    #[default]
    None,
    /// Uniform between zero and this.
    Uniform(Duration),
    /// Exponential with this mean, cut at eight times the mean: mostly
    /// small, now and then large, as queueing delay is.
    Exponential(Duration),
}

/// What one direction of a link does to datagrams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    pub loss: Loss,
    pub jitter: Jitter,
    /// Share of packets held back by `reorder_by`, so later ones overtake them.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Share of packets delivered twice (the copy 1 ms after the first).
    pub duplicate: f64,
    /// Windows of world time in which nothing crosses: `[from, to)`.
    pub outages: Vec<(Duration, Duration)>,
}

/// What an impaired direction did, for the report and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    pub offered: u64,
    pub lost: u64,
    /// Lost because an outage was on.
    pub outage: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// One direction of a link with its own random stream and burst state.
#[derive(Debug, Clone)]
pub struct ImpairedLink {
    pub model: Impairment,
    rng: SeededRng,
    bad: bool,
    pub stats: ImpairStats,
}

/// A uniform draw in [0, 1) with 53 bits.
fn unit(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

impl ImpairedLink {
    pub fn new(model: Impairment, rng: SeededRng) -> Self {
        ImpairedLink {
            model,
            rng,
            bad: false,
            stats: ImpairStats::default(),
        }
    }

    /// The fate of one datagram sent at world time `now`: the extra delays
    /// after which its copies arrive (on top of the link's latency); empty
    /// when it is lost. Every packet draws the same number of values
    /// whatever happens to it, so one change of model moves no other
    /// packet's fate.
    pub fn fate(&mut self, now: Duration) -> Vec<Duration> {
        self.stats.offered += 1;
        let r = [
            unit(&mut self.rng),
            unit(&mut self.rng),
            unit(&mut self.rng),
            unit(&mut self.rng),
            unit(&mut self.rng),
        ];
        let lost = match self.model.loss {
            Loss::None => false,
            Loss::Random(p) => r[0] < p,
            Loss::Bursts {
                p_enter,
                p_leave,
                loss_good,
                loss_bad,
            } => {
                self.bad = if self.bad {
                    r[0] >= p_leave
                } else {
                    r[0] < p_enter
                };
                r[1] < if self.bad { loss_bad } else { loss_good }
            }
        };
        if self
            .model
            .outages
            .iter()
            .any(|(a, b)| *a <= now && now < *b)
        {
            self.stats.outage += 1;
            return Vec::new();
        }
        if lost {
            self.stats.lost += 1;
            return Vec::new();
        }
        let mut delay = match self.model.jitter {
            Jitter::None => Duration::ZERO,
            Jitter::Uniform(max) => max.mul_f64(r[2]),
            Jitter::Exponential(mean) => mean.mul_f64((-(1.0 - r[2]).ln()).min(8.0)),
        };
        // Whole milliseconds: traces print them, and the world's tick (5 ms by default)
        // is a whole number of them.
        delay = Duration::from_millis(delay.as_millis() as u64);
        if r[3] < self.model.reorder {
            self.stats.reordered += 1;
            delay += self.model.reorder_by;
        }
        if r[4] < self.model.duplicate {
            self.stats.duplicated += 1;
            return vec![delay, delay + Duration::from_millis(1)];
        }
        vec![delay]
    }
}

/// The impaired directions of a world, keyed by (source, destination)
/// address; shared by every host's [`ImpairedNet`] and the steps that set
/// them. A direction with no entry is left alone.
#[derive(Debug, Clone, Default)]
pub struct Impairments {
    seed: u64,
    links: Arc<Mutex<BTreeMap<(IpAddr, IpAddr), ImpairedLink>>>,
}

impl Impairments {
    pub fn new(seed: u64) -> Self {
        Impairments {
            seed,
            links: Arc::default(),
        }
    }

    /// Change the direction `from` → `to` with `change`, starting from
    /// what it does now (nothing, at first). Each direction draws from a
    /// stream of its own, derived from the seed and the two addresses.
    pub fn update(&self, from: IpAddr, to: IpAddr, change: impl FnOnce(&mut Impairment)) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let seed = self.seed;
        let link = links.entry((from, to)).or_insert_with(|| {
            let rng = SeededRng::for_host(seed, &format!("impairment {from} -> {to}"));
            ImpairedLink::new(Impairment::default(), rng)
        });
        change(&mut link.model);
    }

    /// What each impaired direction did so far.
    pub fn stats(&self) -> Vec<((IpAddr, IpAddr), ImpairStats)> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.iter().map(|(k, l)| (*k, l.stats)).collect()
    }

    /// The fate of a datagram `from` → `to` at `now`; `None` when that
    /// direction is not impaired.
    fn fate(&self, from: IpAddr, to: IpAddr, now: Duration) -> Option<Vec<Duration>> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get_mut(&(from, to)).map(|l| l.fate(now))
    }
}

impl DatagramHook for Impairments {
    fn sent(&self, d: &Outgoing<'_>) -> Vec<Duration> {
        self.fate(d.host_ip, d.to.ip(), d.now)
            .unwrap_or_else(|| vec![Duration::ZERO])
    }
}

/// A network whose hosts' datagrams cross the world's [`Impairments`].
pub type ImpairedNet<N> = HookedNet<N, Impairments>;

#[cfg(test)]
mod tests {
    use super::*;

    fn link(model: Impairment, seed: u64) -> ImpairedLink {
        ImpairedLink::new(model, SeededRng::new(seed))
    }

    fn run(l: &mut ImpairedLink, n: usize) -> Vec<Vec<Duration>> {
        (0..n)
            .map(|i| l.fate(Duration::from_millis(20 * i as u64)))
            .collect()
    }

    #[test]
    fn random_loss_converges_on_its_rate() {
        let mut l = link(
            Impairment {
                loss: Loss::Random(0.05),
                ..Impairment::default()
            },
            1,
        );
        let lost = run(&mut l, 100_000).iter().filter(|f| f.is_empty()).count();
        assert!((4_800..=5_200).contains(&lost), "{lost}");
        assert_eq!(l.stats.lost, lost as u64);
    }

    /// Gilbert's model: 2 % in bursts of 3 loses 2 % in the long run, in
    /// runs of 3 packets on average (geometric, so single losses too).
    #[test]
    fn bursts_have_the_rate_and_the_mean_length_asked_for() {
        let loss = Loss::bursts(0.02, 3.0).unwrap();
        assert!((loss.rate() - 0.02).abs() < 1e-12);
        // Gilbert's model cannot lose more than b/(b+1) in bursts of b.
        assert!(Loss::bursts(0.75, 3.0).is_ok());
        assert!(Loss::bursts(0.8, 3.0)
            .unwrap_err()
            .contains("at most 75.0 %"));
        assert!(Loss::bursts(0.9, 1.0).is_err());
        assert!(Loss::bursts(0.1, 0.5).is_err());
        let mut l = link(
            Impairment {
                loss,
                ..Impairment::default()
            },
            2,
        );
        let fates = run(&mut l, 400_000);
        let lost = fates.iter().filter(|f| f.is_empty()).count() as f64;
        assert!((lost / 400_000.0 - 0.02).abs() < 0.002, "{lost}");
        let mut runs = Vec::new();
        let mut current = 0;
        for f in &fates {
            if f.is_empty() {
                current += 1;
            } else if current > 0 {
                runs.push(current);
                current = 0;
            }
        }
        let mean = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
        assert!((2.8..=3.2).contains(&mean), "{mean}");
        assert!(runs.contains(&1) && runs.iter().any(|r| *r >= 8));
        // Random loss at the same rate has runs of ~1.02.
        let mut r = link(
            Impairment {
                loss: Loss::Random(0.02),
                ..Impairment::default()
            },
            2,
        );
        let fates = run(&mut r, 400_000);
        let pairs = fates
            .windows(2)
            .filter(|w| w[0].is_empty() && w[1].is_empty())
            .count();
        assert!(pairs < 300, "{pairs}");
    }

    #[test]
    fn an_outage_drops_exactly_its_window() {
        let mut l = link(
            Impairment {
                outages: vec![(Duration::from_secs(1), Duration::from_secs(2))],
                ..Impairment::default()
            },
            3,
        );
        let fates = run(&mut l, 150); // 0 .. 2.98 s
        for (i, f) in fates.iter().enumerate() {
            let t = 20 * i;
            assert_eq!(f.is_empty(), (1000..2000).contains(&t), "at {t} ms");
        }
        assert_eq!(l.stats.outage, 50);
    }

    #[test]
    fn jitter_duplicates_and_reordering_shape_the_delays() {
        let mut l = link(
            Impairment {
                jitter: Jitter::Uniform(Duration::from_millis(30)),
                duplicate: 0.1,
                reorder: 0.05,
                reorder_by: Duration::from_millis(100),
                ..Impairment::default()
            },
            4,
        );
        let fates = run(&mut l, 20_000);
        let twice = fates.iter().filter(|f| f.len() == 2).count();
        assert!((1_800..=2_200).contains(&twice), "{twice}");
        for f in fates.iter().filter(|f| f.len() == 2) {
            assert_eq!(f[1], f[0] + Duration::from_millis(1));
        }
        let late = fates
            .iter()
            .filter(|f| f[0] >= Duration::from_millis(100))
            .count();
        assert!((900..=1_100).contains(&late), "{late}");
        let plain: Vec<u128> = fates
            .iter()
            .filter(|f| f[0] < Duration::from_millis(100))
            .map(|f| f[0].as_millis())
            .collect();
        let mean = plain.iter().sum::<u128>() as f64 / plain.len() as f64;
        assert!(plain.iter().all(|d| *d <= 30) && (13.5..=16.5).contains(&mean));

        let mut e = link(
            Impairment {
                jitter: Jitter::Exponential(Duration::from_millis(10)),
                ..Impairment::default()
            },
            5,
        );
        let d: Vec<u128> = run(&mut e, 20_000)
            .iter()
            .map(|f| f[0].as_millis())
            .collect();
        let mean = d.iter().sum::<u128>() as f64 / d.len() as f64;
        // Whole milliseconds, rounded down: the mean sits ~0.5 ms under 10.
        assert!((9.0..=10.0).contains(&mean), "{mean}");
        assert!(d.iter().all(|x| *x <= 80) && d.iter().any(|x| *x >= 40));
    }

    /// Each packet draws the same values whatever befalls it: adding loss
    /// leaves the survivors' delays as they were, and the same seed gives
    /// the same fates.
    #[test]
    fn fates_are_seeded_and_one_change_moves_nothing_else() {
        let jitter = Impairment {
            jitter: Jitter::Uniform(Duration::from_millis(40)),
            ..Impairment::default()
        };
        let lossy = Impairment {
            loss: Loss::Random(0.2),
            ..jitter.clone()
        };
        let a = run(&mut link(jitter.clone(), 9), 1000);
        let b = run(&mut link(lossy.clone(), 9), 1000);
        assert_eq!(b, run(&mut link(lossy, 9), 1000));
        assert_ne!(a, run(&mut link(jitter, 10), 1000));
        for (x, y) in a.iter().zip(&b) {
            if !y.is_empty() {
                assert_eq!(x, y);
            }
        }
    }

    /// In a world: 10 % loss from a to b, nothing back; b counts what came.
    #[test]
    fn an_impaired_network_loses_one_direction_only() -> turmoil::Result {
        use crate::sip::transport::{DatagramSocket, Network, TurmoilNet};
        use std::net::SocketAddr;
        let impairments = Impairments::new(7);
        let mut sim = turmoil::Builder::new().build();
        let got = Arc::new(Mutex::new((0u32, 0u32)));
        let (g, imp) = (got.clone(), impairments.clone());
        sim.host("b", move || {
            let (g, imp) = (g.clone(), imp.clone());
            async move {
                let net = ImpairedNet::new(TurmoilNet, "b", imp);
                let s = net.bind_udp("0.0.0.0:9000".parse()?).await?;
                let mut buf = [0; 16];
                loop {
                    let (_, from) = s.recv_from(&mut buf).await?;
                    g.lock().unwrap().0 += 1;
                    s.send_to(&buf[..1], from).await?;
                }
            }
        });
        let (g, imp) = (got.clone(), impairments.clone());
        sim.client("a", async move {
            imp.update(turmoil::lookup("a"), turmoil::lookup("b"), |m| {
                m.loss = Loss::Random(0.1)
            });
            let net = ImpairedNet::new(TurmoilNet, "a", imp);
            let s = Arc::new(net.bind_udp("0.0.0.0:7000".parse()?).await?);
            let to = SocketAddr::new(turmoil::lookup("b"), 9000);
            let r = s.clone();
            tokio::spawn(async move {
                let mut buf = [0; 16];
                while r.recv_from(&mut buf).await.is_ok() {
                    g.lock().unwrap().1 += 1;
                }
            });
            for _ in 0..1000 {
                s.send_to(&[1], to).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        });
        sim.run()?;
        let (at_b, back) = *got.lock().unwrap();
        assert!((860..=940).contains(&at_b), "{at_b}");
        assert_eq!(back, at_b, "the way back is not impaired");
        let stats = impairments.stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].1.offered, 1000);
        assert_eq!(stats[0].1.lost, u64::from(1000 - at_b));
        Ok(())
    }
}
