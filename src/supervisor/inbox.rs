//! What the sources (signals, the watcher, the control socket, the stats server,
//! one task per worker) send to the master loop. It lives below the executor so
//! that the sources depend on this small module, not on the loop that reads it.

use tokio::sync::{mpsc, oneshot};

use super::events::Event;
use super::status::{ReloadReport, Status};

/// One message to the master loop.
pub enum Input {
    Event(Event),
    /// A client (control socket, stats server) waits for the answer on `reply`.
    Control(ControlRequest),
    /// A daemon or cron job of `crate::around` ended.
    Around(crate::around::AroundExit),
    /// A template's answer to a fork request, for the executor (which then
    /// tells the state machine [`Event::Spawned`] or [`Event::SpawnFailed`]).
    Forked {
        generation: u64,
        id: usize,
        result: Result<i32, String>,
    },
    /// A reload's config, read off the loop (an `@(exec://…)` in it may run
    /// for up to 30 s): the executor prepares its sockets, then tells the
    /// state machine [`Event::ConfigLoaded`].
    ConfigRead {
        generation: u64,
        // Boxed: a whole config, where the other inputs are a few words.
        result: Result<Box<crate::config::Loaded>, String>,
    },
    /// The `http` router, asked to stop at the instance's stop, has drained
    /// its requests and exited: the workers may stop now.
    RouterStopped,
}

/// A question that needs the master's answer, with the channel to answer on.
pub enum ControlRequest {
    Status(oneshot::Sender<Status>),
    /// Answered once the reload's outcome is known.
    Reload(oneshot::Sender<ReloadReport>),
    /// The metrics exposition text (`metrics::render`), answered at once.
    Metrics(oneshot::Sender<String>),
}

/// The commands the control socket accepts, one line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    Status,
    Reload,
}

impl ControlCommand {
    pub fn parse(line: &str) -> Option<Self> {
        match line {
            "status" => Some(ControlCommand::Status),
            "reload" => Some(ControlCommand::Reload),
            _ => None,
        }
    }
}

/// The sending side of the master's one channel.
pub type Inbox = mpsc::UnboundedSender<Input>;

/// Asks the master for its status document; `None` if the master is gone.
pub async fn ask_status(inbox: &Inbox) -> Option<Status> {
    let (reply, answer) = oneshot::channel();
    inbox
        .send(Input::Control(ControlRequest::Status(reply)))
        .ok()?;
    answer.await.ok()
}
