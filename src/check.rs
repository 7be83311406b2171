//! `http-conditional check FILE`: validates a rules file (TOML) or a sidecar (`.json`) the way
//! `nginx -t` validates its configuration: every problem with its line and column, exit 0
//! when the file is usable.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::regular_file;
use crate::rules::{MAX_RULES_BYTES, Problem, Rules, RulesError};
use crate::sidecar;

/// What a valid file holds, for the one-line confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A rules file with this many rules.
    Rules(usize),
    /// A sidecar.
    Sidecar,
}

/// Checks `file`: a `.json` file is a sidecar, anything else a rules file.
pub fn check(file: &Path) -> Result<Checked, RulesError> {
    let is_sidecar = file.extension().is_some_and(|e| e == "json");
    if !is_sidecar {
        return Rules::load(file).map(|rules| Checked::Rules(rules.len()));
    }
    let fail = |position, message| RulesError {
        file: file.to_path_buf(),
        problems: vec![Problem { position, message }],
    };
    let bytes = regular_file::read(file, MAX_RULES_BYTES).map_err(|e| fail(None, e.to_string()))?;
    sidecar::parse(&bytes).map_err(|e| {
        // serde_json says "... at line L column C": the position is given apart.
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        fail(Some((e.line().max(1), e.column().max(1))), message)
    })?;
    Ok(Checked::Sidecar)
}

/// The subcommand: problems on stderr, `FILE: ok` on stdout.
pub fn run(file: &Path) -> ExitCode {
    match check(file) {
        Ok(checked) => {
            let what = match checked {
                Checked::Rules(1) => "1 rule".to_string(),
                Checked::Rules(n) => format!("{n} rules"),
                Checked::Sidecar => "sidecar".to_string(),
            };
            let _ = writeln!(std::io::stdout(), "{}: ok ({what})", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::FAILURE
        }
    }
}
