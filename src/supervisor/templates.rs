//! The executor's side of the app templates (preload): the master's end of each
//! template's socket, and the fork requests sent and not yet answered (their
//! control pipes and scoreboards wait here for the worker's pid).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;

use crate::scoreboard::Scoreboard;
use crate::worker::spawn::{self, ForkRequest};

struct TemplateHandle {
    pid: i32,
    socket: OwnedFd,
    /// Fork requests sent, by worker id (1-based slot), oldest first.
    waiting: VecDeque<(usize, ForkRequest)>,
}

/// A worker the template has forked: what the executor registers.
pub struct Forked {
    pub control: OwnedFd,
    pub scoreboard: Scoreboard,
}

#[derive(Default)]
pub struct Templates {
    by_generation: HashMap<u64, TemplateHandle>,
}

impl Templates {
    pub fn insert(&mut self, generation: u64, pid: i32, socket: OwnedFd) {
        self.by_generation.insert(
            generation,
            TemplateHandle {
                pid,
                socket,
                waiting: VecDeque::new(),
            },
        );
    }

    /// The template of `generation` exited: drops its socket and returns the
    /// ids of the fork requests it never answered.
    pub fn remove(&mut self, generation: u64, pid: i32) -> Vec<usize> {
        match self.by_generation.get(&generation) {
            Some(t) if t.pid == pid => {}
            _ => return Vec::new(),
        }
        let t = self.by_generation.remove(&generation).expect("checked");
        t.waiting.into_iter().map(|(id, _)| id).collect()
    }

    /// Asks the template of `generation` to fork worker `id`.
    pub fn request_fork(&mut self, generation: u64, id: usize) -> Result<(), String> {
        let t = self
            .by_generation
            .get_mut(&generation)
            .ok_or_else(|| "the generation has no app template".to_string())?;
        let request = ForkRequest::new().map_err(|e| format!("cannot prepare the fork: {e}"))?;
        spawn::send_fork(&t.socket, id, &request)
            .map_err(|e| format!("cannot ask the app template to fork: {e}"))?;
        // The template holds its own copies now; ours of its ends must close
        // so the worker's exit is seen as EOF on its control pipe.
        let ForkRequest {
            control,
            scoreboard,
            pass,
        } = request;
        drop(pass);
        t.waiting.push_back((
            id,
            ForkRequest {
                control,
                scoreboard,
                pass: Vec::new(),
            },
        ));
        Ok(())
    }

    /// The template's answer for worker `id`: the request's resources.
    pub fn answered(&mut self, generation: u64, id: usize) -> Option<Forked> {
        let t = self.by_generation.get_mut(&generation)?;
        let at = t.waiting.iter().position(|(i, _)| *i == id)?;
        let (_, request) = t.waiting.remove(at)?;
        Some(Forked {
            control: request.control,
            scoreboard: request.scoreboard,
        })
    }
}
