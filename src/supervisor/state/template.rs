//! The app template of a preloaded generation: started before its workers,
//! which are held until it has imported the app; replaced with back-off when it
//! dies (its workers serve on, replacements wait); ended with its generation.
//! A template that dies before it is ready fails its generation the way a
//! worker would (a failed reload, or a failed start).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{Phase, StopKind, StopWhy, Supervisor, Template, TemplateState, COLD_START_ATTEMPTS};
use crate::supervisor::events::{Action, WorkerSignal};
use crate::supervisor::policy::Backoff;
use crate::worker::contract::ExitReason;

/// How [`Supervisor::end_templates`] ends a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TemplateEnd {
    /// Its generation was replaced: SIGTERM, and a retiring one is left alone.
    Retire,
    /// A failed generation or a stop: SIGKILL.
    Kill,
}

impl Supervisor {
    pub(super) fn start_template(
        &mut self,
        generation: u64,
        backoff: Backoff,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.templates.insert(
            generation,
            Template {
                generation,
                pid: None,
                state: TemplateState::Spawning,
                spawned_at: now,
                backoff,
            },
        );
        actions.push(Action::SpawnTemplate { generation });
    }

    pub(super) fn template_spawned(
        &mut self,
        generation: u64,
        pid: i32,
        actions: &mut Vec<Action>,
    ) {
        let Some(t) = self.templates.get_mut(&generation) else {
            // Its generation is gone: stop it rather than lose track of it.
            actions.push(Action::Signal {
                pid,
                signal: WorkerSignal::Kill,
            });
            return;
        };
        t.pid = Some(pid);
        match t.state {
            TemplateState::Spawning => t.state = TemplateState::Importing,
            // Ended while its spawn was under way.
            _ => {
                t.state = TemplateState::Killed;
                actions.push(Action::Signal {
                    pid,
                    signal: WorkerSignal::Kill,
                });
            }
        }
        info!(generation, pid, "app template spawned");
    }

    pub(super) fn template_ready(&mut self, generation: u64, pid: i32, actions: &mut Vec<Action>) {
        let Some(t) = self.templates.get_mut(&generation) else {
            return;
        };
        if t.pid != Some(pid) || t.state != TemplateState::Importing {
            return;
        }
        t.state = TemplateState::Ready;
        info!(generation, pid, "app template ready");
        let held: Vec<(u64, usize)> = self
            .held
            .iter()
            .copied()
            .filter(|(g, _)| *g == generation)
            .collect();
        self.held.retain(|(g, _)| *g != generation);
        for (g, slot) in held {
            self.spawn(g, slot, actions);
        }
    }

    pub(super) fn template_exited(
        &mut self,
        generation: u64,
        pid: i32,
        reason: ExitReason,
        detail: Option<String>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(t) = self.templates.get(&generation) else {
            return;
        };
        // pid 0: the spawn itself failed, which only a template without a pid can have.
        let ours = if pid == 0 {
            t.pid.is_none()
        } else {
            t.pid == Some(pid)
        };
        if !ours {
            return;
        }
        let t = self.templates.remove(&generation).expect("checked above");
        let expected = matches!(t.state, TemplateState::Retiring | TemplateState::Killed)
            || matches!(self.phase, Phase::Stopping { .. })
            || !self.plans.contains_key(&generation);
        if expected {
            info!(generation, pid, ?reason, "app template exited");
            return;
        }
        let was_ready = t.state == TemplateState::Ready;
        let describe = match (&reason, &detail) {
            (ExitReason::AppLoadFailed, Some(d)) => format!("the app failed to load:\n{d}"),
            (ExitReason::AppLoadFailed, None) => "the app failed to load".to_string(),
            (_, Some(d)) if pid == 0 => format!("cannot start the app template: {d}"),
            (r, _) => format!("the app template (pid {pid}) died before it was ready: {r:?}"),
        };
        if !was_ready {
            if self.reload.booting() == Some(generation) {
                self.fail_reload(describe, actions);
                return;
            }
            if matches!(self.phase, Phase::Booting { .. }) && reason == ExitReason::AppLoadFailed {
                error!(
                    traceback = %detail.as_deref().unwrap_or("(none)"),
                    "the app failed to load at start, giving up"
                );
                self.begin_stop(StopKind::Fast, StopWhy::GaveUp, now, actions);
                return;
            }
        }
        if was_ready {
            warn!(
                generation,
                pid,
                ?reason,
                "the app template died; its workers keep serving, starting a new one"
            );
        } else if reason == ExitReason::AppLoadFailed && detail != self.last_traceback {
            // Code changed on disk under a running generation: say why once.
            warn!(
                generation,
                traceback = %detail.as_deref().unwrap_or("(none)"),
                "a new app template failed to load the app"
            );
            self.last_traceback = detail.clone();
        } else {
            warn!(generation, pid, ?reason, %describe, "the app template died before it was ready");
        }
        let mut backoff = t.backoff;
        let delay = backoff.record_failure(now.saturating_duration_since(t.spawned_at));
        if matches!(self.phase, Phase::Booting { .. }) && backoff.failures > COLD_START_ATTEMPTS {
            error!(generation, attempts = backoff.failures, %describe, "the app template keeps dying at start, giving up");
            self.begin_stop(StopKind::Fast, StopWhy::GaveUp, now, actions);
            return;
        }
        if delay == Duration::ZERO {
            self.start_template(generation, backoff, now, actions);
        } else {
            warn!(
                generation,
                delay_ms = delay.as_millis() as u64,
                "the app template keeps dying, delaying its restart"
            );
            self.templates.insert(
                generation,
                Template {
                    generation,
                    pid: None,
                    state: TemplateState::Waiting {
                        respawn_at: now + delay,
                    },
                    spawned_at: t.spawned_at,
                    backoff,
                },
            );
        }
    }

    /// Restarts the templates whose back-off has passed.
    pub(super) fn templates_due(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let due: Vec<(u64, Backoff)> = self
            .templates
            .values()
            .filter(
                |t| matches!(t.state, TemplateState::Waiting { respawn_at } if now >= respawn_at),
            )
            .map(|t| (t.generation, t.backoff.clone()))
            .collect();
        for (generation, backoff) in due {
            self.start_template(generation, backoff, now, actions);
        }
    }

    /// Ends the templates of the generations `which` selects (and their held
    /// spawns), as `how` says (a template has nothing to finish either way).
    pub(super) fn end_templates(
        &mut self,
        which: impl Fn(u64) -> bool,
        how: TemplateEnd,
        actions: &mut Vec<Action>,
    ) {
        self.held.retain(|(g, _)| !which(*g));
        let mut gone = Vec::new();
        for t in self.templates.values_mut().filter(|t| which(t.generation)) {
            match (t.state, t.pid) {
                (TemplateState::Waiting { .. }, _) => gone.push(t.generation),
                (TemplateState::Killed, _) => {}
                (TemplateState::Retiring, _) if how == TemplateEnd::Retire => {}
                (_, None) => t.state = TemplateState::Killed,
                (_, Some(pid)) => {
                    let (state, signal) = match how {
                        TemplateEnd::Kill => (TemplateState::Killed, WorkerSignal::Kill),
                        TemplateEnd::Retire => (TemplateState::Retiring, WorkerSignal::Graceful),
                    };
                    t.state = state;
                    actions.push(Action::Signal { pid, signal });
                }
            }
        }
        for g in gone {
            self.templates.remove(&g);
        }
    }
}
