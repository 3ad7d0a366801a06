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
use std::time::Instant;
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
    mut role: R,
    mut commands: mpsc::UnboundedReceiver<R::Command>,
    mut media: M,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()>
where
    N: Network,
    R: Role,
    M: MediaDriver<N, Command = R::MediaCommand, Event = R::MediaEvent>,
{
    let routing = resolve_all(&net, &setup.names).await?;
    let (transport, mut events) = SipTransport::start(net.clone(), setup.transport, tap).await?;
    let ports = LocalPorts {
        udp: transport
            .local_addr(crate::sip::transport::TransportKind::Udp)
            .map(|a| a.port()),
        tcp: transport
            .local_addr(crate::sip::transport::TransportKind::Tcp)
            .map(|a| a.port()),
        tls: transport
            .local_addr(crate::sip::transport::TransportKind::Tls)
            .map(|a| a.port()),
    };
    let mut ua = UserAgent::new(setup.ua, ports, routing, setup.rng);
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
        role.observe(&ua);
        let deadline = [ua.poll_timeout(), role.poll_timeout()]
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
