//! Showing a run as it happens: the [`Progress`] seam, and [`TerminalProgress`] for stdout.
//!
//! Dependency-free: on a terminal ([`std::io::IsTerminal`]) the chips' states are a small
//! board kept at the bottom of the screen and redrawn in place (ANSI cursor movements), with
//! everything else printed above it; otherwise (a pipe, a file, CI) every line is printed
//! once, with the time since the start.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The widest board row drawn in live mode (longer rows are cut, so a row never wraps and the
/// redraw's cursor movements stay exact).
const BOARD_WIDTH: usize = 100;

/// Where a run reports what happens, as it happens. Every method takes text that is already
/// free of secrets.
pub trait Progress: Send + Sync {
    /// A line about what happens now.
    fn line(&self, text: &str);

    /// The state of one chip (`chip` names it, e.g. `acme/sales-1`) is now `state`.
    fn chip(&self, chip: &str, state: &str) {
        self.line(&format!("{chip}: {state}"));
    }

    /// A block shown as it is, under a title: a QR code to scan, the final table.
    fn block(&self, title: &str, body: &str) {
        self.line(title);
        for row in body.lines() {
            self.line(row);
        }
    }
}

/// A [`Progress`] on stdout: live (a board of the chips redrawn in place, the rest printed
/// above it) or plain (one timestamped line per event, chip states included).
pub struct TerminalProgress {
    started: Instant,
    live: bool,
    board: Mutex<Board>,
}

/// The chips' states, in the order they were first reported, and how many rows of the board
/// are on the screen now (live mode).
#[derive(Default)]
struct Board {
    chips: Vec<(String, String)>,
    drawn: usize,
}

impl Board {
    /// Records `state` for `chip`; `false` when it is the state already shown.
    fn set(&mut self, chip: &str, state: &str) -> bool {
        match self.chips.iter_mut().find(|(name, _)| name == chip) {
            Some((_, shown)) if shown.as_str() == state => false,
            Some((_, shown)) => {
                state.clone_into(shown);
                true
            }
            None => {
                self.chips.push((chip.to_owned(), state.to_owned()));
                true
            }
        }
    }

    fn rows(&self) -> Vec<String> {
        if self.chips.is_empty() {
            return Vec::new();
        }
        let width = self
            .chips
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let mut rows = vec!["── chips ──".to_owned()];
        for (name, state) in &self.chips {
            let row = format!("  {name:<width$}  {state}");
            rows.push(row.chars().take(BOARD_WIDTH).collect());
        }
        rows
    }
}

impl TerminalProgress {
    /// Live when stdout is a terminal (and `TERM` is not `dumb`), plain otherwise.
    pub fn for_stdout() -> Self {
        let dumb = matches!(std::env::var("TERM").as_deref(), Ok("dumb"));
        Self::with_mode(std::io::stdout().is_terminal() && !dumb)
    }

    /// One timestamped line per event, whatever stdout is.
    pub fn plain() -> Self {
        Self::with_mode(false)
    }

    /// The live board, whatever stdout is.
    pub fn live() -> Self {
        Self::with_mode(true)
    }

    fn with_mode(live: bool) -> Self {
        TerminalProgress {
            started: Instant::now(),
            live,
            board: Mutex::new(Board::default()),
        }
    }

    /// Whether the board is redrawn in place.
    pub fn is_live(&self) -> bool {
        self.live
    }

    fn stamp(&self) -> String {
        format!("[{:>8.3}s]", self.started.elapsed().as_secs_f64())
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live mode: erases the board, prints `above`, draws the board again below it.
    fn redraw(&self, board: &mut Board, above: &str) {
        let mut out = String::new();
        if board.drawn > 0 {
            // Back to the board's first row, and clear from there to the end of the screen.
            out.push_str(&format!("\r\x1b[{}A\x1b[J", board.drawn));
        }
        out.push_str(above);
        if !above.is_empty() && !above.ends_with('\n') {
            out.push('\n');
        }
        let rows = board.rows();
        for row in &rows {
            out.push_str(row);
            out.push('\n');
        }
        board.drawn = rows.len();
        write_out(&out);
    }
}

/// Writes to stdout at once; a closed stdout is not the run's failure.
fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

impl Progress for TerminalProgress {
    fn line(&self, text: &str) {
        let line = format!("{} {text}\n", self.stamp());
        if self.live {
            let mut board = self.board();
            self.redraw(&mut board, &line);
        } else {
            write_out(&line);
        }
    }

    fn chip(&self, chip: &str, state: &str) {
        let mut board = self.board();
        if !board.set(chip, state) {
            return;
        }
        if self.live {
            self.redraw(&mut board, "");
        } else {
            drop(board);
            write_out(&format!("{} {chip}: {state}\n", self.stamp()));
        }
    }

    fn block(&self, title: &str, body: &str) {
        let mut text = format!("{} {title}\n{body}", self.stamp());
        if !body.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        if self.live {
            let mut board = self.board();
            self.redraw(&mut board, &text);
        } else {
            write_out(&text);
        }
    }
}
