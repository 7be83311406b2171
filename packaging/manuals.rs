//! Writes the man pages and shell completions into a folder, from the binary's own clap
//! definition (as ripgrep's `--generate` does), so what is documented is what the binary parses:
//! `cargo run --example manuals -- OUT` (scripts/package.sh runs it).
//!
//! A build step rather than a hidden subcommand: clap_complete offers hidden subcommands in
//! every shell's completions, and the shipped binary then carries neither generator.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use http_conditional::cli::Cli;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: manuals OUT");
        return ExitCode::from(2);
    };
    match write(Cli::command(), &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manuals: writing into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes one man page per visible command into `out/man` (`http-conditional.1`,
/// `http-conditional-fastcgi.1`, ...) and the bash, zsh and fish completions into
/// `out/completions`, under the names Debian installs them by.
fn write(command: Command, out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let name = command.get_name().to_owned();
    // Every page names the package and version it documents (clap_mangen's own loop gives
    // subcommands' pages only their name, as they carry no version).
    let source = format!("{name} {}", command.get_version().unwrap_or_default());
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    let visible = built.get_subcommands().filter(|sub| !sub.is_hide_set());
    for page in std::iter::once(&built).chain(visible) {
        let page = clap_mangen::Man::new(page.clone()).source(source.clone());
        let mut sink = File::create(man.join(page.get_filename()))?;
        page.render(&mut sink)?;
        sink.flush()?;
    }
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut command = command.clone();
        let mut sink = File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut command, &name, &mut sink);
        sink.flush()?;
    }
    Ok(())
}
