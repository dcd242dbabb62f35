//! Signals to the master become [`Event::Signal`]s in the master's one channel
//! (README.md "Signals to the master" says what each does). tokio's handlers only set a flag and wake the loop: no logging or
//! allocation happens in signal context.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use tokio::signal::unix::{signal, SignalKind};

use crate::supervisor::events::{Event, MasterSignal};
use crate::supervisor::inbox::{Inbox, Input};

/// Installs the handlers and one forwarding task per signal.
pub fn spawn_sources(inbox: Inbox) -> std::io::Result<()> {
    let table = [
        (SignalKind::hangup(), MasterSignal::Hup),
        (SignalKind::terminate(), MasterSignal::Term),
        (SignalKind::interrupt(), MasterSignal::Int),
        (SignalKind::quit(), MasterSignal::Int),
        (SignalKind::user_defined1(), MasterSignal::Usr1),
        (SignalKind::user_defined2(), MasterSignal::Usr2),
    ];
    forward(&table, move |meaning| {
        inbox.send(Input::Event(Event::Signal(meaning))).is_ok()
    })
}

/// For each `(signal, meaning)`, a task that calls `send(meaning)` on every
/// delivery until `send` says the receiver is gone. Shared by the master and
/// the emperor, each with its own table and channel.
pub fn forward<T>(
    table: &[(SignalKind, T)],
    send: impl Fn(T) -> bool + Clone + Send + 'static,
) -> std::io::Result<()>
where
    T: Copy + Send + 'static,
{
    for &(kind, meaning) in table {
        let mut stream = signal(kind)?;
        let send = send.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if !send(meaning) {
                    break;
                }
            }
        });
    }
    release();
    Ok(())
}

/// The signals we handle, held blocked from the first instant of `start` until
/// [`forward`] has installed their handlers: one arriving in between stays
/// pending and is then handled, instead of killing the process by its default
/// action with nothing cleaned up (uWSGI can lose a SIGTERM sent between fork and
/// handler setup, unbit/uwsgi#1910; ours must exit 0 and leave no pidfile or socket). Threads started in
/// between inherit the block, which is harmless: the handler is process-wide.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals in this thread (call before any thread exists).
/// Until [`release`] or [`forward`], they stay pending.
pub fn hold() {
    let _ = handled().thread_block();
}

pub fn release() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}
