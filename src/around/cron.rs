//! Cron jobs, decided without I/O. "When" is the wall clock in local time, at
//! minute resolution, matched the way uWSGI matches (`uwsgi_cron_task_needs_execution`):
//! `-1` any, `-N` every N (value % N == 0), day-of-month and day-of-week ORed when
//! both are set, week 7 = Sunday. "How long" (duration, `harakiri`) is the
//! monotonic clock. A job runs at most once per matching minute; a `unique` job
//! is skipped while its previous run is alive.
//!
//! The master sleeps until the next minute in which a job matches (looked up at
//! most [`LOOKAHEAD_MINUTES`] ahead; with none due it wakes once at that horizon and
//! looks again, which also absorbs a wall-clock jump).

use std::time::{Duration, Instant};

use crate::config::around::{CronField, CronSpec};

pub const LOOKAHEAD_MINUTES: i64 = 60;

/// The local calendar fields of one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    pub minute: u32,
    pub hour: u32,
    /// 1..=31
    pub mday: u32,
    /// 1..=12 (uWSGI "fixes" tm_mon the same way)
    pub month: u32,
    /// 0 = Sunday
    pub wday: u32,
}

fn field_ok(f: CronField, value: u32) -> bool {
    match f {
        CronField::Any => true,
        CronField::Every(n) => n != 0 && value % n == 0,
        CronField::At(v) => v == value,
    }
}

/// Whether the job is due in the minute `tm`.
pub fn matches(c: &CronSpec, tm: &Tm) -> bool {
    let week = match c.week {
        CronField::At(7) => CronField::At(0),
        w => w,
    };
    let day_ok = match (c.day, week) {
        (CronField::At(_), CronField::At(_)) => field_ok(c.day, tm.mday) || field_ok(week, tm.wday),
        _ => field_ok(c.day, tm.mday) && field_ok(week, tm.wday),
    };
    field_ok(c.minute, tm.minute)
        && field_ok(c.hour, tm.hour)
        && field_ok(c.month, tm.month)
        && day_ok
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronAction {
    Run {
        index: usize,
    },
    /// A run outlived its harakiri: SIGKILL its process group.
    Kill {
        pid: i32,
    },
    /// A due `unique` run was skipped (for the log).
    Skipped {
        index: usize,
        running: i32,
    },
}

#[derive(Debug, Clone)]
struct RunInfo {
    pid: i32,
    started: Instant,
    kill_at: Option<Instant>,
    killed: bool,
}

#[derive(Debug, Clone)]
struct Job {
    spec: CronSpec,
    /// The last minute (epoch minute) the job was considered at.
    last_minute: Option<i64>,
    runs: Vec<RunInfo>,
    removed: bool,
}

/// How a finished run is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub index: usize,
    pub command: String,
    pub duration: Duration,
    pub killed_by_harakiri: bool,
}

#[derive(Debug, Default)]
pub struct Crons {
    jobs: Vec<Job>,
    /// The epoch minute the next wake-up is for.
    wake_minute: Option<i64>,
}

impl Crons {
    pub fn new(specs: &[CronSpec]) -> Self {
        Crons {
            jobs: specs
                .iter()
                .map(|s| Job {
                    spec: s.clone(),
                    last_minute: None,
                    runs: Vec::new(),
                    removed: false,
                })
                .collect(),
            wake_minute: None,
        }
    }

    pub fn spec(&self, index: usize) -> Option<&CronSpec> {
        self.jobs.get(index).map(|j| &j.spec)
    }

    /// A reload: jobs with the same definition keep their state (no second run in
    /// the same minute, a running unique job still blocks); running jobs of
    /// removed definitions run to their end.
    pub fn reconfigure(&mut self, specs: &[CronSpec]) {
        let mut old = std::mem::take(&mut self.jobs);
        for s in specs {
            let same = |j: &Job| {
                !j.removed
                    && j.spec.command == s.command
                    && CronSpec {
                        line: 0,
                        ..j.spec.clone()
                    } == CronSpec {
                        line: 0,
                        ..s.clone()
                    }
            };
            match old.iter().position(same) {
                Some(pos) => {
                    let mut j = old.remove(pos);
                    j.spec = s.clone();
                    self.jobs.push(j);
                }
                None => self.jobs.push(Job {
                    spec: s.clone(),
                    last_minute: None,
                    runs: Vec::new(),
                    removed: false,
                }),
            }
        }
        for mut j in old.into_iter().filter(|j| !j.runs.is_empty()) {
            j.removed = true;
            self.jobs.push(j);
        }
        self.wake_minute = None;
    }

    /// Looks at the minute `epoch_minute` (whose calendar is `tm`) and the running
    /// jobs' harakiri deadlines.
    pub fn tick(&mut self, epoch_minute: i64, tm: &Tm, now: Instant) -> Vec<CronAction> {
        let mut actions = Vec::new();
        for (index, j) in self.jobs.iter_mut().enumerate() {
            for r in &mut j.runs {
                if let Some(t) = r.kill_at {
                    if now >= t && !r.killed {
                        r.killed = true;
                        actions.push(CronAction::Kill { pid: r.pid });
                    }
                }
            }
            if j.removed
                || j.last_minute.is_some_and(|m| m >= epoch_minute)
                || !matches(&j.spec, tm)
            {
                continue;
            }
            j.last_minute = Some(epoch_minute);
            match j.runs.first() {
                Some(r) if j.spec.unique => actions.push(CronAction::Skipped {
                    index,
                    running: r.pid,
                }),
                _ => actions.push(CronAction::Run { index }),
            }
        }
        actions
    }

    pub fn started(&mut self, index: usize, pid: i32, now: Instant) {
        if let Some(j) = self.jobs.get_mut(index) {
            j.runs.push(RunInfo {
                pid,
                started: now,
                kill_at: j.spec.harakiri.map(|h| now + h),
                killed: false,
            });
        }
    }

    pub fn owns(&self, pid: i32) -> bool {
        self.jobs
            .iter()
            .any(|j| j.runs.iter().any(|r| r.pid == pid))
    }

    pub fn exited(&mut self, pid: i32, now: Instant) -> Option<Finished> {
        let (index, j) = self
            .jobs
            .iter_mut()
            .enumerate()
            .find(|(_, j)| j.runs.iter().any(|r| r.pid == pid))?;
        let pos = j.runs.iter().position(|r| r.pid == pid)?;
        let r = j.runs.remove(pos);
        let done = Finished {
            index,
            command: j.spec.command.clone(),
            duration: now.saturating_duration_since(r.started),
            killed_by_harakiri: r.killed,
        };
        if j.removed && j.runs.is_empty() {
            self.jobs.remove(index);
        }
        Some(done)
    }

    pub fn runs_of(&self, index: usize) -> Vec<i32> {
        self.jobs
            .get(index)
            .map(|j| j.runs.iter().map(|r| r.pid).collect())
            .unwrap_or_default()
    }

    /// Every running job's pid (to stop them with the instance).
    pub fn running(&self) -> Vec<i32> {
        self.jobs
            .iter()
            .flat_map(|j| j.runs.iter().map(|r| r.pid))
            .collect()
    }

    /// The next epoch minute worth waking for after `current`, given the calendar
    /// of each minute (`local`), and the earliest harakiri deadline.
    pub fn next_wake(&mut self, current: i64, local: impl Fn(i64) -> Tm) -> Option<i64> {
        let live: Vec<&Job> = self.jobs.iter().filter(|j| !j.removed).collect();
        if live.is_empty() {
            self.wake_minute = None;
            return None;
        }
        let wake = (1..=LOOKAHEAD_MINUTES)
            .map(|k| current + k)
            .find(|m| {
                let tm = local(*m);
                live.iter().any(|j| matches(&j.spec, &tm))
            })
            .unwrap_or(current + LOOKAHEAD_MINUTES);
        self.wake_minute = Some(wake);
        Some(wake)
    }

    pub fn harakiri_deadline(&self) -> Option<Instant> {
        self.jobs
            .iter()
            .flat_map(|j| j.runs.iter())
            .filter(|r| !r.killed)
            .filter_map(|r| r.kill_at)
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// The local calendar of an epoch minute (libc `localtime_r`, as uWSGI uses).
pub fn local_tm(epoch_minute: i64) -> Tm {
    let t: libc::time_t = (epoch_minute * 60) as libc::time_t;
    // SAFETY: `tm` is plain old data that localtime_r fills; both pointers are
    // valid for the call, and localtime_r is the thread-safe variant.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return utc_tm(epoch_minute);
        }
        tm
    };
    Tm {
        minute: tm.tm_min as u32,
        hour: tm.tm_hour as u32,
        mday: tm.tm_mday as u32,
        month: tm.tm_mon as u32 + 1,
        wday: tm.tm_wday as u32,
    }
}

/// UTC calendar of an epoch minute (civil-from-days), for tests and as a fallback.
pub fn utc_tm(epoch_minute: i64) -> Tm {
    let days = epoch_minute.div_euclid(1440);
    let in_day = epoch_minute.rem_euclid(1440);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let mday = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Tm {
        minute: (in_day % 60) as u32,
        hour: (in_day / 60) as u32,
        mday,
        month,
        wday: (days + 4).rem_euclid(7) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(min: CronField, hour: CronField, unique: bool) -> CronSpec {
        CronSpec {
            minute: min,
            hour,
            day: CronField::Any,
            month: CronField::Any,
            week: CronField::Any,
            command: "x".into(),
            unique,
            harakiri: None,
            own_harakiri: false,
            line: 1,
        }
    }

    #[test]
    fn utc_calendar_is_right() {
        // 2024-02-29 13:45 UTC is a Thursday; epoch minute 28_486_545.
        let m = 1_709_214_300 / 60;
        assert_eq!(
            utc_tm(m),
            Tm {
                minute: 45,
                hour: 13,
                mday: 29,
                month: 2,
                wday: 4
            }
        );
        assert_eq!(
            utc_tm(0),
            Tm {
                minute: 0,
                hour: 0,
                mday: 1,
                month: 1,
                wday: 4
            }
        );
    }

    #[test]
    fn fields_match_like_uwsgi() {
        let tm = Tm {
            minute: 30,
            hour: 3,
            mday: 15,
            month: 6,
            wday: 0,
        };
        assert!(matches(
            &job(CronField::Every(15), CronField::Any, false),
            &tm
        ));
        assert!(!matches(
            &job(CronField::Every(7), CronField::Any, false),
            &tm
        ));
        assert!(matches(
            &job(CronField::At(30), CronField::At(3), false),
            &tm
        ));
        let mut sunday = job(CronField::At(30), CronField::At(3), false);
        sunday.week = CronField::At(7);
        assert!(matches(&sunday, &tm), "7 is Sunday");
        // day and week both set: ORed.
        sunday.day = CronField::At(1);
        assert!(matches(&sunday, &tm));
        sunday.week = CronField::At(2);
        assert!(!matches(&sunday, &tm));
    }

    #[test]
    fn a_job_runs_once_per_minute_and_unique_never_overlaps() {
        let t0 = Instant::now();
        let tm = utc_tm(100);
        let mut c = Crons::new(&[
            job(CronField::Any, CronField::Any, true),
            job(CronField::Any, CronField::Any, false),
        ]);
        assert_eq!(
            c.tick(100, &tm, t0),
            vec![CronAction::Run { index: 0 }, CronAction::Run { index: 1 }]
        );
        assert!(c.tick(100, &tm, t0).is_empty(), "same minute");
        c.started(0, 5, t0);
        c.started(1, 6, t0);
        let tm = utc_tm(101);
        assert_eq!(
            c.tick(101, &tm, t0),
            vec![
                CronAction::Skipped {
                    index: 0,
                    running: 5
                },
                CronAction::Run { index: 1 }
            ]
        );
        let done = c.exited(5, t0 + Duration::from_secs(70)).unwrap();
        assert_eq!(done.duration, Duration::from_secs(70));
        assert_eq!(
            c.tick(102, &utc_tm(102), t0)[0],
            CronAction::Run { index: 0 }
        );
    }

    #[test]
    fn harakiri_kills_a_run_once() {
        let t0 = Instant::now();
        let mut s = job(CronField::Any, CronField::Any, false);
        s.harakiri = Some(Duration::from_secs(5));
        let mut c = Crons::new(&[s]);
        c.tick(1, &utc_tm(1), t0);
        c.started(0, 9, t0);
        assert_eq!(c.harakiri_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            c.tick(1, &utc_tm(1), t0 + Duration::from_secs(5)),
            vec![CronAction::Kill { pid: 9 }]
        );
        assert!(c
            .tick(1, &utc_tm(1), t0 + Duration::from_secs(6))
            .is_empty());
        assert!(
            c.exited(9, t0 + Duration::from_secs(6))
                .unwrap()
                .killed_by_harakiri
        );
    }

    #[test]
    fn next_wake_is_the_next_matching_minute_or_the_horizon() {
        let mut c = Crons::new(&[job(CronField::At(0), CronField::Any, false)]);
        // Minute 100 is 01:40 UTC: the next :00 is minute 120.
        assert_eq!(c.next_wake(100, utc_tm), Some(120));
        let mut daily = Crons::new(&[job(CronField::At(0), CronField::At(3), false)]);
        assert_eq!(
            daily.next_wake(100, utc_tm),
            Some(160),
            "nothing within the hour: wake at the horizon"
        );
        assert_eq!(Crons::new(&[]).next_wake(100, utc_tm), None);
    }

    #[test]
    fn reload_keeps_the_state_of_an_unchanged_job() {
        let t0 = Instant::now();
        let s = job(CronField::Any, CronField::Any, true);
        let mut c = Crons::new(std::slice::from_ref(&s));
        c.tick(1, &utc_tm(1), t0);
        c.started(0, 3, t0);
        let mut moved = s.clone();
        moved.line = 7;
        c.reconfigure(&[moved]);
        assert!(
            c.tick(1, &utc_tm(1), t0).is_empty(),
            "already ran this minute"
        );
        assert_eq!(
            c.tick(2, &utc_tm(2), t0),
            vec![CronAction::Skipped {
                index: 0,
                running: 3
            }]
        );
    }
}
