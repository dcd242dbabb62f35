//! Worker lifetimes, memory limits and `cheaper` (adaptive process count): the
//! keys, read and checked as uWSGI 2.0.31 reads them (`core/uwsgi.c`,
//! `core/init.c`), with the differences said where they are.
//!
//! - `max-worker-lifetime` N (+ `max-worker-lifetime-delta` D): worker `wid`
//!   (1-based) is recycled once older than N + (wid−1)·D seconds
//!   (`core/master_checks.c`). The master spawns its replacement first and
//!   retires the old worker only once the new one is ready.
//! - `max-requests-delta` D: worker `wid`'s limit is max-requests + (wid−1)·D
//!   (`core/utils.c`).
//! - `min-worker-lifetime` S: max-requests, reload-on-rss and reload-on-as act
//!   only on a worker at least S seconds old. uWSGI's default is 10; ours is 0
//!   (a recycle is a planned respawn here, never a back-off), so it applies only
//!   when set. Must be below max-worker-lifetime, as uWSGI checks.
//! - `limit-as` MB: RLIMIT_AS of each worker, set in the worker before it serves.
//! - `reload-on-as` MB: after a request, the worker recycles if its VmSize ≥ MB.
//! - `evil-reload-on-rss` / `evil-reload-on-as` MB: the master reads each
//!   worker's /proc/PID/statm every [`crate::supervisor::state::MEMORY_PERIOD`]
//!   and recycles one over the limit even mid-request.
//! - `cheaper` N: start `cheaper-initial` (default N) of `processes` workers,
//!   grow by `cheaper-step` when all are busy for `cheaper-overload` checks,
//!   shrink (`spare`: one every `cheaper-overload` idle checks; `spare2`: when
//!   more than N are idle for `cheaper-idle` checks). One check a second, as
//!   uWSGI's master cycle.

use super::expand::{Opt, Origin};
use super::values;
use super::{ConfigError, ErrorKind, Warning};

/// The cheaper algorithms amy-emperor runs (uWSGI's built-in ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheaperAlgo {
    /// uWSGI's default: grow when every worker is busy, shrink while idle.
    Spare,
    /// Keep `cheaper` idle workers: grow before overload, shrink slowly.
    Spare2,
}

/// `cheaper` and its keys, resolved (defaults applied, values clamped as uWSGI does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cheaper {
    /// The fewest workers that run (`cheaper`), ≥ 1 and < processes.
    pub min: usize,
    /// Workers a generation starts with (`cheaper-initial`).
    pub initial: usize,
    /// Workers added at each overload (`cheaper-step`, ≥ 1).
    pub step: usize,
    /// Checks (seconds) of overload before growing; spare also shrinks every
    /// this many idle checks (`cheaper-overload`, default 3).
    pub overload: u64,
    /// spare2: idle checks before shrinking (`cheaper-idle`, default 10).
    pub idle: u64,
    pub algo: CheaperAlgo,
}

/// The keys of this module, as read (0 = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifetimes {
    /// Seconds, 0 = off.
    pub max_worker_lifetime: u64,
    pub max_worker_lifetime_delta: u64,
    /// Seconds, 0 = off (see the module doc for uWSGI's default).
    pub min_worker_lifetime: u64,
    pub max_requests_delta: u64,
    /// Megabytes, 0 = off.
    pub limit_as_mb: u64,
    pub reload_on_as_mb: u64,
    pub evil_reload_on_rss_mb: u64,
    pub evil_reload_on_as_mb: u64,
    /// Set by [`finish`] when `cheaper` is on.
    pub cheaper: Option<Cheaper>,
    raw: RawCheaper,
    min_lifetime_origin: Option<Origin>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RawCheaper {
    count: Option<(u64, Origin)>,
    initial: Option<(u64, Origin)>,
    step: Option<u64>,
    overload: Option<u64>,
    idle: Option<(u64, Origin)>,
    algo: Option<CheaperAlgo>,
}

/// The most megabytes a memory key takes (an address space of a petabyte is a typo).
const MAX_MB: u64 = 1 << 30;
/// A lifetime longer than a year is a typo.
const MAX_LIFETIME_S: u64 = 366 * 86_400;

pub fn is_lifetime_key(key: &str) -> bool {
    matches!(
        key,
        "max-worker-lifetime"
            | "max-worker-lifetime-delta"
            | "min-worker-lifetime"
            | "max-requests-delta"
            | "limit-as"
            | "reload-on-as"
            | "evil-reload-on-rss"
            | "evil-reload-on-as"
            | "cheaper"
            | "cheaper-initial"
            | "cheaper-step"
            | "cheaper-overload"
            | "cheaper-idle"
            | "cheaper-algo"
    )
}

fn number(opt: &Opt, min: u64, max: u64) -> Result<u64, ConfigError> {
    values::parse_u64(&opt.key, &opt.value, min, max).map_err(|e| {
        let kind = match e {
            values::NumberError::Range { .. } => ErrorKind::OutOfRange,
            _ => ErrorKind::InvalidValue,
        };
        opt.origin.error(kind, e.to_string())
    })
}

pub fn apply(l: &mut Lifetimes, key: &str, opt: &Opt) -> Result<(), ConfigError> {
    match key {
        "max-worker-lifetime" => l.max_worker_lifetime = number(opt, 0, MAX_LIFETIME_S)?,
        "max-worker-lifetime-delta" => {
            l.max_worker_lifetime_delta = number(opt, 0, MAX_LIFETIME_S)?
        }
        "min-worker-lifetime" => {
            l.min_worker_lifetime = number(opt, 0, MAX_LIFETIME_S)?;
            l.min_lifetime_origin = Some(opt.origin.clone());
        }
        "max-requests-delta" => l.max_requests_delta = number(opt, 0, u32::MAX as u64)?,
        "limit-as" => l.limit_as_mb = number(opt, 0, MAX_MB)?,
        "reload-on-as" => l.reload_on_as_mb = number(opt, 0, MAX_MB)?,
        "evil-reload-on-rss" => l.evil_reload_on_rss_mb = number(opt, 0, MAX_MB)?,
        "evil-reload-on-as" => l.evil_reload_on_as_mb = number(opt, 0, MAX_MB)?,
        "cheaper" => l.raw.count = Some((number(opt, 0, 1024)?, opt.origin.clone())),
        "cheaper-initial" => l.raw.initial = Some((number(opt, 0, 1024)?, opt.origin.clone())),
        "cheaper-step" => l.raw.step = Some(number(opt, 0, 1024)?),
        "cheaper-overload" => l.raw.overload = Some(number(opt, 0, 86_400)?),
        "cheaper-idle" => l.raw.idle = Some((number(opt, 0, 86_400)?, opt.origin.clone())),
        "cheaper-algo" => {
            l.raw.algo = Some(match opt.value.trim() {
                "spare" => CheaperAlgo::Spare,
                "spare2" => CheaperAlgo::Spare2,
                other => {
                    return Err(opt.origin.error(
                        ErrorKind::Unsupported,
                        format!(
                            "cheaper-algo = {other}: not supported (only spare and spare2): \
                             the busyness and backlog plugins' scaling would be lost"
                        ),
                    ))
                }
            })
        }
        _ => unreachable!("is_lifetime_key"),
    }
    Ok(())
}

/// Cross-key checks once every key is read; `processes` is the final value.
pub fn finish(
    l: &mut Lifetimes,
    processes: u32,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    if l.max_worker_lifetime > 0 && l.min_worker_lifetime >= l.max_worker_lifetime {
        if let Some(origin) = &l.min_lifetime_origin {
            return Err(origin.error(
                ErrorKind::InvalidValue,
                format!(
                    "min-worker-lifetime = {}: must be lower than max-worker-lifetime ({}), as uWSGI requires",
                    l.min_worker_lifetime, l.max_worker_lifetime
                ),
            ));
        }
    }
    let raw = std::mem::take(&mut l.raw);
    let Some((count, origin)) = raw.count.clone().filter(|(n, _)| *n > 0) else {
        l.cheaper = None;
        l.raw = raw;
        return Ok(());
    };
    let processes = u64::from(processes.max(1));
    if count >= processes {
        return Err(origin.error(
            ErrorKind::InvalidValue,
            format!(
                "cheaper = {count}: must be lower than processes ({processes}), as uWSGI requires"
            ),
        ));
    }
    let initial = match &raw.initial {
        None => count,
        Some((0, _)) => count,
        Some((n, o)) if *n < count => {
            warnings.push(o.warning(format!(
                "cheaper-initial = {n}: below cheaper ({count}); starting {count} workers, as uWSGI does"
            )));
            count
        }
        Some((n, o)) if *n > processes => {
            warnings.push(o.warning(format!(
                "cheaper-initial = {n}: above processes ({processes}); starting {processes} workers, as uWSGI does"
            )));
            processes
        }
        Some((n, _)) => *n,
    };
    let algo = raw.algo.unwrap_or(CheaperAlgo::Spare);
    if let (Some((_, o)), CheaperAlgo::Spare) = (&raw.idle, algo) {
        warnings.push(o.warning(
            "cheaper-idle is read by cheaper-algo = spare2 only; spare (the default) shrinks by one every cheaper-overload idle seconds, as in uWSGI",
        ));
    }
    l.cheaper = Some(Cheaper {
        min: count as usize,
        initial: initial as usize,
        // uWSGI's spare starts at least one worker whatever the step (0 included).
        step: raw.step.unwrap_or(1).max(1) as usize,
        // uWSGI's spare compares `overload_count >= cheaper_overload`: 0 acts as 1.
        overload: raw.overload.unwrap_or(3).max(1),
        idle: raw.idle.as_ref().map(|(n, _)| *n).unwrap_or(10).max(1),
        algo,
    });
    l.raw = raw;
    Ok(())
}
