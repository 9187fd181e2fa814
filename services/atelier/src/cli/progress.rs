//! Progress on stderr: one bar per job (indicatif), shown only when stderr is a
//! terminal and neither `--json` nor `--quiet` is given.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::Update;

pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(quiet: bool, json: bool) -> Self {
        let shown = !quiet && !json && std::io::stderr().is_terminal();
        Self {
            multi: shown.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// Whether bars are drawn (else progress is at most a line per change).
    pub fn shows_bars(&self) -> bool {
        self.multi.is_some()
    }

    /// A bar for one job, labelled `label` (hidden when progress is not shown).
    pub fn job(&self, label: &str) -> JobBar {
        let bar = match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:<24!} [{bar:30}] {percent:>3}% {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                bar
            }
            None => ProgressBar::hidden(),
        };
        bar.set_prefix(label.to_owned());
        bar.set_message("uploading");
        JobBar { bar }
    }
}

pub struct JobBar {
    bar: ProgressBar,
}

/// Where a status puts a job's bar, in percent.
fn position(status: &str) -> u64 {
    match status {
        "pending" => 5,
        "queued" => 10,
        "submitted" => 25,
        "processing" => 40,
        _ => 100,
    }
}

impl JobBar {
    pub fn message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn update(&self, update: &Update) {
        match update {
            Update::Status {
                status,
                queue_position,
            } => {
                let position = position(status);
                if position > self.bar.position() || position == 100 {
                    self.bar.set_position(position);
                }
                match queue_position {
                    Some(place) if status == "queued" => {
                        self.bar.set_message(format!("queued (#{place})"));
                    }
                    _ => self.bar.set_message(status.clone()),
                }
            }
            Update::Progress(fraction) => {
                let position = 40 + (fraction.clamp(0.0, 1.0) * 55.0) as u64;
                self.bar.set_position(position.max(self.bar.position()));
            }
        }
    }

    pub fn finish(&self, message: impl Into<String>) {
        self.bar.disable_steady_tick();
        self.bar.finish_with_message(message.into());
    }
}
