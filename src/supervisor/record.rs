//! kubexit's own tombstone: the one place that writes it.
//!
//! `Born` (with `Ready` when no probe is needed, and `Quit`, the quit
//! endpoints, so that the processes sharing those sidecars know who else
//! uses them) before the child starts, behind the liveness lock; `Ready` when the probe first succeeds;
//! `Awaiting` while kubexit waits for more than one death before it stops
//! the child (the policy `all`, or a stop signal held for `stop-after`);
//! `Died`, `ExitCode`, `ExitStatus` (kubexit's own exit status, where it is
//! not the child's) and `Reason` once, as soon as the outcome is known. A write
//! that fails before the child starts keeps it from starting (a child is
//! never started before its tombstone is written); later failures are
//! logged, and the exit status still tells the truth.

use jiff::Timestamp;

use crate::graveyard::liveness::LifeLock;
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::Tombstone;
use crate::graveyard::{Graveyard, WriteError};
use crate::quit::endpoint::Endpoint;
use crate::supervisor::outcome::Outcome;

pub struct Record {
    graveyard: Graveyard,
    name: Name,
    stone: Tombstone,
    /// The quit endpoints as printed, comma-separated: `Quit`, in every
    /// record from `Born` on.
    quit: Option<String>,
    written_death: bool,
    /// Held from before `Born` is written until kubexit ends.
    life: Option<LifeLock>,
}

impl Record {
    pub fn new(graveyard: &Graveyard, name: &Name, quit: &[Endpoint]) -> Record {
        let quit: Vec<String> = quit.iter().map(ToString::to_string).collect();
        Record {
            graveyard: graveyard.clone(),
            name: name.clone(),
            stone: Tombstone::default(),
            quit: (!quit.is_empty()).then(|| quit.join(",")),
            written_death: false,
            life: None,
        }
    }

    /// Records the birth (and readiness, when no probe is needed).
    pub async fn born(&mut self, ready: bool) -> Result<(), WriteError> {
        let now = Timestamp::now();
        // The lock first: dependents may only judge a Born that a holder
        // backs (see the liveness module).
        match LifeLock::hold(&self.graveyard, &self.name, now).await {
            Ok(lock) => self.life = Some(lock),
            Err(err) => tracing::warn!(
                "cannot hold the liveness lock: {err}; if kubexit is killed, dependents will not learn of it"
            ),
        }
        self.stone.born = Some(now);
        self.stone.ready = ready.then_some(now);
        self.stone.quit.clone_from(&self.quit);
        tracing::info!(
            "Creating tombstone: {}",
            self.graveyard.path_of(&self.name).display()
        );
        self.graveyard.write(&self.name, &self.stone)
    }

    /// Writes the current record again, after the graveyard was recreated.
    pub fn restore(&mut self) {
        if self.stone == Tombstone::default() {
            return;
        }
        if let Err(err) = self.graveyard.write(&self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }

    /// Records what kubexit still waits for before it stops the child, for
    /// the status view (`Awaiting`); `None` clears it. Written only when it
    /// changes; a failed write is logged.
    pub fn awaiting(&mut self, awaiting: Option<String>) {
        if self.written_death || self.stone.born.is_none() || self.stone.awaiting == awaiting {
            return;
        }
        self.stone.awaiting = awaiting;
        if let Err(err) = self.graveyard.write(&self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }

    /// Records readiness; a failed write is logged (dependents will time
    /// out and say so), the child keeps running.
    pub fn ready(&mut self) {
        if self.written_death {
            return;
        }
        self.stone.ready = Some(Timestamp::now());
        tracing::info!("Ready: {}", self.name);
        if let Err(err) = self.graveyard.write(&self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }

    /// Records the death once, with `status`, the exit status kubexit is
    /// about to exit with; later calls do nothing.
    pub fn died(&mut self, outcome: &Outcome, status: u8) {
        if self.written_death {
            return;
        }
        self.written_death = true;
        if matches!(outcome, Outcome::NeverStarted(_)) {
            // Upstream leaves no Born line for a child that never ran.
            self.stone.born = None;
            self.stone.ready = None;
        }
        self.stone.awaiting = None;
        self.stone.quit.clone_from(&self.quit);
        self.stone.died = Some(Timestamp::now());
        let code = outcome.recorded_code();
        self.stone.exit_code = Some(code);
        // What the container ends with, which a kubelet restarts by, where
        // the child's code does not say it (dependents judge restarts).
        self.stone.exit_status = (i32::from(status) != code).then_some(i32::from(status));
        self.stone.reason = Some(outcome.to_string());
        tracing::info!(
            "Updating tombstone: {}",
            self.graveyard.path_of(&self.name).display()
        );
        if let Err(err) = self.graveyard.write(&self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }
}
