//! The one async driver per host: it owns the sockets (through a
//! [`Network`], so the same driver runs on tokio and in turmoil), reads the
//! clock, and moves bytes, time and commands in and out of a sans-IO
//! [`Role`] standing on a [`UserAgent`]. Protocol and policy code never
//! spawns a task, sleeps or resolves a name; this loop is where that
//! happens.
//!
//! Each turn: drain what the UA wants sent (to per-destination send
//! queues) and what it has to say (to the role), execute the role's media
//! commands, then wait for the first of: a send failure, a transport
//! event, a media event, a command, or the earliest deadline of the UA
//! and the role. `select!` is `biased` so that, in simulation, the same
//! seed always takes the same branch.

mod send;
pub mod timed;

use crate::sip::endpoint::LocalPorts;
use crate::sip::rng::SeededRng;
use crate::sip::routing::RoutingTable;
use crate::sip::transport::{Network, SipTransport, Tap, TransportConfig, TransportEvent};
use crate::sip::ua::{UaConfig, UaEvent, UserAgent};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Policy on top of a [`UserAgent`]: the SBC, the hub, the carrier. Every
/// method is synchronous and takes the time; what needs I/O goes out as
/// a media command or through the UA.
pub trait Role {
    /// What steps, consoles and tests ask of the role.
    type Command: Send + 'static;
    type MediaCommand;
    type MediaEvent: Send + 'static;

    /// Called once, after the transport is up and the routing table resolved.
    fn start(&mut self, now: Instant, ua: &mut UserAgent);
    fn on_event(&mut self, now: Instant, event: UaEvent, ua: &mut UserAgent);
    fn on_command(&mut self, now: Instant, command: Self::Command, ua: &mut UserAgent);
    fn on_media(&mut self, now: Instant, event: Self::MediaEvent, ua: &mut UserAgent);
    /// Called when `poll_timeout` has passed.
    fn on_timeout(&mut self, now: Instant, ua: &mut UserAgent);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_media(&mut self) -> Option<Self::MediaCommand>;
    /// After every turn, with the UA at rest: publish counts to a view.
    fn observe(&mut self, _ua: &UserAgent) {}
}

/// Carries out a role's media commands on the host's sockets (or hands
/// them to the media hosts it controls) and reports back.
pub trait MediaDriver<N: Network> {
    type Command;
    type Event: Send + 'static;
    fn execute(&mut self, net: &N, command: Self::Command) -> impl Future<Output = ()> + Send;
    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<Self::Event>;
}

/// A media driver for roles without media.
pub struct NoMedia {
    events: mpsc::UnboundedReceiver<()>,
    /// Held so that `events` never reports closed.
    _open: mpsc::UnboundedSender<()>,
}

impl Default for NoMedia {
    fn default() -> Self {
        let (_open, events) = mpsc::unbounded_channel();
        NoMedia { events, _open }
    }
}

impl<N: Network> MediaDriver<N> for NoMedia {
    type Command = ();
    type Event = ();
    async fn execute(&mut self, _net: &N, _command: ()) {}
    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<()> {
        &mut self.events
    }
}

/// What a host is: its transports, its UA's configuration, the names its
/// role will send to (resolved once into the routing table) and its seed.
pub struct HostSetup {
    pub transport: TransportConfig,
    pub ua: UaConfig,
    /// Names to resolve at start; a name that does not resolve is an error.
    pub names: Vec<String>,
    pub rng: SeededRng,
}

/// The current time for the sans-IO cores: simulated under turmoil (tokio's
/// clock is the simulation's), the wall clock on real sockets.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Resolve `names` once into a routing table.
pub async fn resolve_all<N: Network>(net: &N, names: &[String]) -> std::io::Result<RoutingTable> {
    let mut table = RoutingTable::new();
    for name in names {
        let addr = net
            .resolve(name, 0)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot resolve {name}: {e}")))?;
        table.insert(name, addr.ip());
    }
    Ok(table)
}

/// Run `role` on `net` until the host stops (or, when `commands` closes
/// and the role has nothing left to wait for, forever serving SIP).
pub async fn run<N, R, M>(
    net: N,
    setup: HostSetup,
    role: R,
    commands: mpsc::UnboundedReceiver<R::Command>,
    media: M,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()>
where
    N: Network,
    R: Role,
    M: MediaDriver<N, Command = R::MediaCommand, Event = R::MediaEvent>,
{
    let routing = resolve_all(&net, &setup.names).await?;
    let (transport, events) = SipTransport::start(net.clone(), setup.transport, tap).await?;
    let ua = UserAgent::new(setup.ua, local_ports(&transport), routing, setup.rng);
    serve(net, transport, events, ua, role, commands, media, None).await
}

/// One SIP core of a sharded host: its UA's configuration and stream, its
/// role, its commands and its media.
pub struct ShardSetup<R: Role, M> {
    pub ua: UaConfig,
    pub rng: SeededRng,
    pub role: R,
    pub commands: mpsc::UnboundedReceiver<R::Command>,
    pub media: M,
}

/// Where the dispatcher of a sharded host sends a transport event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the core with this index.
    Shard(usize),
    /// To this core, and the rest of its Call-ID's dialog too: a new
    /// request routed by something else than its Call-ID (an INVITE with
    /// Replaces goes where the dialog it replaces is).
    Pin(usize),
    /// To every core (a closed connection: each fails its own transactions).
    All,
}

/// Where a sharded host's dispatcher sends an event: given the event, the
/// number of cores, and the core a Call-ID is pinned to, if any.
pub type Router = fn(&TransportEvent, usize, &dyn Fn(&str) -> Option<usize>) -> Route;

/// Pins held at most: beyond, a dialog routed by something other than its
/// Call-ID is not followed (its later requests go by their hash). A pin
/// lives at least [`PIN_GRACE`], and anyone may send the INVITE that makes
/// one: the cap keeps a flood from growing the map.
pub const MAX_PINS: usize = 4096;

/// Call-IDs whose messages go to a core other than their hash's
/// ([`Route::Pin`]). Few: set by the dispatcher, cleared by the core once
/// it holds no session of the Call-ID and the pin has outlived a
/// transaction (64·T1), so retransmissions and the ACK of a refused
/// INVITE still find it.
#[derive(Debug, Default)]
struct Pins {
    map: std::sync::Mutex<std::collections::BTreeMap<String, (usize, Instant)>>,
    /// How many, read without the lock on every message.
    len: std::sync::atomic::AtomicUsize,
}

/// How long a pin stands at least: 64·T1, a transaction's lifetime.
const PIN_GRACE: Duration = Duration::from_secs(32);

impl Pins {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, (usize, Instant)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, call_id: &str) -> Option<usize> {
        if self.len.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(call_id).map(|(core, _)| *core)
    }

    fn pin(&self, call_id: &str, core: usize, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_PINS && !map.contains_key(call_id) {
            return;
        }
        map.insert(call_id.to_string(), (core, now));
        self.len
            .store(map.len(), std::sync::atomic::Ordering::Release);
    }

    /// Drop core `core`'s pins that `held` no longer holds a session of.
    fn sweep(&self, core: usize, now: Instant, held: impl Fn(&str) -> bool) {
        if self.len.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        let mut map = self.lock();
        map.retain(|call_id, (c, since)| {
            *c != core || now.saturating_duration_since(*since) < PIN_GRACE || held(call_id)
        });
        self.len
            .store(map.len(), std::sync::atomic::Ordering::Release);
    }
}

/// A sharded core's part in the pins: which core it is, and how often it
/// looks at its pins.
struct CorePins {
    pins: Arc<Pins>,
    index: usize,
    next_sweep: Instant,
}

/// How often a core looks for pins to drop.
const PIN_SWEEP: Duration = Duration::from_secs(5);

/// Run one host as several SIP cores ("shards") on one set of sockets: the
/// transport is shared, each core is a task of its own with its own UA
/// and role, and a dispatcher task hands each transport event to the core
/// `route` names (messages by Call-ID, so a dialog and its transactions
/// live on one core). On a multi-thread runtime the cores run in parallel
/// on its workers; on turmoil's, in turn, in the same order each time.
/// Each core draws Call-IDs it owns ([`SeededRng::for_shard`]), so the
/// answers to its requests come back to it.
pub async fn run_sharded<N, R, M>(
    net: N,
    transport: TransportConfig,
    names: &[String],
    shards: Vec<ShardSetup<R, M>>,
    route: Router,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()>
where
    N: Network,
    R: Role + Send + 'static,
    R::Command: Send,
    R::MediaCommand: Send,
    M: MediaDriver<N, Command = R::MediaCommand, Event = R::MediaEvent> + Send + 'static,
{
    let routing = resolve_all(&net, names).await?;
    let (transport, events) = SipTransport::start(net.clone(), transport, tap).await?;
    let ports = local_ports(&transport);
    let count = shards.len();
    let mut inboxes = Vec::with_capacity(count);
    // Dropped (the host stopped by whoever waits for it), the set aborts
    // the cores.
    let mut cores = tokio::task::JoinSet::new();
    let mut index_of = std::collections::BTreeMap::new();
    let pins = Arc::new(Pins::default());
    for (index, shard) in shards.into_iter().enumerate() {
        let (inbox, rx) = mpsc::unbounded_channel();
        inboxes.push(inbox);
        let ua = UserAgent::new(shard.ua, ports, routing.clone(), shard.rng);
        let core = cores.spawn(serve(
            net.clone(),
            transport.clone(),
            rx,
            ua,
            shard.role,
            shard.commands,
            shard.media,
            Some(CorePins {
                pins: pins.clone(),
                index,
                next_sweep: now() + PIN_SWEEP,
            }),
        ));
        index_of.insert(core.id(), index);
    }
    // The dispatcher is a task of its own, like the cores: on a
    // multi-thread runtime it then runs on the workers, where the socket
    // tasks and the cores are, rather than on the thread that waits for
    // the host to end (a hand-off between threads per message otherwise).
    let mut dispatcher = tokio::spawn(dispatch(events, inboxes, pins, route));
    let _stop = AbortOnDrop(vec![dispatcher.abort_handle()]);
    let failed = |index: usize, result: Result<std::io::Result<()>, tokio::task::JoinError>| {
        result
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .and_then(|()| Err(std::io::Error::other("it stopped")))
            .map_err(|e| std::io::Error::other(format!("SIP core {index} failed: {e}")))
    };
    // A core ends only when the dispatcher has (its inbox closed), or when
    // it fails: then the host ends at once with its error, rather than when
    // a message next routes to it, which on a quiet host is never.
    let stopped = tokio::select! {
        biased;
        stopped = &mut dispatcher => stopped
            .map_err(|e| std::io::Error::other(format!("the dispatcher failed: {e}")))?,
        Some(ended) = cores.join_next_with_id() => {
            let (id, result) = match ended {
                Ok((id, result)) => (id, Ok(result)),
                Err(e) => (e.id(), Err(e)),
            };
            // On a multi-thread runtime a core can see its inbox close (the
            // transport ended) before the dispatcher's task is marked done:
            // that end is the host's, not a failure.
            if !matches!(result, Ok(Ok(()))) {
                return failed(index_of[&id], result);
            }
            (&mut dispatcher)
                .await
                .map_err(|e| std::io::Error::other(format!("the dispatcher failed: {e}")))?
        }
    };
    // The transport closed (`None`): the cores end as their inboxes do, and
    // the first error among them is the host's. Or a core's inbox was
    // found closed (`Some(index)`): that core's error is.
    while let Some(ended) = cores.join_next_with_id().await {
        let (id, result) = match ended {
            Ok((id, result)) => (id, Ok(result)),
            Err(e) => (e.id(), Err(e)),
        };
        let index = index_of[&id];
        match (stopped, result) {
            (None, Ok(Ok(()))) => {}
            (Some(i), _) if i != index => {}
            (_, result) => return failed(index, result),
        }
    }
    Ok(())
}

/// Aborts a sharded host's tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Hand each transport event to its core until the transport closes
/// (`None`) or a core has ended (`Some(its index)`).
async fn dispatch(
    mut events: mpsc::UnboundedReceiver<TransportEvent>,
    inboxes: Vec<mpsc::UnboundedSender<TransportEvent>>,
    pins: Arc<Pins>,
    route: Router,
) -> Option<usize> {
    let count = inboxes.len();
    while let Some(event) = events.recv().await {
        let pinned = match &event {
            TransportEvent::Message { message, .. } => {
                message.call_id().ok().and_then(|c| pins.get(c))
            }
            _ => None,
        };
        let route = match pinned {
            Some(index) => Route::Shard(index),
            None => route(&event, count, &|c| pins.get(c)),
        };
        if let (Route::Pin(index), TransportEvent::Message { message, .. }) = (route, &event) {
            if let Ok(call_id) = message.call_id() {
                pins.pin(call_id, index.min(count - 1), now());
            }
        }
        match route {
            Route::Shard(index) | Route::Pin(index) => {
                let index = index.min(count - 1);
                if inboxes[index].send(event).is_err() {
                    return Some(index);
                }
            }
            Route::All => {
                for (index, inbox) in inboxes.iter().enumerate() {
                    if inbox.send(event.clone()).is_err() {
                        return Some(index);
                    }
                }
            }
        }
    }
    None
}

fn local_ports<N: Network>(transport: &SipTransport<N>) -> LocalPorts {
    use crate::sip::transport::TransportKind;
    LocalPorts {
        udp: transport.local_addr(TransportKind::Udp).map(|a| a.port()),
        tcp: transport.local_addr(TransportKind::Tcp).map(|a| a.port()),
        tls: transport.local_addr(TransportKind::Tls).map(|a| a.port()),
    }
}

/// The turns of one SIP core, until its events close.
#[allow(clippy::too_many_arguments)]
async fn serve<N, R, M>(
    net: N,
    transport: SipTransport<N>,
    mut events: mpsc::UnboundedReceiver<TransportEvent>,
    mut ua: UserAgent,
    mut role: R,
    mut commands: mpsc::UnboundedReceiver<R::Command>,
    mut media: M,
    mut pins: Option<CorePins>,
) -> std::io::Result<()>
where
    N: Network,
    R: Role,
    M: MediaDriver<N, Command = R::MediaCommand, Event = R::MediaEvent>,
{
    let mut sender = send::Sender::new(transport.clone());
    // Settings given before the host started apply before its first act.
    while let Ok(c) = commands.try_recv() {
        role.on_command(now(), c, &mut ua);
    }
    role.start(now(), &mut ua);
    let mut commands_open = true;
    loop {
        // Drain until the UA and the role are both at rest.
        loop {
            let mut busy = false;
            while let Some(t) = ua.poll_transmit() {
                sender.send(t);
                busy = true;
            }
            while let Some(ev) = ua.poll_event() {
                role.on_event(now(), ev, &mut ua);
                busy = true;
            }
            while let Some(cmd) = role.poll_media() {
                media.execute(&net, cmd).await;
                busy = true;
            }
            // Timers, send failures, media events and commands are taken on
            // every turn, not only when the select below picks them: under
            // load the transport always has a message ready, and a biased
            // select would never reach its later branches.
            let t = now();
            if ua.poll_timeout().is_some_and(|d| d <= t) {
                ua.handle_timeout(t);
                busy = true;
            }
            if role.poll_timeout().is_some_and(|d| d <= t) {
                role.on_timeout(t, &mut ua);
                busy = true;
            }
            while let Ok((key, reason)) = sender.failures.try_recv() {
                ua.handle_send_failure(now(), &key, reason);
                busy = true;
            }
            while let Ok(m) = media.events().try_recv() {
                role.on_media(now(), m, &mut ua);
                busy = true;
            }
            while commands_open {
                match commands.try_recv() {
                    Ok(c) => {
                        role.on_command(now(), c, &mut ua);
                        busy = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => commands_open = false,
                }
            }
            if !busy {
                break;
            }
        }
        if let Some(p) = pins.as_mut().filter(|p| p.next_sweep <= now()) {
            let t = now();
            p.pins.sweep(p.index, t, |call_id| ua.has_call_id(call_id));
            p.next_sweep = t + PIN_SWEEP;
        }
        role.observe(&ua);
        // A core with pins to look at wakes for them even when idle.
        let sweep = (pins.as_ref())
            .filter(|p| p.pins.len.load(std::sync::atomic::Ordering::Acquire) > 0)
            .map(|p| p.next_sweep);
        let deadline = [ua.poll_timeout(), role.poll_timeout(), sweep]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            f = sender.failures.recv() => {
                if let Some((key, reason)) = f {
                    ua.handle_send_failure(now(), &key, reason);
                }
            }
            ev = events.recv() => match ev {
                Some(TransportEvent::Message { message, raw, source, received }) => {
                    let now = now();
                    ua.note_queue_delay(now, now.saturating_duration_since(received));
                    ua.handle_message(now, message, raw, source)
                }
                Some(TransportEvent::Malformed { error, raw, source }) => {
                    ua.handle_malformed(now(), error, &raw, source)
                }
                Some(TransportEvent::TlsRefused { remote, inbound, reason }) => {
                    ua.handle_tls_refused(remote, inbound, reason)
                }
                Some(TransportEvent::ConnectionClosed { transport: kind, remote, .. }) => {
                    // A request sent since may have opened a new connection
                    // to that peer: its transactions wait on their timers.
                    if !transport.has_connection(kind, remote) {
                        ua.handle_connection_closed(now(), kind, remote)
                    }
                }
                None => return Ok(()),
            },
            m = media.events().recv() => {
                if let Some(m) = m {
                    role.on_media(now(), m, &mut ua);
                }
            }
            c = commands.recv(), if commands_open => match c {
                Some(c) => role.on_command(now(), c, &mut ua),
                None => commands_open = false,
            },
            // Timers run at the top of the loop once this wakes it.
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role that does nothing, or panics as it starts.
    struct Toy {
        panics: bool,
    }

    impl Role for Toy {
        type Command = ();
        type MediaCommand = ();
        type MediaEvent = ();
        fn start(&mut self, _: Instant, _: &mut UserAgent) {
            assert!(!self.panics, "this core fails as it starts");
        }
        fn on_event(&mut self, _: Instant, _: UaEvent, _: &mut UserAgent) {}
        fn on_command(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
        fn on_media(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
        fn on_timeout(&mut self, _: Instant, _: &mut UserAgent) {}
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_media(&mut self) -> Option<()> {
            None
        }
    }

    /// A core that fails ends the host at once with its error, not when
    /// a message next routes to it (on a quiet host: never).
    #[test]
    fn a_failed_core_ends_its_host_at_once() -> turmoil::Result {
        use crate::sip::endpoint::EndpointConfig;
        use crate::sip::session::SessionConfig;
        use crate::sip::transport::TurmoilNet;
        let mut sim = turmoil::Builder::new().build();
        let ended: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let e = ended.clone();
        sim.client("h", async move {
            let mut transport = TransportConfig::new("h");
            // A listener keeps the transport's events open: the host runs
            // until something ends it.
            transport.udp = Some("0.0.0.0:5060".parse()?);
            let shard = |index: usize| {
                // A closed command channel: the core serves on without one.
                let commands = mpsc::unbounded_channel().1;
                ShardSetup {
                    ua: UaConfig {
                        endpoint: EndpointConfig::new("h"),
                        session: SessionConfig::new("<sip:h>"),
                    },
                    rng: SeededRng::new(1).for_shard(crate::sip::rng::Shard { index, count: 2 }),
                    role: Toy { panics: index == 1 },
                    commands,
                    media: NoMedia::default(),
                }
            };
            let route: Router = |_, _, _| Route::Shard(0);
            let run = run_sharded(
                TurmoilNet,
                transport,
                &[],
                vec![shard(0), shard(1)],
                route,
                None,
            );
            let result = tokio::time::timeout(Duration::from_secs(5), run).await;
            *e.lock().unwrap() = Some(match result {
                Ok(Ok(())) => "ended without an error".into(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => "still running after 5 s".into(),
            });
            Ok(())
        });
        sim.run()?;
        let ended = ended.lock().unwrap().clone().unwrap_or_default();
        assert!(ended.contains("SIP core 1 failed"), "{ended}");
        Ok(())
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn a_pin_stands_a_transaction_long_then_as_long_as_its_core_holds_the_call() {
        let pins = Pins::default();
        let t0 = Instant::now();
        assert_eq!(pins.get("a@x"), None);
        pins.pin("a@x", 2, t0);
        pins.pin("b@x", 1, t0);
        assert_eq!(pins.get("a@x"), Some(2));
        // Young: kept even though core 2 holds nothing of it yet (its
        // INVITE may still wait in the core's queue).
        pins.sweep(2, t0 + Duration::from_secs(31), |_| false);
        assert_eq!(pins.get("a@x"), Some(2));
        // Old and held: kept.
        pins.sweep(2, t0 + PIN_GRACE, |c| c == "a@x");
        assert_eq!(pins.get("a@x"), Some(2));
        // Old and let go: dropped; another core's pin is not this core's to drop.
        pins.sweep(2, t0 + PIN_GRACE, |_| false);
        assert_eq!((pins.get("a@x"), pins.get("b@x")), (None, Some(1)));
        pins.sweep(1, t0 + PIN_GRACE, |_| false);
        assert_eq!(pins.get("b@x"), None);
        assert_eq!(pins.len.load(std::sync::atomic::Ordering::Acquire), 0);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn a_flood_of_pins_stops_at_the_cap() {
        let (pins, t0) = (Pins::default(), Instant::now());
        for n in 0..MAX_PINS + 10 {
            pins.pin(&format!("{n}@flood"), 1, t0);
        }
        assert_eq!(pins.lock().len(), MAX_PINS);
        assert_eq!(pins.get(&format!("{}@flood", MAX_PINS + 1)), None);
        // One already held may still move.
        pins.pin("0@flood", 2, t0);
        assert_eq!(pins.get("0@flood"), Some(2));
    }
}
