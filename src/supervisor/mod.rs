//! The master: one state machine ([`state::Supervisor`]) fed by one stream of
//! [`events::Event`]s, and an executor ([`executor`]) that carries out its
//! [`events::Action`]s. See ARCHITECTURE.md for the event flow.

pub mod events;
pub mod executor;
mod generations;
pub mod inbox;
pub mod policy;
pub mod state;
pub mod status;
mod templates;
mod workers;
