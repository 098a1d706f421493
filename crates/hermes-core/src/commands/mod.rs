//! Command lines from what a client types: a line editor that replays keystrokes as
//! bash's readline would, and a tracker that tells shell commands from lines typed
//! into running programs.

mod line_editor;
mod tracker;

pub use line_editor::{EnteredLine, LineEditor};
pub use tracker::{Command, CommandTracker, program_of};
