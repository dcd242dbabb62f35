//! Lifetime recycling, evil reload and cheaper: events with explicit instants in, actions out.
